"""The SQL sink resource: its settings; the work is in ``writers/sql/``."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from es_mysql_pipeline.records import TimeWindow
from es_mysql_pipeline.resources.sinks.base import RecordSink
from es_mysql_pipeline.writers.base import SchemaContract, SinkSession, TableShape
from es_mysql_pipeline.writers.sql import sink
from es_mysql_pipeline.writers.sql.schema import MAX_COLUMNS
from es_mysql_pipeline.writers.sql.writer import open_session


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
        return sink.describe(self)

    def check(self) -> None:
        sink.check(self)

    def engine(self) -> Engine:
        return sink.engine(self)

    def clean_error(self, exc: BaseException) -> str:
        return sink.clean_error(self, exc)

    def open_session(self, shape: TableShape, partition: str | None) -> SinkSession:
        return open_session(self, shape)

    def count_rows(
        self, shape: TableShape, window: TimeWindow | None, partition: str | None
    ) -> int:
        return sink.count_rows(self, shape, window)

    def delete_missing(
        self, shape: TableShape, window: TimeWindow | None, source_ids: set[str]
    ) -> int:
        return sink.delete_missing(self, shape, window, source_ids)
