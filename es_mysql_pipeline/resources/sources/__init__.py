"""Record sources."""

from es_mysql_pipeline.resources.sources.base import RecordSource
from es_mysql_pipeline.resources.sources.files import FileSource

__all__ = ["FileSource", "RecordSource"]
