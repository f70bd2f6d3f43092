"""The column types of staged values (a small lattice a column widens through) and the one
JSON encoder every writer of JSON text shares."""

from __future__ import annotations

import json
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from itertools import chain
from typing import Any

from es_mysql_pipeline.records import Frame, column_values

_INT64 = (-(2**63), 2**63 - 1)
_not_none = partial(operator.is_not, None)
_NONE_TYPE = type(None)


# Column types, narrowest to widest: bool, int, bigint, float, datetime, string, json.
# ``int`` holds integers a double keeps exactly (|n| <= 2**53), ``bigint`` the rest of int64:
# beside decimals (``float``) they need text, or a DOUBLE would round them.
_EXACT_IN_DOUBLE = 2**53


def value_type(value: Any) -> str | None:
    """The column type a single value needs; ``None`` for SQL NULL."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        if -_EXACT_IN_DOUBLE <= value <= _EXACT_IN_DOUBLE:
            return "int"
        return "bigint" if _INT64[0] <= value <= _INT64[1] else "string"
    if isinstance(value, float):
        return "float"
    if isinstance(value, datetime):
        return "datetime"
    if isinstance(value, (dict, list)):
        return "json"
    return "string"


def _plain_type(kinds: set[type], values: Sequence[Any]) -> str | None:
    """:func:`value_type` of every value of a column of one numeric or boolean type (no
    NULLs), found without a Python step per value; ``None`` for any other column."""
    if kinds == {int}:
        low, high = min(values), max(values)
        if low >= -_EXACT_IN_DOUBLE and high <= _EXACT_IN_DOUBLE:
            return "int"
        return "bigint" if _INT64[0] <= low and high <= _INT64[1] else None
    if kinds == {float}:
        return "float"
    if kinds == {bool}:
        return "bool"
    return None


def _observe_text(st: ColumnStats, values: Sequence[str]) -> None:
    """A column of text: its type, and its widest value in UTF-8 bytes, encoding only when
    the width could have grown (chars <= bytes <= 4 * chars; ASCII is one byte a char)."""
    if st.type != "string":
        st.type = merge_types(st.type, "string")
    longest = max(map(len, values))
    if longest <= st.max_bytes:
        if longest * 4 <= st.max_bytes or "".join(values).isascii():
            return
        widest = max(map(len, map(str.encode, values)))
    elif "".join(values).isascii():
        widest = longest
    else:
        widest = max(map(len, map(str.encode, values)))
    st.max_bytes = max(st.max_bytes, widest)


def _observe_values(st: ColumnStats, values: Sequence[Any]) -> None:
    """A column of mixed types, value by value."""
    for value in values:
        t = value_type(value)
        if t != st.type:
            st.type = merge_types(st.type, t)
        if t == "string":
            size = len(value.encode("utf-8")) if isinstance(value, str) else len(str(value))
            st.max_bytes = max(st.max_bytes, size)


def merge_types(a: str | None, b: str | None) -> str | None:
    """The narrowest type that holds values of both types (``int`` + ``float`` → ``float``)."""
    if a is None or a == b:
        return b
    if b is None:
        return a
    if {a, b} == {"int", "float"}:
        return "float"
    if {a, b} == {"int", "bigint"}:
        return "bigint"
    if "json" in (a, b):
        return "json"
    return "string"


@dataclass
class ColumnStats:
    type: str | None = None
    #: Longest value in UTF-8 bytes, as text (sizes the SQL text type).
    max_bytes: int = 0


def observe(columns_stats: dict[str, ColumnStats], frame: Frame, declared: set[str]) -> None:
    """Widen column types and text sizes, column by column.

    Each column is gathered with ``map(dict.get, ...)`` (or taken as given) and typed
    with ``set(map(type))``: loops in C, so tracking the schema costs little beside the
    per-record work.
    """
    if isinstance(frame, dict):
        keys: Iterable[str] = frame
    else:  # every key of every shape, in first-seen order
        keys = dict.fromkeys(chain.from_iterable(dict.fromkeys(map(tuple, frame))))
    for key in keys:
        if key in declared:
            continue
        st = columns_stats.get(key)
        if st is None:
            st = columns_stats[key] = ColumnStats()
        column = column_values(frame, key)
        kinds = set(map(type, column))
        values: Sequence[Any] = column
        if _NONE_TYPE in kinds:  # NULLs say nothing of the type or width
            kinds.discard(_NONE_TYPE)
            if not kinds:
                continue
            values = list(filter(_not_none, column))
        if kinds == {str}:
            _observe_text(st, values)
            continue
        plain = _plain_type(kinds, values)
        if plain is not None:  # numbers or booleans alone: one type, no width
            if st.type != plain:
                st.type = merge_types(st.type, plain)
            continue
        _observe_values(st, values)


def _json_default(value: Any) -> Any:
    """Datetimes as ISO 8601 text (the schema says which columns to parse back)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


JSON_ENCODER = json.JSONEncoder(ensure_ascii=False, default=_json_default, check_circular=False)
"""One shared encoder: ``json.dumps`` with options builds a new encoder on every call."""


def as_json_values(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with every value as JSON would carry it (a ``Decimal`` or ``set`` from a
    user's analyzer becomes text), so what the staged file keeps is what any sink can write."""
    return json.loads(JSON_ENCODER.encode(record))  # type: ignore[no-any-return,unused-ignore]
