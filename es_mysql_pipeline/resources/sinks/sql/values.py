"""Staged values as the database takes them, for INSERT parameters and LOAD DATA alike."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Literal

import sqlalchemy as sa

ColumnKind = Literal["datetime", "bool", "number", "text"]


def column_kind(t: sa.types.TypeEngine[Any]) -> ColumnKind:
    """The few classes of column whose values are converted alike."""
    aff = getattr(t, "_type_affinity", None) or type(t)
    if issubclass(aff, sa.DateTime):
        return "datetime"
    if issubclass(aff, sa.Boolean):
        return "bool"
    if issubclass(aff, (sa.Integer, sa.Float, sa.Numeric)):
        return "number"
    return "text"


def to_db_value(value: Any, kind: str) -> Any:
    """An INSERT parameter: objects and arrays in text columns as JSON text."""
    if value is None:
        return None
    if kind == "text":
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if kind == "datetime" and isinstance(value, str):
        return sql_datetime(value)
    return value


def sql_datetime(iso: str) -> str:
    """Stage timestamp text → ``YYYY-MM-DD HH:MM:SS.ffffff`` (naive UTC) for DATETIME columns."""
    if len(iso) == 32 and iso.endswith("+00:00"):  # what the transform writes: just slice
        return iso[:26].replace("T", " ")
    dt = datetime.fromisoformat(iso)
    if dt.tzinfo is not None:
        dt = dt.astimezone(timezone.utc).replace(tzinfo=None)
    return dt.strftime("%Y-%m-%d %H:%M:%S.%f")
