"""The SQL sink resource: configuration, the engine, and the session a load opens."""

from __future__ import annotations

import os
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url

from es_mysql_pipeline.errors import ConfigError, PipelineError, SinkError
from es_mysql_pipeline.identifiers import validate_identifier
from es_mysql_pipeline.records import TimeWindow, mask_secrets
from es_mysql_pipeline.resources.sinks.base import (
    DELETED_AT_COLUMN,
    RecordSink,
    SchemaContract,
    SinkSession,
    TableShape,
)
from es_mysql_pipeline.resources.sinks.sql import refresh
from es_mysql_pipeline.resources.sinks.sql.deletes import delete_missing, ensure_deleted_at
from es_mysql_pipeline.resources.sinks.sql.errors import (
    CONNECT_CODES,
    GRANTS_HINT,
    RETRYABLE_CODES,
    error_code,
    hint_for,
)
from es_mysql_pipeline.resources.sinks.sql.schema import MAX_COLUMNS, TableSpec, prepare_table
from es_mysql_pipeline.resources.sinks.sql.writer import SqlSession


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
    #: Columns a table may reach through new fields (InnoDB refuses about 400 text
    #: columns); fields beyond it go to the ``_overflow`` JSON column.
    max_columns: int = MAX_COLUMNS
    #: Newest wins (``upsert``, ``refresh``): a row is replaced only by a record whose value
    #: of this field (``updated_at``, a version number) is greater; older ones are skipped.
    version_field: str | None = None

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
        if self.write_mode not in ("skip", "upsert", "append", "refresh"):
            raise ConfigError(
                f"write_mode={self.write_mode!r}: use skip, upsert, append or refresh"
            )
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
            raise ConfigError(f"db url: {self.clean_error(exc)}") from None
        if url.get_backend_name() == "mysql":
            sa.event.listen(engine, "do_connect", _affected_not_found_rows)
        return engine

    def clean_error(self, exc: BaseException) -> str:
        """The first line of the driver's message, with the password blanked out."""
        text = str(getattr(exc, "orig", None) or exc).splitlines()[0] if str(exc) else repr(exc)
        return mask_secrets(text, [self.password])

    def open_session(self, shape: TableShape, partition: str | None) -> SinkSession:
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

    def delete_missing(
        self, shape: TableShape, window: TimeWindow | None, source_ids: set[str]
    ) -> int:
        engine = self.engine()
        try:
            return delete_missing(
                engine,
                self.table,
                shape.id_column,
                shape.timestamp_column,
                window,
                source_ids,
                shape.soft_delete,
            )
        except sa.exc.SQLAlchemyError as exc:
            raise self.session_error(exc, len(shape.columns)) from None
        finally:
            engine.dispose()

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

    def count_rows(
        self, shape: TableShape, window: TimeWindow | None, partition: str | None
    ) -> int:
        engine = self.engine()
        try:
            if not sa.inspect(engine).has_table(self.table):
                return 0  # nothing loaded yet: an empty first day creates no table
            table = sa.Table(self.table, sa.MetaData(), autoload_with=engine)
            query = sa.select(sa.func.count()).select_from(table)
            if DELETED_AT_COLUMN in table.c:  # soft-deleted rows are not the source's
                query = query.where(table.c[DELETED_AT_COLUMN].is_(None))
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


def _affected_not_found_rows(
    dialect: Any, conn_rec: Any, cargs: Any, cparams: dict[str, Any]
) -> None:
    """SQLAlchemy asks MySQL for *found* rows; we need *affected* rows, in which a duplicate
    kept by ``ON DUPLICATE KEY UPDATE id = id`` counts 0, so skipped counts are exact."""
    from pymysql.constants import CLIENT

    cparams["client_flag"] = cparams.get("client_flag", 0) & ~CLIENT.FOUND_ROWS
