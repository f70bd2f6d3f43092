"""Staged values as the database takes them, for INSERT parameters and LOAD DATA alike."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, Literal, overload

import sqlalchemy as sa

from es_mysql_pipeline.records import OVERFLOW_COLUMN, Batch, Columns, Frame

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


@overload
def pack_overflow(frame: Batch, packed: Sequence[str]) -> Batch: ...
@overload
def pack_overflow(frame: Columns, packed: Sequence[str]) -> Columns: ...
def pack_overflow(frame: Frame, packed: Sequence[str]) -> Frame:
    """Fields beyond the table's column budget moved into the overflow column's object
    (which may already hold the objects kept whole); null values are left out. Records are
    changed in place (the load reads them fresh from the stage); columns are copied."""
    if not packed:
        return frame
    if isinstance(frame, dict):
        present = [(name, frame[name]) for name in packed if name in frame]
        if not present:
            return frame
        out = {k: v for k, v in frame.items() if k not in packed}
        base = frame.get(OVERFLOW_COLUMN) or [None] * len(present[0][1])
        merged: list[Any] = []
        for i, old in enumerate(base):
            extra = {name: column[i] for name, column in present if column[i] is not None}
            merged.append({**old, **extra} if old else extra or None)
        out[OVERFLOW_COLUMN] = merged
        return out
    for record in frame:
        extra = {n: v for n in packed if (v := record.pop(n, None)) is not None}
        if extra:
            old = record.get(OVERFLOW_COLUMN)
            record[OVERFLOW_COLUMN] = {**old, **extra} if old else extra
    return frame
