"""Record sinks.

Names are imported on first use: a worker process that only needs a sink's file format
(``sql.bulk_load``) must not pay for importing Dagster."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from es_mysql_pipeline.resources.sinks.base import RecordSink, TableShape, WriteCounts
    from es_mysql_pipeline.resources.sinks.jsonl import JsonlSink
    from es_mysql_pipeline.resources.sinks.sql import SqlSink

_HOMES = {
    "RecordSink": "es_mysql_pipeline.resources.sinks.base",
    "TableShape": "es_mysql_pipeline.resources.sinks.base",
    "WriteCounts": "es_mysql_pipeline.resources.sinks.base",
    "JsonlSink": "es_mysql_pipeline.resources.sinks.jsonl",
    "SqlSink": "es_mysql_pipeline.resources.sinks.sql.resource",
}

__all__ = ["JsonlSink", "RecordSink", "SqlSink", "TableShape", "WriteCounts"]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
