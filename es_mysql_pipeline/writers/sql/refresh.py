"""Full refresh: load into ``<t>__new``, then swap it in for ``<t>`` in one step.

Readers see the old table until the swap and the new one after it, never an empty or a
half-loaded one: on MySQL/MariaDB one ``RENAME TABLE t TO t__old, t__new TO t`` is atomic;
on SQLite the renames and the drop run in one transaction. A refresh killed before the
swap leaves ``t`` as it was and a stray ``t__new``; killed after it, a stray ``t__old``:
the next refresh drops both before it starts.

MySQL keeps privileges by table name, so grants on ``t`` apply to the new ``t`` after
the swap; ``CREATE TABLE ... LIKE`` copies the columns and indexes (not triggers or
foreign keys).
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from es_mysql_pipeline.errors import ConfigError

log = logging.getLogger(__name__)

NEW_SUFFIX = "__new"
OLD_SUFFIX = "__old"
#: MySQL's identifier limit, less the longest suffix.
MAX_TABLE_NAME = 64 - len(NEW_SUFFIX)


def names(table: str) -> tuple[str, str]:
    """``(t__new, t__old)``."""
    if len(table) > MAX_TABLE_NAME:
        raise ConfigError(
            f"table {table!r}: a refresh needs a name of at most {MAX_TABLE_NAME} characters "
            f"(it loads into {table}{NEW_SUFFIX} first)"
        )
    return table + NEW_SUFFIX, table + OLD_SUFFIX


def _drop(engine: Engine, name: str) -> None:
    q = engine.dialect.identifier_preparer.quote_identifier
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {q(name)}")


def drop_strays(engine: Engine, table: str) -> None:
    """Drop what a killed refresh of ``table`` left."""
    insp = sa.inspect(engine)
    for name in names(table):
        if insp.has_table(name):
            _drop(engine, name)
            log.info("dropped %s, left by an unfinished refresh", name)


def start(engine: Engine, table: str) -> str:
    """An empty ``t__new`` shaped like ``t`` (when it exists); its name."""
    drop_strays(engine, table)
    new, _ = names(table)
    if not sa.inspect(engine).has_table(table):
        return new  # the load's table preparation creates it
    q = engine.dialect.identifier_preparer.quote_identifier
    if engine.dialect.name in ("mysql", "mariadb"):
        with engine.begin() as conn:
            conn.exec_driver_sql(f"CREATE TABLE {q(new)} LIKE {q(table)}")
        return new
    old = sa.Table(table, sa.MetaData(), autoload_with=engine)
    copy = old.to_metadata(sa.MetaData(), name=new)
    for index in copy.indexes:
        # SQLite's index names are the database's, not the table's: the copy's must differ
        # from the live table's (they alternate between refreshes).
        name = str(index.name)
        toggled = name.removesuffix(NEW_SUFFIX)
        index.name = sa.sql.quoted_name(toggled if toggled != name else name + NEW_SUFFIX, None)
    with engine.begin() as conn:
        copy.create(conn)
    return new


def swap(engine: Engine, table: str) -> None:
    """Put the loaded ``t__new`` in place of ``t`` and drop the old table."""
    new, old = names(table)
    q = engine.dialect.identifier_preparer.quote_identifier
    exists = sa.inspect(engine).has_table(table)
    if engine.dialect.name in ("mysql", "mariadb"):
        renames = [f"{q(table)} TO {q(old)}"] if exists else []
        with engine.begin() as conn:
            conn.exec_driver_sql("RENAME TABLE " + ", ".join([*renames, f"{q(new)} TO {q(table)}"]))
        _drop(engine, old)
        return
    # SQLite's DDL is transactional: the renames and the drop commit together or not at all.
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("BEGIN IMMEDIATE")
        if exists:
            cur.execute(f"ALTER TABLE {q(table)} RENAME TO {q(old)}")
        cur.execute(f"ALTER TABLE {q(new)} RENAME TO {q(table)}")
        if exists:
            cur.execute(f"DROP TABLE {q(old)}")
        cur.execute("COMMIT")
    finally:
        raw.close()  # back to the pool, which rolls back a transaction left open


def discard(engine: Engine, table: str) -> None:
    """Drop ``t__new`` after a failed load; ``t`` is untouched."""
    _drop(engine, names(table)[0])
