"""The table: its DDL, the type of each column, and fitting an existing table to the data by
the schema contract. The one home of schema evolution.

Loads of several partitions often start together on a table that does not exist yet, or
that the day's data outgrew: the DDL runs under a named server lock (MySQL's ``GET_LOCK``)
so one session changes the table while the others wait and then see the change; a race that
slips past the lock (``already exists``, a duplicate column, a metadata-lock timeout while
loads hold the table) is retried after a fresh look.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Engine

from es_mysql_pipeline.errors import ConfigError, SinkError
from es_mysql_pipeline.identifiers import suffixed
from es_mysql_pipeline.records import OVERFLOW_COLUMN
from es_mysql_pipeline.value_types import ColumnStats
from es_mysql_pipeline.writers.base import (
    SchemaContract,
    SchemaReport,
    TableShape,
    WriteMode,
)
from es_mysql_pipeline.writers.sql.errors import DDL_RACE_CODES, error_code

_DDL_ATTEMPTS = 8
#: Seconds a DDL statement waits for the loads holding the table (then it is retried).
_DDL_LOCK_WAIT = 30
#: Seconds a load waits for another one's DDL on the same table.
_DDL_LOCK_TIMEOUT = 300
_ID_LEN = 255

DATETIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
#: MySQL's JSON; MariaDB makes it LONGTEXT checked by JSON_VALID; SQLite keeps text.
OVERFLOW_TYPE = sa.Text().with_variant(mysql.JSON(), "mysql", "mariadb")
#: New columns a load adds at most, the table's columns counted (InnoDB refuses a table of
#: about 400 text columns; SQLite allows 2,000): later fields go to the overflow column.
MAX_COLUMNS = 250

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TableSpec:
    """What the sink's configuration says about its table."""

    name: str
    contract: SchemaContract
    write_mode: WriteMode
    max_columns: int = MAX_COLUMNS


def prepare_table(
    engine: Engine, spec: TableSpec, shape: TableShape
) -> tuple[sa.Table, SchemaReport]:
    """Create the table or fit it to the data, safely beside other loads of it."""
    report = SchemaReport()
    with engine.connect() as conn, _ddl_lock(conn, spec.name):
        attempt = 0
        while True:
            try:
                table = _fit_table(conn, spec, shape, report)
                break
            except (sa.exc.DBAPIError, _SchemaMoved) as exc:
                conn.rollback()
                attempt += 1
                if attempt >= _DDL_ATTEMPTS or not _ddl_race(exc):
                    raise
                time.sleep(min(0.05 * 2 ** (attempt - 1), 2.0) * (0.5 + random.random()))
        dialect = engine.dialect
        report.columns = [(c.name, str(c.type.compile(dialect=dialect))) for c in table.columns]
    for change in report.changes:
        log.info("%s", change)
    return table, report


def plan_columns(
    existing: list[str], shape: TableShape, max_columns: int
) -> tuple[dict[str, str], list[str]]:
    """Each field's column (existing or new) and the fields for the overflow column.

    MySQL and SQLite compare column names without case, so of ``userId`` and ``userid``
    only one can have its own name: the one whose column exists, else the first in sort
    order; the other gets a column named with a hash suffix. A field keeps the column it
    got on its first load. New columns stop at ``max_columns`` (the table's columns
    counted); later fields go to the overflow column, whose slot is kept free."""
    exact = set(existing)
    lower = {name.lower(): name for name in existing}
    plan: dict[str, str] = {}
    for key in (shape.id_column, shape.timestamp_column):
        if key is not None and key in shape.columns:
            plan[key] = lower.get(key.lower(), key)
    data = [n for n in shape.columns if n not in plan and n != OVERFLOW_COLUMN]
    # names a data field may not take in any case: existing columns, the pipeline's own
    taken = set(lower) | {c.lower() for c in plan.values()} | {OVERFLOW_COLUMN.lower()}
    owners: dict[str, str] = {}
    for name in sorted(data):
        owners.setdefault(name.lower(), name)
    has_overflow = OVERFLOW_COLUMN.lower() in lower
    slots = max_columns - len(existing) - (0 if has_overflow else 1)
    slots -= sum(1 for column in plan.values() if column not in exact)
    overflow: list[str] = []
    for name in data:
        column = name
        if name not in exact and (name.lower() in taken or owners[name.lower()] != name):
            column = suffixed(name, "case:" + name)
        if column in exact:
            plan[name] = column
        elif slots > 0:
            plan[name] = column
            slots -= 1
        else:
            overflow.append(name)
    if overflow or OVERFLOW_COLUMN in shape.columns:
        plan[OVERFLOW_COLUMN] = lower.get(OVERFLOW_COLUMN.lower(), OVERFLOW_COLUMN)
    return plan, overflow


