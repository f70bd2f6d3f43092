"""Record sinks."""

from es_mysql_pipeline.resources.sinks.base import RecordSink, TableShape, WriteCounts
from es_mysql_pipeline.resources.sinks.jsonl import JsonlSink
from es_mysql_pipeline.resources.sinks.sql import SqlSink

__all__ = ["JsonlSink", "RecordSink", "SqlSink", "TableShape", "WriteCounts"]
