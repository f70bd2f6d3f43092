"""json_codec.loads gives exactly json.loads's values and errors, types included."""

from __future__ import annotations

import json
from typing import Any

import pytest

from es_mysql_pipeline import json_codec

TEXTS = [
    '{"id": "a", "n": 1, "f": 1.5, "b": true, "none": null}',
    '{"big": 123456789012345678901234567890, "neg": -9223372036854775809}',
    '{"nested": {"big": 18446744073709551616, "f": 0.1}, "list": [1, 2.5, "x"]}',
    '{"hits": {"hits": [{"_source": {"n": 99999999999999999999}}]}}',
    '{"nan": NaN, "inf": Infinity}',
    '{"lone": "\\udc80", "astral": "\\ud834\\udd1e"}',
    '{"dup": 1, "dup": 2}',
    "[1, 2, 3]",
    "12345678901234567890123",
    '"text"',
    '{"f": 1e400, "g": -0.0, "h": 5e-324}',
    # the edges of orjson's exact integers, each beside a float so no shortcut applies
    '{"f": 0.5, "n": [9223372036854775807, 9999999999999999999, 18446744073709551615]}',
    '{"f": 0.5, "n": [18446744073709551616, -9223372036854775808, -9223372036854775809]}',
    '{"f": 0.5, "n": -9999999999999999999}',
    '{"f": 0.5, "n": 99999999999999999999}',
]


def typed(value: Any) -> Any:
    """The value with every scalar's type beside it (1 == 1.0 == True otherwise)."""
    if isinstance(value, dict):
        return {k: typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [typed(v) for v in value]
    return (type(value).__name__, repr(value))


@pytest.mark.parametrize("text", TEXTS)
def test_values_and_types_are_json_s(text: str) -> None:
    expected = typed(json.loads(text))
    assert typed(json_codec.loads(text)) == expected
    assert typed(json_codec.loads(text.encode())) == expected


@pytest.mark.parametrize("text", ['{"a": 1', "", "{'a': 1}", "[1,]"])
def test_errors_are_json_s(text: str) -> None:
    with pytest.raises(json.JSONDecodeError) as ours:
        json_codec.loads(text)
    with pytest.raises(json.JSONDecodeError) as theirs:
        json.loads(text)
    assert str(ours.value) == str(theirs.value)