def _fit_table(
    conn: sa.Connection, spec: TableSpec, shape: TableShape, report: SchemaReport
) -> sa.Table:
    insp = sa.inspect(conn)
    exists = insp.has_table(spec.name)
    columns = insp.get_columns(spec.name) if exists else []
    plan, overflow = plan_columns([c["name"] for c in columns], shape, spec.max_columns)
    report.plan = plan
    report.renamed = {f: c for f, c in plan.items() if f != c}
    report.overflowed = overflow
    if not exists:
        table = table_def(spec, shape, plan)
        table.create(conn)
        conn.commit()
        report.changes.append(f"created table {spec.name} with {len(table.columns)} columns")
        return table
    existing = {c["name"]: c for c in columns}
    dialect = conn.dialect.name
    adds: list[tuple[str, sa.types.TypeEngine[Any]]] = []
    widens: list[tuple[str, ColumnStats]] = []
    problems = []
    for name, column_name_ in plan.items():
        stats = shape.columns.get(name, ColumnStats("json"))
        column = existing.get(column_name_)
        if column is None:
            if name == shape.id_column:
                problems.append(_missing_id(name, existing))
            elif spec.contract == "evolve":
                adds.append((column_name_, _type_for(name, stats, shape)))
            elif spec.contract == "freeze":
                needed = column_type(stats).compile(dialect=mysql.dialect())
                problems.append(f"column {column_name_!r} is missing ({needed} needed)")
            else:
                report.discarded.append(name)
            continue
        problem = None if name == OVERFLOW_COLUMN else type_problem(column["type"], stats, dialect)
        if problem is None or spec.contract == "discard":
            continue  # discard: values that do not fit go to the dead letter
        if _widenable(spec, shape, name, column["type"], stats):
            widens.append((column["name"], stats))
        else:
            problems.append(f"column {column_name_!r}: {problem}")
    if problems:
        raise _mismatch(spec, problems)
    if adds or widens:
        _alter(conn, spec.name, adds, widens, report)
    table = sa.Table(spec.name, sa.MetaData(), autoload_with=conn)
    have = {c.name for c in table.columns}
    lost = [c for f, c in plan.items() if c not in have and f not in report.discarded]
    if lost:  # someone else's DDL replaced ours (a peer outside the lock): look again
        raise _SchemaMoved(f"table {spec.name!r} lacks {', '.join(lost)} after its DDL")
    return table


def _widenable(
    spec: TableSpec, shape: TableShape, name: str, type_: Any, stats: ColumnStats
) -> bool:
    """A text column ``evolve`` may replace by a wider one (never the id's)."""
    return (
        spec.contract == "evolve"
        and name != shape.id_column
        and is_text(type_)
        and stats.type in ("string", "json")
    )


def _mismatch(spec: TableSpec, problems: list[str]) -> ConfigError:
    """One line: the first problems, and the fix for the contract in force."""
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    fix = (
        "set --schema-contract evolve (SCHEMA_CONTRACT) to add and widen columns"
        if spec.contract == "freeze"
        else "select fewer fields in the mapping"
    )
    return ConfigError(
        f"table {spec.name!r} does not match the data: {'; '.join(problems[:5])}{more}. "
        f"Alter the table, drop it to let the pipeline create it, or {fix}"
    )


