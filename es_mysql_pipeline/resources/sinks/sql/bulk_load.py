"""``LOAD DATA LOCAL INFILE`` for skip and append loads: the fastest way into MySQL (see the
README's benchmark table for the figures against INSERTs).

LOCAL turns errors into warnings, so any warning other than a skipped duplicate (1062, skip
mode) rolls the batch back (:class:`NotClean`): the writer's INSERT path then finds and
dead-letters the bad record under strict mode, as without bulk loading.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from itertools import repeat
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from es_mysql_pipeline.records import Batch
from es_mysql_pipeline.resources.sinks.sql.values import sql_datetime


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
    """The statement matching :func:`write_bulk_file`'s CSV dialect."""
    q = engine.dialect.identifier_preparer.quote
    cols = ", ".join(q(c) for c in columns)
    return (
        f"LOAD DATA LOCAL INFILE %s INTO TABLE {q(table)} "
        "CHARACTER SET utf8mb4 FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' "
        f"ESCAPED BY '' LINES TERMINATED BY '\\n' ({cols})"
    )


def write_bulk_file(path: str, batch: Batch, columns: Sequence[str], kinds: Sequence[str]) -> None:
    """The batch as the CSV file :func:`load_data_statement` reads."""
    with open(path, "w", encoding="utf-8", newline="") as fh:
        csv.writer(fh, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n").writerows(
            _bulk_rows(batch, columns, kinds)
        )


def load_bulk_file(cur: Any, statement: str, path: str, write_mode: str) -> int:
    """Run LOAD DATA in the caller's transaction; the rows inserted, or :class:`NotClean`."""
    cur.execute(statement, (path,))
    inserted = int(cur.rowcount)
    result = getattr(cur, "_result", None)
    n_warn = getattr(result, "warning_count", None)
    if n_warn is None:
        cur.execute("SELECT @@warning_count")
        n_warn = cur.fetchone()[0]
    if n_warn:
        cur.execute("SHOW WARNINGS")
        codes = {row[1] for row in cur.fetchall()}
        if not (codes <= {1062} and write_mode == "skip"):
            raise NotClean
    return inserted


class _Null(float):
    """Written unquoted as ``NULL`` by csv's QUOTE_NONNUMERIC: SQL NULL in LOAD DATA."""

    def __repr__(self) -> str:
        return "NULL"

    __str__ = __repr__


_NULL = _Null(0)
#: Value types a column of each kind writes to LOAD DATA's CSV as they are.
_PLAIN = {"text": frozenset({str}), "number": frozenset({int, float})}


def _bulk_rows(
    batch: Batch, columns: Sequence[str], kinds: Sequence[str]
) -> Iterator[tuple[Any, ...]]:
    """The batch as CSV rows, converted column by column: a column of plain strings or
    numbers (nearly all of them) passes through ``map`` in C instead of a Python loop."""
    out = []
    for col, kind in zip(columns, kinds, strict=True):
        values = list(map(dict.get, batch, repeat(col)))
        types = set(map(type, values))
        if kind == "datetime":
            values = [
                _NULL if v is None else sql_datetime(v) if type(v) is str else v for v in values
            ]
        elif types <= _PLAIN.get(kind, frozenset()):
            pass
        else:
            values = [_bulk_value(v, kind) for v in values]
        out.append(values)
    return zip(*out, strict=True)


def _bulk_value(value: Any, kind: str) -> Any:
    if value is None:
        return _NULL
    if kind == "text":
        return value if type(value) is str else json.dumps(value, ensure_ascii=False)
    if value is True or value is False:
        return int(value)
    return value
