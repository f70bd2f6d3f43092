"""SQL tables through SQLAlchemy: MySQL/MariaDB (``mysql+pymysql://``) or SQLite (embedded)."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import os
import random
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from itertools import repeat
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import URL, Engine, make_url

from es_mysql_pipeline.errors import ConfigError, PipelineError, SinkError
from es_mysql_pipeline.identifiers import validate_identifier
from es_mysql_pipeline.metrics.recorder import get_recorder
from es_mysql_pipeline.records import Batch, TimeWindow, redact
from es_mysql_pipeline.resources.sinks.base import (
    RecordSink,
    SchemaContract,
    SchemaReport,
    SinkSession,
    SinkWriter,
    TableShape,
    WriteCounts,
)
from es_mysql_pipeline.staging import ColumnStats, scratch_dir

#: MySQL/MariaDB errors where retrying the whole transaction is safe: lost or refused
#: connections, server shutdown, deadlock and lock wait timeout.
RETRYABLE_MYSQL_CODES = frozenset({1040, 1053, 1205, 1213, 2002, 2003, 2006, 2013, 2055})
#: DDL that lost a race to another load of the same table: 1050 table exists, 1060 duplicate
#: column, 1061 duplicate index, 1205 lock wait (a metadata lock held by loads), 1213
#: deadlock, 1412 table definition changed.
_DDL_RACE_CODES = frozenset({1050, 1060, 1061, 1205, 1213, 1412})
_DDL_ATTEMPTS = 8
#: Seconds a DDL statement waits for the loads holding the table (then it is retried).
_DDL_LOCK_WAIT = 30
#: Seconds a load waits for another one's DDL on the same table.
_DDL_LOCK_TIMEOUT = 300
_ID_LEN = 255

log = logging.getLogger(__name__)


class SqlSink(RecordSink):
    """Writes rows to a table, creating it when missing and fitting it to the data (by the
    schema contract) when present."""

    #: SQLAlchemy URL without the password, e.g. ``mysql+pymysql://loader@db:3306/app``.
    url: str = "sqlite:///es_mysql_pipeline.sqlite"
    #: From ``EnvVar("DB_PASSWORD")``; never put it in the URL.
    password: str | None = None
    table: str = "records"
    #: CA bundle for TLS to MySQL; the server certificate is then verified.
    ssl_ca: str | None = None
    max_retries: int = 5
    retry_backoff_seconds: float = 0.5
    #: MySQL in skip/append mode: load batches with ``LOAD DATA LOCAL INFILE`` when the
    #: server allows it (strictness kept: any warning falls back to checked INSERTs).
    bulk_load: bool = True
    #: ``evolve``: add columns for new fields and widen text columns (never narrow or drop);
    #: ``freeze``: refuse data that does not fit the table; ``discard``: leave new fields out.
    schema_contract: SchemaContract = "evolve"

    def describe(self) -> dict[str, str]:
        try:
            shown = make_url(self.url).render_as_string(hide_password=True)
        except Exception:
            shown = "<invalid url>"
        return {"type": self._kind(), "target": f"{shown}#{self.table}", "mode": self.write_mode}

    def _kind(self) -> str:
        return "sqlite" if self.url.startswith("sqlite") else "mysql"

    def check(self) -> None:
        validate_identifier(self.table, "db_table")
        self._url()
        if self.write_mode not in ("skip", "upsert", "append"):
            raise ConfigError(f"write_mode={self.write_mode!r}: use skip, upsert or append")
        if self.batch_size < 1 or self.workers < 1:
            raise ConfigError("batch_size and workers must be at least 1")
        if self.ssl_ca and not os.path.isfile(self.ssl_ca):
            raise ConfigError(
                f"--db_ssl_ca/ssl_ca: {self.ssl_ca!r} does not exist or is not a file"
            )

    def _url(self) -> URL:
        try:
            url = make_url(self.url)
        except Exception:
            raise ConfigError(
                f"db url {self.url!r} is not a SQLAlchemy URL "
                "(expected mysql+pymysql://user@host:3306/db or sqlite:///file.db)"
            ) from None
        if self.password:
            url = url.set(password=self.password)
        if url.get_backend_name() == "mysql":
            url = url.update_query_dict({"charset": "utf8mb4"})
        return url

    def engine(self) -> Engine:
        """An engine for this process; each worker takes its own pooled connection."""
        self.check()
        url = self._url()
        connect_args: dict[str, Any] = {}
        if url.get_backend_name() == "mysql":
            connect_args["init_command"] = (
                "SET SESSION sql_mode = CONCAT_WS(',', @@sql_mode, 'STRICT_ALL_TABLES'), "
                "time_zone = '+00:00', max_error_count = 65535"
            )
            connect_args["connect_timeout"] = 10
            connect_args["local_infile"] = self.bulk_load
            if self.ssl_ca:
                connect_args["ssl"] = {"ca": self.ssl_ca, "check_hostname": True}
        elif url.get_backend_name() == "sqlite":
            connect_args["timeout"] = 30
            if url.database and url.database != ":memory:":  # like MySQL's database: must exist
                os.makedirs(os.path.dirname(os.path.abspath(url.database)), exist_ok=True)
        try:
            engine = sa.create_engine(
                url,
                connect_args=connect_args,
                pool_size=max(self.workers, 1) + 1,
                pool_pre_ping=True,
                hide_parameters=True,
            )
        except Exception as exc:
            raise ConfigError(f"db url: {self._clean(exc)}") from None
        if url.get_backend_name() == "mysql":
            sa.event.listen(engine, "do_connect", _affected_not_found_rows)
        return engine

    def _clean(self, exc: BaseException) -> str:
        text = str(getattr(exc, "orig", None) or exc).splitlines()[0] if str(exc) else repr(exc)
        return redact(text, [self.password])

    def open_session(self, shape: TableShape, partition: str | None) -> SinkSession:
        engine = self.engine()
        try:
            table, report = self._prepare_table(engine, shape)
        except (ConfigError, SinkError):
            engine.dispose()
            raise
        except sa.exc.SQLAlchemyError as exc:
            engine.dispose()
            raise self._session_error(exc, shape) from None
        return _SqlSession(self, engine, table, shape, report)

    def _session_error(self, exc: BaseException, shape: TableShape) -> PipelineError:
        """Errors preparing the table, with the fix for the ones a user can act on."""
        code = _code(getattr(exc, "orig", None) or exc)
        where = self.describe()["target"]
        if code == 1117:
            return ConfigError(
                f"{where}: too many columns: the data has {len(shape.columns)} columns, more "
                "than the server allows in one table (MySQL/MariaDB: 4096, fewer for wide "
                "rows); select fewer fields in the mapping (settings.select) or use the file sink"
            )
        if code in (1044, 1142, 1143):
            return ConfigError(
                f"{where}: {self._clean(exc)}; grant the pipeline's user what it needs: "
                f"GRANT SELECT, INSERT, UPDATE, CREATE, INDEX ON <database>.* TO <user>, plus "
                "ALTER when the data gains fields under --schema-contract evolve "
                "(see README, least-privilege user)"
            )
        return SinkError(f"{where}: {self._clean(exc)}")

    def count_rows(
        self, shape: TableShape, window: TimeWindow | None, partition: str | None
    ) -> int:
        engine = self.engine()
        try:
            table = sa.Table(self.table, sa.MetaData(), autoload_with=engine)
            query = sa.select(sa.func.count()).select_from(table)
            if window is not None:
                if shape.timestamp_column is None:
                    raise ConfigError("counting the rows of a time window needs a time column")
                ts = table.c[shape.timestamp_column]
                query = query.where(
                    ts >= window.start.replace(tzinfo=None), ts < window.end.replace(tzinfo=None)
                )
            with engine.connect() as conn:
                return int(conn.execute(query).scalar_one())
        finally:
            engine.dispose()

    # -- table management -------------------------------------------------------------

    def _prepare_table(self, engine: Engine, shape: TableShape) -> tuple[sa.Table, SchemaReport]:
        """Create the table or fit it to the data, safely beside other loads of it.

        Loads of several partitions often start together on a table that does not exist yet,
        or that the day's data outgrew: the DDL runs under a named server lock (MySQL's
        ``GET_LOCK``) so one session changes the table while the others wait and then see
        the change; a race that slips past the lock (``already exists``, a duplicate column,
        a metadata-lock timeout while loads hold the table) is retried after a fresh look.
        """
        report = SchemaReport()
        with engine.connect() as conn, _ddl_lock(conn, self.table):
            for attempt in range(_DDL_ATTEMPTS):
                try:
                    table = self._fit_table(conn, shape, report)
                    break
                except (sa.exc.DBAPIError, _SchemaMoved) as exc:
                    conn.rollback()
                    if attempt + 1 >= _DDL_ATTEMPTS or not _ddl_race(exc):
                        raise
                    time.sleep(min(0.05 * 2**attempt, 2.0) * (0.5 + random.random()))
            dialect = engine.dialect
            report.columns = [(c.name, str(c.type.compile(dialect=dialect))) for c in table.columns]
        for change in report.changes:
            log.info("%s", change)
        return table, report

    def _fit_table(self, conn: sa.Connection, shape: TableShape, report: SchemaReport) -> sa.Table:
        insp = sa.inspect(conn)
        if not insp.has_table(self.table):
            table = self._table_def(shape)
            table.create(conn)
            conn.commit()
            report.changes.append(f"created table {self.table} with {len(table.columns)} columns")
            return table
        existing = {c["name"].lower(): c for c in insp.get_columns(self.table)}
        dialect = conn.dialect.name
        adds: list[tuple[str, sa.types.TypeEngine[Any]]] = []
        widens: list[tuple[str, ColumnStats]] = []
        problems = []
        for name, stats in shape.columns.items():
            column = existing.get(name.lower())
            if column is None:
                if name == shape.id_column or self.schema_contract == "freeze":
                    problems.append(f"column {name!r} is missing ({_sql_type_name(stats)} needed)")
                elif self.schema_contract == "evolve":
                    type_ = _DATETIME if name == shape.timestamp_column else _column_type(stats)
                    adds.append((name, type_))
                else:
                    report.discarded.append(name)
                continue
            problem = _type_problem(column["type"], stats, dialect)
            if problem is None or self.schema_contract == "discard":
                continue  # discard: values that do not fit go to the dead letter
            if (
                self.schema_contract == "evolve"
                and name != shape.id_column
                and _is_text(column["type"])
                and stats.type in ("string", "json")
            ):
                widens.append((column["name"], stats))
            else:
                problems.append(f"column {name!r}: {problem}")
        if problems:
            raise ConfigError(
                f"table {self.table!r} does not match the data: "
                + "; ".join(problems[:5])
                + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")
                + (
                    ". Alter the table, drop it to let the pipeline create it, or set "
                    "--schema-contract evolve (SCHEMA_CONTRACT) to add and widen columns"
                    if self.schema_contract == "freeze"
                    else ". Alter the table, drop it to let the pipeline create it, "
                    "or select fewer fields in the mapping"
                )
            )
        if adds or widens:
            self._alter(conn, adds, widens, report)
        table = sa.Table(self.table, sa.MetaData(), autoload_with=conn)
        have = {c.name.lower() for c in table.columns}
        lost = [n for n in shape.columns if n.lower() not in have and n not in report.discarded]
        if lost:  # someone else's DDL replaced ours (a peer outside the lock): look again
            raise _SchemaMoved(f"table {self.table!r} lacks {', '.join(lost)} after its DDL")
        return table

    def _alter(
        self,
        conn: sa.Connection,
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
            if mysql_like and _is_text(type_):
                ddl += " CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
            clauses.append((f"ADD COLUMN {q(name)} {ddl}", report.added, name))
        for name, stats in widens:
            info = conn.exec_driver_sql(
                "SELECT CHARACTER_SET_NAME, COLLATION_NAME, IS_NULLABLE "
                "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
                "AND TABLE_NAME = %s AND COLUMN_NAME = %s",
                (self.table, name),
            ).one()
            ddl = str(_column_type(stats).compile(dialect=dialect))
            if info[0]:
                ddl += f" CHARACTER SET {info[0]} COLLATE {info[1]}"
            ddl += " NULL" if info[2] == "YES" else " NOT NULL"
            clauses.append((f"MODIFY COLUMN {q(name)} {ddl}", report.widened, name))
        groups = [clauses] if mysql_like else [[c] for c in clauses]
        for group in groups:
            sql = f"ALTER TABLE {q(self.table)} " + ", ".join(c[0] for c in group)
            if mysql_like:
                conn.exec_driver_sql(f"SET SESSION lock_wait_timeout = {_DDL_LOCK_WAIT}")
            conn.exec_driver_sql(sql)
            conn.commit()
            report.changes.append(sql)
            for _, done, name in group:
                done.append(name)

    def _table_def(self, shape: TableShape) -> sa.Table:
        cols: list[sa.Column[Any]] = []
        keyed = self.write_mode != "append"
        for name, stats in shape.columns.items():
            if name == shape.id_column:
                cols.append(sa.Column(name, sa.String(_ID_LEN), primary_key=keyed, index=not keyed))
            elif name == shape.timestamp_column:
                # Nullable: a full run loads records without a time (see mapping.apply).
                cols.append(sa.Column(name, _DATETIME, index=True))
            else:
                cols.append(sa.Column(name, _column_type(stats)))
        return sa.Table(
            self.table,
            sa.MetaData(),
            *cols,
            mysql_charset="utf8mb4",
            mysql_collate="utf8mb4_bin",  # ids are case-sensitive: "A" and "a" are two rows
            mysql_engine="InnoDB",
        )


_DATETIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


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
    orig = getattr(exc, "orig", None) or exc
    if _code(orig) in _DDL_RACE_CODES:
        return True
    text = str(orig).lower()
    return any(s in text for s in ("already exists", "duplicate column", "database is locked"))


def _is_text(t: sa.types.TypeEngine[Any]) -> bool:
    """Character columns a wider text type can replace without loss."""
    aff = getattr(t, "_type_affinity", None) or type(t)
    return issubclass(aff, sa.String) and not issubclass(aff, sa.Enum)


def _affected_not_found_rows(
    dialect: Any, conn_rec: Any, cargs: Any, cparams: dict[str, Any]
) -> None:
    """SQLAlchemy asks MySQL for *found* rows; we need *affected* rows, in which a duplicate
    kept by ``ON DUPLICATE KEY UPDATE id = id`` counts 0, so skipped counts are exact."""
    from pymysql.constants import CLIENT

    cparams["client_flag"] = cparams.get("client_flag", 0) & ~CLIENT.FOUND_ROWS


def _column_type(stats: ColumnStats) -> sa.types.TypeEngine[Any]:
    t = stats.type
    if t == "bool":
        return sa.Boolean()
    if t == "int":
        return sa.BigInteger()
    if t == "float":
        return sa.Double()
    if t == "datetime":
        return _DATETIME
    # Strings: sized from the data so MySQL strict mode never has to truncate.
    if stats.max_bytes > 16_000_000:
        big: sa.types.TypeEngine[Any] = mysql.LONGTEXT()
    elif stats.max_bytes > 60_000:
        big = mysql.MEDIUMTEXT()
    else:
        big = mysql.TEXT()
    return sa.Text().with_variant(big, "mysql", "mariadb")


def _sql_type_name(stats: ColumnStats) -> str:
    return str(_column_type(stats).compile(dialect=mysql.dialect()))


def _type_problem(actual: sa.types.TypeEngine[Any], stats: ColumnStats, dialect: str) -> str | None:
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
    if stats.type == "int" and aff is not None and issubclass(aff, sa.DateTime):
        return f"is {name} but the data has integers"
    if stats.type == "float" and aff is not None and issubclass(aff, sa.Integer):
        return f"is {name} but the data has decimals"
    return None


def _is_retryable(exc: BaseException) -> bool:
    """Connection-class errors: lost/refused connections, shutdown, deadlock, lock wait.

    SQLAlchemy wraps DBAPI errors raised while (re)connecting a pooled connection (for
    example a pre-ping reconnect cut mid-handshake); the driver's error is in ``.orig``.
    """
    orig = getattr(exc, "orig", None)
    if isinstance(orig, BaseException) and orig is not exc:
        exc = orig
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    if code in RETRYABLE_MYSQL_CODES:
        return True
    text = str(exc).lower()
    if "database is locked" in text:
        return True
    name = type(exc).__name__
    return name in ("InterfaceError",) or isinstance(exc, (ConnectionError, TimeoutError))


def _is_data_error(exc: BaseException) -> bool:
    """Errors caused by a record's contents: isolate the record, never retry blindly."""
    name = type(exc).__name__
    if name in ("IntegrityError", "DataError"):
        return True
    code = _code(exc)
    # 1264 out of range, 1292 bad datetime, 1366 bad value, 1406 too long, 1062 duplicate,
    # 1048 null in not-null column, 1300 invalid utf8 string, 3140 invalid JSON,
    # 1153 a record larger than max_allowed_packet (a batch of them is split until alone).
    return code in {1048, 1062, 1153, 1264, 1292, 1300, 1366, 1406, 3140} or (
        name == "OperationalError" and "sqlite" in type(exc).__module__ and "locked" not in str(exc)
    )