def _missing_id(name: str, existing: dict[str, Any]) -> str:
    """Why the id column is missing, with the setting that fixes a table of an older version."""
    text = f"column {name!r} for the record id is missing"
    if "id" in existing or "ID" in existing:
        text += (
            " (a table made by 0.1 keeps the id in column 'id': set id_column to id, "
            "--output-id-column id on the command line)"
        )
    return text


def _type_for(name: str, stats: ColumnStats, shape: TableShape) -> sa.types.TypeEngine[Any]:
    if name == OVERFLOW_COLUMN:
        return OVERFLOW_TYPE
    if name == shape.timestamp_column:
        return DATETIME
    return column_type(stats)


def _alter(
    conn: sa.Connection,
    table_name: str,
    adds: list[tuple[str, sa.types.TypeEngine[Any]]],
    widens: list[tuple[str, ColumnStats]],
    report: SchemaReport,
) -> None:
    """``ADD COLUMN`` (always nullable: older rows have no value) and, on MySQL, ``MODIFY``
    to a wider text type keeping the column's character set, collation and nullability.
    One statement on MySQL (one metadata lock); one per column on SQLite."""
    dialect = conn.dialect
    q = dialect.identifier_preparer.quote_identifier  # always quoted, even plain names
    mysql_like = dialect.name in ("mysql", "mariadb")
    clauses: list[tuple[str, list[str], str]] = []  # (clause, report list, column)
    for name, type_ in adds:
        ddl = str(type_.compile(dialect=dialect))
        if mysql_like and is_text(type_) and name != OVERFLOW_COLUMN:  # JSON has no charset
            ddl += " CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
        clauses.append((f"ADD COLUMN {q(name)} {ddl}", report.added, name))
    for name, stats in widens:
        info = conn.exec_driver_sql(
            "SELECT CHARACTER_SET_NAME, COLLATION_NAME, IS_NULLABLE "
            "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
            "AND TABLE_NAME = %s AND COLUMN_NAME = %s",
            (table_name, name),
        ).one()
        ddl = str(column_type(stats).compile(dialect=dialect))
        ddl += f" CHARACTER SET {info[0]} COLLATE {info[1]}"  # every text column has them
        ddl += " NULL" if info[2] == "YES" else " NOT NULL"
        clauses.append((f"MODIFY COLUMN {q(name)} {ddl}", report.widened, name))
    groups = [clauses] if mysql_like else [[c] for c in clauses]
    for group in groups:
        sql = f"ALTER TABLE {q(table_name)} " + ", ".join(c[0] for c in group)
        if mysql_like:
            conn.exec_driver_sql(f"SET SESSION lock_wait_timeout = {_DDL_LOCK_WAIT}")
        conn.exec_driver_sql(sql)
        conn.commit()
        report.changes.append(sql)
        for _, done, name in group:
            done.append(name)


def table_def(spec: TableSpec, shape: TableShape, plan: dict[str, str]) -> sa.Table:
    """The table a first load creates: ids case-sensitive, text sized from the data."""
    cols: list[sa.Column[Any]] = []
    keyed = spec.write_mode != "append"
    for name, column in plan.items():
        if name == shape.id_column:
            cols.append(sa.Column(column, sa.String(_ID_LEN), primary_key=keyed, index=not keyed))
        elif name == shape.timestamp_column:
            # Nullable: a full run loads records without a time (see mapping.apply).
            cols.append(sa.Column(column, DATETIME, index=True))
        else:
            stats = shape.columns.get(name, ColumnStats("json"))
            cols.append(sa.Column(column, _type_for(name, stats, shape)))
    return sa.Table(
        spec.name,
        sa.MetaData(),
        *cols,
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",  # ids are case-sensitive: "A" and "a" are two rows
        mysql_engine="InnoDB",
    )


