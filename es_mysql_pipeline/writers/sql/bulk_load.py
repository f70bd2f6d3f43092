"""Staged values as the database takes them: INSERT parameters, and ``LOAD DATA LOCAL
INFILE`` files for skip and append loads, the fastest way into MySQL (docs/benchmarks.md).

LOCAL turns errors into warnings, so any warning other than a skipped duplicate (1062, skip
mode) rolls the batch back (:class:`NotClean`): the writer's INSERT path then finds and
dead-letters the bad record under strict mode, as without bulk loading.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import repeat
from typing import Any, Literal, cast, overload

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from es_mysql_pipeline.records import OVERFLOW_COLUMN, Batch, Columns, Frame, column_values

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


@dataclass(frozen=True)
class BulkEncoder:
    """Writes batches as LOAD DATA files: a small picklable value, so a worker process can
    encode the next batches while the load threads wait on the server."""

    columns: tuple[str, ...]
    kinds: tuple[str, ...]
    scratch: str
    #: Fields beyond the table's column budget, moved into the overflow column.
    packed: tuple[str, ...] = ()
    #: Each LOAD DATA is a transaction of its own, and MariaDB loads bigger files faster up
    #: to about this size (docs/benchmarks.md).
    min_rows: int = 20_000

    def encode(self, frames: Iterable[Frame]) -> str:
        """The frames as a new file in the scratch directory; the caller deletes it."""
        fd, path = tempfile.mkstemp(prefix="bulk-", suffix=".tsv", dir=self.scratch)
        os.close(fd)
        if self.packed:
            frames = (pack_overflow(frame, self.packed) for frame in frames)
        try:
            write_bulk_file(path, frames, self.columns, self.kinds)
        except BaseException:
            os.unlink(path)
            raise
        return path


class NotClean(Exception):
    """A bulk load raised warnings other than skipped duplicates; it was rolled back."""


def local_infile(engine: Engine) -> bool:
    """Whether the server accepts ``LOAD DATA LOCAL`` (MariaDB's default; MySQL 8's is off)."""
    if engine.dialect.name not in ("mysql", "mariadb"):
        return False
    try:
        with engine.connect() as conn:
            return bool(conn.exec_driver_sql("SELECT @@local_infile").scalar())
    except sa.exc.SQLAlchemyError:
        return False


def load_data_statement(engine: Engine, table: str, columns: Sequence[str]) -> str:
    """The statement matching :func:`write_bulk_file`'s dialect: tab-separated, backslash
    escapes, ``\\N`` for NULL (MySQL's own default format, so nothing is quoted)."""
    q = engine.dialect.identifier_preparer.quote
    cols = ", ".join(q(c) for c in columns)
    return (
        f"LOAD DATA LOCAL INFILE %s INTO TABLE {q(table)} "
        "CHARACTER SET utf8mb4 FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' "
        f"LINES TERMINATED BY '\\n' ({cols})"
    )


def write_bulk_file(
    path: str, frames: Iterable[Frame], columns: Sequence[str], kinds: Sequence[str]
) -> None:
    """The frames as the file :func:`load_data_statement` reads, one frame's text at a time.

    Built column by column and joined in C: a column of plain strings (nearly all of them)
    costs one scan for characters that need escaping, not a Python step per value."""
    with open(path, "w", encoding="utf-8", newline="") as fh:
        for batch in frames:
            fh.write(
                "\n".join(map("\t".join, zip(*_bulk_columns(batch, columns, kinds), strict=True)))
            )
            fh.write("\n")


def load_bulk_file(cur: Any, statement: str, path: str, write_mode: str) -> int:
    """Run LOAD DATA in the caller's transaction; the rows inserted, or :class:`NotClean`."""
    cur.execute(statement, (path,))
    inserted = int(cur.rowcount)
    if cur._result.warning_count:  # PyMySQL's count from the statement's reply, no query
        cur.execute("SHOW WARNINGS")
        codes = {row[1] for row in cur.fetchall()}
        if not (codes <= {1062} and write_mode == "skip"):
            raise NotClean
    return inserted


#: What LOAD DATA reads back as SQL NULL.
_NULL = "\\N"
#: Characters that end a field or a line, or start an escape, in LOAD DATA's format, each
#: with its escape (the backslash first, so no escape is escaped again).
_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"), ("\x00", "\\0"))
_TRANSLATION = str.maketrans(dict(_ESCAPES))
#: Characters to join a column's values with while escaping them, for one not in the data.
_SEPARATORS = ("\x1f", "\x1e", "\x1d", "\x1c", "\ue000", "\ufdd0")
_TEXT = frozenset({str, type(None)})
#: Joins a datetime column's values while converting them (checked not to be in them).
_SEP = "\x1f"
_NUMBERS = frozenset({int, float, type(None)})


def _bulk_columns(
    batch: Frame, columns: Sequence[str], kinds: Sequence[str]
) -> list[Sequence[str]]:
    """Each column of the batch as field text, in the order of ``columns``."""
    out = []
    for col, kind in zip(columns, kinds, strict=True):
        values: Sequence[Any] = column_values(batch, col)
        types = set(map(type, values))
        if kind == "datetime":
            values = _sql_datetimes(values)
        elif types <= _TEXT:
            pass
        elif kind == "number" and types <= _NUMBERS:
            values = [v if v is None else str(v) for v in values]
        else:
            values = [_bulk_value(v, kind) for v in values]
        out.append(_fields(values))
    return out


def _sql_datetimes(values: Sequence[Any]) -> Sequence[str | None]:
    """:func:`sql_datetime` of each value (``None`` kept, other types as text).

    A column of the stage's own UTC text (``…T….ffffff+00:00``, nearly always) is converted
    as one joined string, in a few C-level passes: the offset is each value's only ``+``
    and ends it, so removing every ``+00:00`` and replacing every ``T`` does to each value
    exactly what :func:`sql_datetime` does."""
    n = len(values)
    if (
        n
        and set(map(type, values)) == {str}
        and set(map(len, values)) == {32}
        and all(map(str.endswith, values, repeat("+00:00")))
    ):
        joined = _SEP.join(values)
        if joined.count("+") == n and joined.count(_SEP) == n - 1:
            return joined.replace("+00:00", "").replace("T", " ").split(_SEP)
    return [v if v is None else sql_datetime(v) if type(v) is str else str(v) for v in values]


def _fields(values: Sequence[str | None]) -> Sequence[str]:
    """Escaped field text, ``None`` as NULL.

    The column is escaped as one string (joined with a character it does not hold, then
    split), so escaping costs a few C-level passes, not a Python step per value."""
    nulls = None in values
    texts = cast("Sequence[str]", [v or "" for v in values] if nulls else values)
    plain = "".join(texts)
    if any(raw in plain for raw, _ in _ESCAPES):
        sep = next((c for c in _SEPARATORS if c not in plain), None)
        if sep is None:
            texts = [t.translate(_TRANSLATION) for t in texts]
        else:
            joined = sep.join(texts)
            for raw, escaped in _ESCAPES:
                joined = joined.replace(raw, escaped)
            texts = joined.split(sep)
    if nulls:
        return [_NULL if v is None else t for v, t in zip(values, texts, strict=True)]
    return texts


def _bulk_value(value: Any, kind: str) -> str | None:
    if value is None or type(value) is str:
        return cast("str | None", value)
    if kind == "text":
        return json.dumps(value, ensure_ascii=False)
    if value is True or value is False:
        return str(int(value))
    return str(value)