class _SqlSession(SinkSession):
    def __init__(
        self,
        sink: SqlSink,
        engine: Engine,
        table: sa.Table,
        shape: TableShape,
        report: SchemaReport,
    ) -> None:
        self.sink = sink
        self.engine = engine
        self.table = table
        self.shape = shape
        self.report = report
        self.bulk = (
            sink.bulk_load and sink.write_mode in ("skip", "append") and _local_infile(engine)
        )

    def writer(self) -> SinkWriter:
        return _SqlWriter(self)

    def schema_report(self) -> SchemaReport:
        return self.report

    def commit(self) -> None:
        self.engine.dispose()

    def abort(self) -> None:
        self.engine.dispose()


class _SqlWriter(SinkWriter):
    """One DBAPI connection; executemany turns into multi-row INSERTs (PyMySQL) per batch."""

    def __init__(self, session: _SqlSession) -> None:
        self.session = session
        self.sink = session.sink
        engine = session.engine
        table = session.table
        # Only the data's columns: other columns of an existing table keep their defaults.
        wanted = {name.lower() for name in session.shape.columns}
        cols = [c for c in table.columns if c.name.lower() in wanted] or list(table.columns)
        self.columns = [c.name for c in cols]
        self.id_column = session.shape.id_column
        self.is_sqlite = engine.dialect.name == "sqlite"
        self.is_mysql = engine.dialect.name in ("mysql", "mariadb")
        self.kinds = [_kind(c.type) for c in cols]
        self.sql, self.select_sql = self._statements(engine)
        self.load_sql = self._load_data_statement(engine) if session.bulk else None
        self._bulk_file: str | None = None
        self._max_packet: int | None = None
        self._conn: Any = None

    def _statements(self, engine: Engine) -> tuple[str, str]:
        q = engine.dialect.identifier_preparer.quote
        mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
        table = q(self.session.table.name)
        cols = ", ".join(q(c) for c in self.columns)
        values = ", ".join([mark] * len(self.columns))
        sql = f"INSERT INTO {table} ({cols}) VALUES ({values})"
        pk = q(self.id_column or self.columns[0])
        mode = self.sink.write_mode
        others = [c for c in self.columns if c != self.id_column]
        if mode == "append":
            pass
        elif self.is_mysql:
            if mode == "skip" or not others:
                sql += f" ON DUPLICATE KEY UPDATE {pk} = {pk}"
            else:
                sets = ", ".join(f"{q(c)} = VALUES({q(c)})" for c in others)
                sql += f" ON DUPLICATE KEY UPDATE {sets}"
        elif mode == "skip" or not others:
            sql += f" ON CONFLICT ({pk}) DO NOTHING"
        else:
            sets = ", ".join(f"{q(c)} = excluded.{q(c)}" for c in others)
            sql += f" ON CONFLICT ({pk}) DO UPDATE SET {sets}"
        select_sql = f"SELECT {pk} FROM {table} WHERE {pk} IN "
        self.mark = mark
        return sql, select_sql

    def _load_data_statement(self, engine: Engine) -> str:
        q = engine.dialect.identifier_preparer.quote
        cols = ", ".join(q(c) for c in self.columns)
        return (
            f"LOAD DATA LOCAL INFILE %s INTO TABLE {q(self.session.table.name)} "
            "CHARACTER SET utf8mb4 FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' "
            f"ESCAPED BY '' LINES TERMINATED BY '\\n' ({cols})"
        )

    def _connection(self) -> Any:
        if self._conn is None:
            self._conn = self.session.engine.raw_connection()
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.invalidate()
            self._conn = None

    def _connection_lost(self) -> bool:
        """Whether the last error left the DBAPI connection closed: a connection-class
        failure whatever its type (PyMySQL drops its socket on a lost connection and its
        LOAD DATA LOCAL cleanup then raises ``AttributeError`` instead of error 2013)."""
        if self._conn is None:
            return False
        driver = getattr(self._conn, "driver_connection", None)
        return driver is not None and getattr(driver, "open", True) is False

    def close(self) -> None:
        if self._bulk_file and os.path.exists(self._bulk_file):
            os.unlink(self._bulk_file)
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def _rows(self, batch: Batch) -> list[tuple[Any, ...]]:
        cols, kinds, sqlite = self.columns, self.kinds, self.is_sqlite
        return [
            tuple(_convert(rec.get(c), k, sqlite) for c, k in zip(cols, kinds, strict=True))
            for rec in batch
        ]

    def write(self, batch: Batch) -> WriteCounts:
        counts = WriteCounts()
        attempt = 0
        while True:
            try:
                self._write_isolating(batch, counts)
                return counts
            except Exception as exc:
                if not (_is_retryable(exc) or self._connection_lost()):
                    raise self.sink._session_error(exc, self.session.shape) from None
                self._drop_connection()
                attempt += 1
                if attempt > self.sink.max_retries:
                    raise SinkError(
                        f"gave up after {self.sink.max_retries} retries: {self.sink._clean(exc)}"
                    ) from None
                counts = WriteCounts(retries=attempt)
                get_recorder().retry("load")
                delay = self.sink.retry_backoff_seconds * (2 ** (attempt - 1))
                time.sleep(min(delay, 30.0) * (0.5 + random.random()))

    def _write_isolating(self, batch: Batch, counts: WriteCounts) -> None:
        """Write ``batch`` in one transaction; on a data error, split it to find the culprits."""
        try:
            self._write_tx(batch, counts)
        except Exception as exc:
            if not _is_data_error(exc) and not self._oversized(batch, exc):
                raise
            if _code(exc) in (1153, 2006, 2013):  # the server drops the connection after it
                self._drop_connection()
                exc = _PacketTooLarge(1153, "packet bigger than max_allowed_packet")
            if len(batch) == 1:
                counts.failed += 1
                counts.failures.append((batch[0], _reason(exc)))
                return
            mid = len(batch) // 2
            self._write_isolating(batch[:mid], counts)
            self._write_isolating(batch[mid:], counts)

    def _oversized(self, batch: Batch, exc: BaseException) -> bool:
        """A lost connection while sending more than ``max_allowed_packet``: the server hung
        up on the size (MySQL reports it as 2006/2013 as often as 1153), not on the network."""
        if not self.is_mysql or _code(exc) not in (1153, 2006, 2013):
            return False
        size = sum(len(v) for rec in batch for v in rec.values() if isinstance(v, str))
        if size < 1_000_000:
            return False
        if self._max_packet is None:
            try:
                with self.session.engine.connect() as conn:
                    self._max_packet = int(
                        conn.exec_driver_sql("SELECT @@max_allowed_packet").scalar() or 0
                    )
            except sa.exc.SQLAlchemyError:
                return False
        return size >= self._max_packet

    def _write_tx(self, batch: Batch, counts: WriteCounts) -> None:
        if self.load_sql is not None and len(batch) > 1:
            try:
                self._bulk_tx(batch, counts)
                return
            except _NotClean:
                pass  # rolled back: the checked INSERT path below finds the bad records
        conn = self._connection()
        with _transaction(conn) as cur:
            existing: set[str] = set()
            if self.sink.write_mode == "upsert":
                existing = self._existing_ids(cur, batch)
            before = self._total_changes(conn)
            cur.executemany(self.sql, self._rows(batch))
            after = self._total_changes(conn)
            affected = cur.rowcount if before is None or after is None else after - before
        n = len(batch)
        mode = self.sink.write_mode
        if mode == "append":
            counts.inserted += n
        elif mode == "skip":
            inserted = max(0, min(affected, n)) if affected is not None and affected >= 0 else n
            counts.inserted += inserted
            counts.skipped += n - inserted
        else:
            seen = existing
            ins = 0
            for rec in batch:
                rid = str(rec.get(self.id_column or ""))
                if rid not in seen:
                    ins += 1
                    seen.add(rid)
            counts.inserted += ins
            counts.updated += n - ins

    def _bulk_tx(self, batch: Batch, counts: WriteCounts) -> None:
        """``LOAD DATA LOCAL INFILE`` for skip/append: about 3x faster than INSERTs.

        LOCAL turns errors into warnings, so any warning other than a skipped duplicate
        (1062, skip mode) rolls the batch back (:class:`_NotClean`): the INSERT path then
        finds and dead-letters the bad record under strict mode, as without bulk loading.
        """
        if self._bulk_file is None:
            fd, self._bulk_file = tempfile.mkstemp(prefix="bulk-", suffix=".csv", dir=scratch_dir())
            os.close(fd)
        with open(self._bulk_file, "w", encoding="utf-8", newline="") as fh:
            csv.writer(fh, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n").writerows(
                self._bulk_rows(batch)
            )
        conn = self._connection()
        with _transaction(conn) as cur:
            cur.execute(self.load_sql, (self._bulk_file,))
            inserted = cur.rowcount
            result = getattr(cur, "_result", None)
            n_warn = getattr(result, "warning_count", None)
            if n_warn is None:
                cur.execute("SELECT @@warning_count")
                n_warn = cur.fetchone()[0]
            if n_warn:
                cur.execute("SHOW WARNINGS")
                codes = {row[1] for row in cur.fetchall()}
                if not (codes <= {1062} and self.sink.write_mode == "skip"):
                    raise _NotClean
        counts.inserted += inserted
        counts.skipped += len(batch) - inserted

    def _bulk_rows(self, batch: Batch) -> Iterator[tuple[Any, ...]]:
        """The batch as CSV rows, converted column by column: a column of plain strings or
        numbers (nearly all of them) passes through ``map`` in C instead of a Python loop."""
        columns = []
        for col, kind in zip(self.columns, self.kinds, strict=True):
            values = list(map(dict.get, batch, repeat(col)))
            kinds = set(map(type, values))
            if kind == "datetime":
                values = [
                    _NULL if v is None else sql_datetime(v) if type(v) is str else v for v in values
                ]
            elif kinds <= _PLAIN.get(kind, frozenset()):
                pass
            else:
                values = [_bulk_value(v, kind) for v in values]
            columns.append(values)
        return zip(*columns, strict=True)

    def _total_changes(self, conn: Any) -> int | None:
        """SQLite's rowcount counts ignored conflicts too; its change counter does not."""
        if not self.is_sqlite:
            return None
        return int(conn.driver_connection.total_changes)

    def _existing_ids(self, cur: Any, batch: Batch) -> set[str]:
        ids = list({str(r.get(self.id_column or "")) for r in batch})
        found: set[str] = set()
        for i in range(0, len(ids), 1000):
            chunk = ids[i : i + 1000]
            cur.execute(self.select_sql + "(" + ", ".join([self.mark] * len(chunk)) + ")", chunk)
            found.update(str(row[0]) for row in cur.fetchall())
        return found