@contextlib.contextmanager
def _ddl_lock(conn: sa.Connection, table: str) -> Iterator[None]:
    """Hold the server-wide named lock for DDL on ``table`` (MySQL/MariaDB; SQLite needs
    none: it serializes writers itself, and the retries cover what slips through)."""
    if conn.dialect.name not in ("mysql", "mariadb"):
        yield
        return
    database = conn.exec_driver_sql("SELECT DATABASE()").scalar() or ""
    digest = hashlib.sha1(f"{database}.{table}".encode()).hexdigest()[:40]
    name = f"es_mysql_pipeline:{digest}"  # lock names are limited to 64 characters
    got = conn.exec_driver_sql("SELECT GET_LOCK(%s, %s)", (name, _DDL_LOCK_TIMEOUT)).scalar()
    conn.commit()
    if got != 1:
        raise SinkError(
            f"table {table!r}: waited {_DDL_LOCK_TIMEOUT}s for another load's schema change"
        )
    try:
        yield
    finally:
        with contextlib.suppress(sa.exc.SQLAlchemyError):
            conn.rollback()
            conn.exec_driver_sql("SELECT RELEASE_LOCK(%s)", (name,))
            conn.commit()


class _SchemaMoved(SinkError):
    """The table changed under our DDL: fit it again (never load without a data column)."""


def _ddl_race(exc: BaseException) -> bool:
    """DDL that another load of the same table got to first, or that waited too long."""
    if isinstance(exc, _SchemaMoved):
        return True
    if error_code(exc) in DDL_RACE_CODES:
        return True
    text = str(getattr(exc, "orig", None) or exc).lower()
    return any(s in text for s in ("already exists", "duplicate column", "database is locked"))


def is_text(t: sa.types.TypeEngine[Any]) -> bool:
    """Character columns a wider text type can replace without loss."""
    aff = getattr(t, "_type_affinity", None) or type(t)
    return issubclass(aff, sa.String) and not issubclass(aff, sa.Enum)


def column_type(stats: ColumnStats) -> sa.types.TypeEngine[Any]:
    t = stats.type
    if t == "bool":
        return sa.Boolean()
    if t in ("int", "bigint"):
        return sa.BigInteger()
    if t == "float":
        return sa.Double()
    if t == "datetime":
        return DATETIME
    # Strings: sized from the data so MySQL strict mode never has to truncate.
    if stats.max_bytes > 16_000_000:
        big: sa.types.TypeEngine[Any] = mysql.LONGTEXT()
    elif stats.max_bytes > 60_000:
        big = mysql.MEDIUMTEXT()
    else:
        big = mysql.TEXT()
    return sa.Text().with_variant(big, "mysql", "mariadb")


def type_problem(actual: sa.types.TypeEngine[Any], stats: ColumnStats, dialect: str) -> str | None:
    """Why values of ``stats`` would not fit a column of type ``actual``, if they would not."""
    if stats.type is None or dialect == "sqlite":  # SQLite stores any value in any column
        return None
    aff = actual._type_affinity if hasattr(actual, "_type_affinity") else type(actual)
    name = str(actual)
    if stats.type in ("string", "json"):
        if aff is not None and issubclass(aff, (sa.Integer, sa.Float, sa.Numeric, sa.DateTime)):
            return f"is {name} but the data has text"
        length = getattr(actual, "length", None)
        if length is None and "TINYTEXT" in name.upper():
            length = 255
        if length is None and name.upper() == "TEXT":
            length = 65_535
        if length is not None and stats.max_bytes > length * (4 if "CHAR" in name.upper() else 1):
            return f"is {name} but values are up to {stats.max_bytes} bytes long"
        return None
    if stats.type in ("int", "bigint") and aff is not None and issubclass(aff, sa.DateTime):
        return f"is {name} but the data has integers"
    if stats.type == "bigint" and aff is not None and issubclass(aff, (sa.Float, sa.Numeric)):
        return f"is {name} but the data has integers a double would round (beyond 2**53)"
    if stats.type == "float" and aff is not None and issubclass(aff, sa.Integer):
        return f"is {name} but the data has decimals"
    return None
