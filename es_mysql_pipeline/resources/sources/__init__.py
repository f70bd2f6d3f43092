"""Record sources."""

from es_mysql_pipeline.resources.sources.base import RecordSource
from es_mysql_pipeline.resources.sources.csv import CsvSource

__all__ = ["CsvSource", "RecordSource"]
