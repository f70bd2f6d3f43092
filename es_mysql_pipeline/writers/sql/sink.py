"""The SQL sink without Dagster: its settings checked and made into an engine, a load
session opened, its rows counted, and deleted (or stamped in ``_deleted_at``) when their
record is gone from the source. The load asset calls :meth:`SqlTarget.delete_missing` after
a window loaded and the source's ids for that window were read completely, so a row
outside the window, or whose id the read saw, stays."""

from __future__ import annotations

import logging
import os
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url

from es_mysql_pipeline.errors import ConfigError, PipelineError, SinkError
from es_mysql_pipeline.identifiers import validate_identifier
from es_mysql_pipeline.records import TimeWindow, mask_secrets
from es_mysql_pipeline.writers.base import DELETED_AT_COLUMN, SchemaContract, TableShape, WriteMode
from es_mysql_pipeline.writers.sql import refresh
from es_mysql_pipeline.writers.sql.errors import (
    CONNECT_CODES,
    GRANTS_HINT,
    RETRYABLE_CODES,
    error_code,
    hint_for,
)
from es_mysql_pipeline.writers.sql.schema import DATETIME, TableSpec, prepare_table
from es_mysql_pipeline.writers.sql.writer import CHUNK, SqlSession, utc_now

log = logging.getLogger(__name__)


class SqlTarget:
    """The SQL sink's behaviour over its settings; ``resources.sinks.sql.SqlSink`` (the
    Dagster resource) adds the settings as fields and documents each."""

    url: str
    password: str | None
    table: str
    ssl_ca: str | None
    max_retries: int
    retry_backoff_seconds: float
    bulk_load: bool
    schema_contract: SchemaContract
    max_columns: int
    version_field: str | None
    write_mode: WriteMode
    batch_size: int
    workers: int

    def describe(self) -> dict[str, str]:
        try:
            shown = make_url(self.url).render_as_string(hide_password=True)
        except Exception:
            shown = "<invalid url>"
        kind = "sqlite" if self.url.startswith("sqlite") else "mysql"
        return {"type": kind, "target": f"{shown}#{self.table}", "mode": self.write_mode}

    def check(self) -> None:
        validate_identifier(self.table, "db_table")
        self._url()  # write_mode is checked by the resource's field type (a Literal)
        if self.write_mode == "refresh":
            refresh.names(self.table)
        if self.version_field and self.write_mode not in ("upsert", "refresh"):
            raise ConfigError(
                f"version_field={self.version_field!r} decides which record replaces a row: "
                "it needs write_mode upsert (or refresh)"
            )
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
        """An engine for this process; each load thread takes its own pooled connection."""
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
            raise ConfigError(f"db url: {self.clean_error(exc)}") from None
        if url.get_backend_name() == "mysql":
            sa.event.listen(engine, "do_connect", _affected_not_found_rows)
        return engine

    def clean_error(self, exc: BaseException) -> str:
        """The first line of the driver's message, with the password blanked out."""
        text = str(getattr(exc, "orig", None) or exc).splitlines()[0] if str(exc) else repr(exc)
        return mask_secrets(text, [self.password])

    def session_error(self, exc: BaseException, n_columns: int) -> PipelineError:
        """A database error as the pipeline reports it, with the fix when a user can act."""
        code = error_code(exc)
        where = self.describe()["target"]
        hint = hint_for(exc)
        if code == 1117:
            return ConfigError(
                f"{where}: too many columns: the data has {n_columns} columns, {hint}"
            )
        if code in (1044, 1142, 1143):
            return ConfigError(f"{where}: {self.clean_error(exc)}; {GRANTS_HINT}")
        text = f"{where}: {self.clean_error(exc)}" + (f"; {hint}" if hint else "")
        if code in CONNECT_CODES and code not in RETRYABLE_CODES:
            return ConfigError(text)  # wrong settings: retrying cannot help
        return SinkError(text)

    def open_session(self, shape: TableShape, partition: str | None) -> SqlSession:
        engine = self.engine()
        name = self.table
        try:
            if self.write_mode == "refresh":
                name = refresh.start(engine, self.table)
            spec = TableSpec(name, self.schema_contract, self.write_mode, self.max_columns)
            table, report = prepare_table(engine, spec, shape)
            if shape.soft_delete and ensure_deleted_at(engine, name):
                table = sa.Table(name, sa.MetaData(), autoload_with=engine)
        except (ConfigError, SinkError):
            engine.dispose()
            raise
        except sa.exc.SQLAlchemyError as exc:
            engine.dispose()
            raise self.session_error(exc, len(shape.columns)) from None
        return SqlSession(self, engine, table, shape, report)

    def count_rows(
        self, shape: TableShape, window: TimeWindow | None, partition: str | None
    ) -> int:
        engine = self.engine()
        try:
            if not sa.inspect(engine).has_table(self.table):
                return 0  # nothing loaded yet: an empty first day creates no table
            table = sa.Table(self.table, sa.MetaData(), autoload_with=engine)
            query = sa.select(sa.func.count()).select_from(table)
            with engine.connect() as conn:
                return int(conn.execute(query.where(*_live(table, shape, window))).scalar_one())
        finally:
            engine.dispose()

    def delete_missing(
        self, shape: TableShape, window: TimeWindow | None, source_ids: set[str]
    ) -> int:
        """Delete (soft: stamp) the live rows of ``window`` whose id is not in
        ``source_ids``; the number of rows touched."""
        engine = self.engine()
        try:
            if not sa.inspect(engine).has_table(self.table):
                return 0
            if shape.soft_delete:
                ensure_deleted_at(engine, self.table)
            table = sa.Table(self.table, sa.MetaData(), autoload_with=engine)
            ids = _column(table, shape.id_column)
            where = _live(table, shape, window)
            with engine.connect() as conn:
                in_sink = [str(row[0]) for row in conn.execute(sa.select(ids).where(*where))]
            gone = [i for i in in_sink if i not in source_ids]
            touched = 0
            now = utc_now()
            for start in range(0, len(gone), CHUNK):
                chunk = gone[start : start + CHUNK]
                # The window's condition again: a row a concurrent load moved out of it stays.
                statement: sa.Delete | sa.Update = sa.delete(table)
                if shape.soft_delete:
                    statement = sa.update(table).values({DELETED_AT_COLUMN: now})
                with engine.begin() as conn:
                    touched += conn.execute(statement.where(ids.in_(chunk), *where)).rowcount or 0
            return touched
        except sa.exc.SQLAlchemyError as exc:
            raise self.session_error(exc, len(shape.columns)) from None
        finally:
            engine.dispose()


