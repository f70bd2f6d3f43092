"""The SQL sink (MySQL/MariaDB, SQLite): resource, schema, writer, bulk load, error table.

``SqlSink`` is imported on first use, so ``bulk_load`` loads without Dagster in a worker."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from es_mysql_pipeline.resources.sinks.sql.resource import SqlSink

__all__ = ["SqlSink"]


def __getattr__(name: str) -> Any:
    if name != "SqlSink":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from es_mysql_pipeline.resources.sinks.sql.resource import SqlSink

    return SqlSink
