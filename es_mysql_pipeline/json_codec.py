"""JSON parsed by orjson where it gives exactly what ``json`` gives, by ``json`` elsewhere.

orjson parses faster (docs/benchmarks.md), but it refuses what ``json`` accepts (NaN, lone
surrogates) and reads an integer below -2**63 or above 2**64 - 1 as a float, where ``json``
keeps it exact. So a text orjson refuses, or whose value may hide such a number (a float,
an object or an array beside 20 digits in a row, or a minus and 19), is parsed again by
``json``: the values, and the errors, are always ``json``'s.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

try:
    import orjson

    _fast: Callable[[str | bytes], Any] | None = orjson.loads
except ImportError:  # optional: json alone gives the same values
    _fast = None

#: A number orjson may read as a float where json keeps an exact int: every integer with
#: up to 19 digits, or 20 up to 2**64 - 1, is exact (so Elasticsearch's Long.MAX_VALUE sort
#: values, 19 digits, do not send a whole response to json).
#: Found by mapping every digit to 0 and looking for the runs as plain bytes: a regex scan
#: costs more than json parsing a search response.
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_TWENTY_DIGITS = b"0" * 20
_MINUS_NINETEEN = b"-" + b"0" * 19
#: Parsed types that may hide a number orjson read inexactly.
_INEXACT = frozenset({float, dict, list})


def loads(text: str | bytes) -> Any:
    """``json.loads(text)``, faster; raises what ``json.loads`` raises."""
    if _fast is None:
        return json.loads(text)
    try:
        value = _fast(text)
    except ValueError:  # orjson.JSONDecodeError is a ValueError: json decides
        return json.loads(text)
    if type(value) is dict:
        if _INEXACT.isdisjoint(map(type, value.values())):
            return value  # flat, no floats: every value is as json reads it
    elif type(value) not in _INEXACT:
        return value
    return json.loads(text) if _may_hold_a_big_integer(text) else value


def loads_lines(lines: Sequence[str], text: str) -> list[Any] | None:
    """``[json.loads(line) for line in lines]`` where orjson gives exactly that for every
    line (``text``, the lines joined, is scanned once for numbers it may read inexactly);
    ``None`` otherwise: the caller parses line by line, for json's values and errors."""
    if _fast is None or _may_hold_a_big_integer(text):
        return None
    try:
        return list(map(_fast, lines))
    except ValueError:
        return None


def _may_hold_a_big_integer(text: str | bytes) -> bool:
    data = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
    zeros = data.translate(_DIGITS_TO_ZERO)
    return _TWENTY_DIGITS in zeros or _MINUS_NINETEEN in zeros