def _affected_not_found_rows(
    dialect: Any, conn_rec: Any, cargs: Any, cparams: dict[str, Any]
) -> None:
    """SQLAlchemy asks MySQL for *found* rows; we need *affected* rows, in which a duplicate
    kept by ``ON DUPLICATE KEY UPDATE id = id`` counts 0, so skipped counts are exact."""
    from pymysql.constants import CLIENT

    cparams["client_flag"] = cparams.get("client_flag", 0) & ~CLIENT.FOUND_ROWS


def _live(
    table: sa.Table, shape: TableShape, window: TimeWindow | None
) -> list[sa.ColumnElement[bool]]:
    """The conditions on the rows of ``window`` (all rows when ``None``) not soft-deleted."""
    where: list[sa.ColumnElement[bool]] = []
    if window is not None:
        if shape.timestamp_column is None:
            raise ConfigError("the rows of a time window need a time column to find them")
        ts = _column(table, shape.timestamp_column)
        where += [ts >= window.start.replace(tzinfo=None), ts < window.end.replace(tzinfo=None)]
    if DELETED_AT_COLUMN in table.c:
        where.append(table.c[DELETED_AT_COLUMN].is_(None))
    return where


def _column(table: sa.Table, name: str) -> sa.Column[object]:
    """``name``'s column; MySQL and SQLite compare column names without case."""
    for column in table.columns:
        if column.name.lower() == name.lower():
            return column
    raise ConfigError(f"table {table.name!r} has no column {name!r}")


def ensure_deleted_at(engine: Engine, table: str) -> bool:
    """Add the nullable ``_deleted_at`` column to the existing ``table`` unless it has it;
    whether the column was added. A concurrent load adding it first is not an error."""
    if any(c["name"] == DELETED_AT_COLUMN for c in sa.inspect(engine).get_columns(table)):
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
