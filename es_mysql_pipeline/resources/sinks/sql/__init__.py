"""The SQL sink (MySQL/MariaDB, SQLite): resource, schema, writer, bulk load, error table."""

from es_mysql_pipeline.resources.sinks.sql.resource import SqlSink

__all__ = ["SqlSink"]
