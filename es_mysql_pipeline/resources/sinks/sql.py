"""The SQL sink resource: its settings; what it does is :class:`SqlTarget` (``writers/sql/``)."""

from __future__ import annotations

from es_mysql_pipeline.resources.sinks.base import RecordSink
from es_mysql_pipeline.writers.base import SchemaContract
from es_mysql_pipeline.writers.sql.schema import MAX_COLUMNS
from es_mysql_pipeline.writers.sql.sink import SqlTarget


class SqlSink(SqlTarget, RecordSink):
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
