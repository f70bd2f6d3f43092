"""Record sinks as Dagster resources; the writing itself is in ``writers/``."""

from es_mysql_pipeline.resources.sinks.base import RecordSink
from es_mysql_pipeline.resources.sinks.jsonl import JsonlSink
from es_mysql_pipeline.resources.sinks.sql import SqlSink

__all__ = ["JsonlSink", "RecordSink", "SqlSink"]
