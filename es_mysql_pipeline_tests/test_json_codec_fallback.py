"""Without orjson (an optional speed-up), json_codec is plain ``json``: same values, same errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from es_mysql_pipeline import json_codec

TEXT = '{"big": 123456789012345678901234567890, "f": 0.5, "s": "\\udc80"}'


def test_without_orjson_loads_is_json_and_lines_are_left_to_the_caller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(json_codec, "_fast", None)
    assert json_codec.loads(TEXT) == json.loads(TEXT)
    with pytest.raises(json.JSONDecodeError):
        json_codec.loads("{'a': 1}")
    assert json_codec.loads_lines(['{"a": 1}'], '{"a": 1}') is None


def test_the_module_imports_when_orjson_is_not_installed() -> None:
    code = (
        "import sys; sys.modules['orjson'] = None\n"  # import orjson raises ImportError
        "from es_mysql_pipeline import json_codec\n"
        "assert json_codec._fast is None\n"
        "print(json_codec.loads('[1, 2.5, 18446744073709551616]'))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stdout == "[1, 2.5, 18446744073709551616]\n"