class _Null(float):
    """Written unquoted as ``NULL`` by csv's QUOTE_NONNUMERIC: SQL NULL in LOAD DATA."""

    def __repr__(self) -> str:
        return "NULL"

    __str__ = __repr__


_NULL = _Null(0)
#: Value types a column of each kind writes to LOAD DATA's CSV as they are.
_PLAIN = {"text": frozenset({str}), "number": frozenset({int, float})}


def _bulk_value(value: Any, kind: str) -> Any:
    if value is None:
        return _NULL
    if kind == "text":
        return value if type(value) is str else json.dumps(value, ensure_ascii=False)
    if value is True or value is False:
        return int(value)
    return value


def _local_infile(engine: Engine) -> bool:
    """Whether the server accepts ``LOAD DATA LOCAL`` (MariaDB's default; MySQL 8's is off)."""
    if engine.dialect.name not in ("mysql", "mariadb"):
        return False
    try:
        with engine.connect() as conn:
            return bool(conn.exec_driver_sql("SELECT @@local_infile").scalar())
    except sa.exc.SQLAlchemyError:
        return False


def _kind(t: sa.types.TypeEngine[Any]) -> str:
    aff = getattr(t, "_type_affinity", None) or type(t)
    if issubclass(aff, sa.DateTime):
        return "datetime"
    if issubclass(aff, sa.Boolean):
        return "bool"
    if issubclass(aff, (sa.Integer, sa.Float, sa.Numeric)):
        return "number"
    return "text"


def _convert(value: Any, kind: str, sqlite: bool) -> Any:
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


class _NotClean(Exception):
    """A bulk load raised warnings other than skipped duplicates; it was rolled back."""


@contextlib.contextmanager
def _transaction(conn: Any) -> Iterator[Any]:
    """A cursor whose work commits at the end, or rolls back on any exception."""
    cur = conn.cursor()
    try:
        yield cur
        conn.commit()
    except BaseException:
        with contextlib.suppress(Exception):
            conn.rollback()
        raise
    finally:
        cur.close()


class _PacketTooLarge(Exception):
    """Stands for MySQL 1153 when the server dropped the connection instead of saying it."""


def _code(exc: BaseException) -> int | None:
    """The MySQL error number of a driver exception, if it has one."""
    return exc.args[0] if exc.args and isinstance(exc.args[0], int) else None


def _reason(exc: BaseException) -> str:
    if _code(exc) == 1153:
        return (
            "record larger than the server's max_allowed_packet (MySQL 1153); raise "
            "max_allowed_packet on the server to load it"
        )
    text = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
    return f"{type(exc).__name__}: {text}"[:500]
