"""Rows whose record is gone from the source: deleted, or stamped in ``_deleted_at``.

The load asset calls this after a window loaded and the source's ids for that same window
were read completely; a row outside the window, or whose id the read saw, is never touched.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from es_mysql_pipeline.errors import ConfigError
from es_mysql_pipeline.records import TimeWindow
from es_mysql_pipeline.writers.base import DELETED_AT_COLUMN, TableShape
from es_mysql_pipeline.writers.sql.schema import DATETIME

log = logging.getLogger(__name__)

#: Ids per ``DELETE ... WHERE id IN (...)`` statement (and per transaction).
CHUNK = 1000


def ensure_deleted_at(engine: Engine, table: str) -> bool:
    """Add the nullable ``_deleted_at`` column to ``table`` unless it has it; whether the
    column was added. A concurrent load adding it first is not an error."""
    insp = sa.inspect(engine)
    if not insp.has_table(table):
        return False
    if any(c["name"] == DELETED_AT_COLUMN for c in insp.get_columns(table)):
        return False
    q = engine.dialect.identifier_preparer.quote_identifier
    ddl = str(DATETIME.compile(dialect=engine.dialect))
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                f"ALTER TABLE {q(table)} ADD COLUMN {q(DELETED_AT_COLUMN)} {ddl} NULL"
            )
    except sa.exc.DBAPIError as exc:
        if "duplicate column" not in str(exc).lower():
            raise
        return False
    log.info("added column %s to %s for soft deletes", DELETED_AT_COLUMN, table)
    return True


def _column(table: sa.Table, name: str) -> sa.Column[object]:
    """``name``'s column; MySQL and SQLite compare column names without case."""
    for column in table.columns:
        if column.name.lower() == name.lower():
            return column
    raise ConfigError(f"table {table.name!r} has no column {name!r}")


def delete_missing(
    engine: Engine,
    table_name: str,
    shape: TableShape,
    window: TimeWindow | None,
    source_ids: set[str],
) -> int:
    """Delete (soft: stamp) the live rows of ``window`` whose id is not in ``source_ids``;
    the number of rows touched."""
    soft = shape.soft_delete
    if not sa.inspect(engine).has_table(table_name):
        return 0
    if soft:
        ensure_deleted_at(engine, table_name)
    table = sa.Table(table_name, sa.MetaData(), autoload_with=engine)
    ids = _column(table, shape.id_column)
    where: list[sa.ColumnElement[bool]] = []
    if window is not None:
        if shape.timestamp_column is None:
            raise ConfigError("deleting the rows of a time window needs a time column")
        ts = _column(table, shape.timestamp_column)
        where += [ts >= window.start.replace(tzinfo=None), ts < window.end.replace(tzinfo=None)]
    stamped = table.c.get(DELETED_AT_COLUMN)
    if stamped is not None:
        where.append(stamped.is_(None))
    with engine.connect() as conn:
        in_sink = [str(row[0]) for row in conn.execute(sa.select(ids).where(*where))]
    gone = [i for i in in_sink if i not in source_ids]
    touched = 0
    now = utc_now()
    for start in range(0, len(gone), CHUNK):
        chunk = gone[start : start + CHUNK]
        # The window's condition again: a row a concurrent load moved out of it stays.
        statement: sa.Delete | sa.Update
        if soft:
            statement = (
                sa.update(table).where(ids.in_(chunk), *where).values({DELETED_AT_COLUMN: now})
            )
        else:
            statement = sa.delete(table).where(ids.in_(chunk), *where)
        with engine.begin() as conn:
            touched += conn.execute(statement).rowcount or 0
    return touched


def utc_now() -> datetime:
    """Now in UTC without a zone, as the DATETIME columns store it."""
    return datetime.now(timezone.utc).replace(tzinfo=None)
