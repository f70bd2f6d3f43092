"""Record sources (their Dagster-free readers are in :mod:`es_mysql_pipeline.readers`)."""

from es_mysql_pipeline.resources.sources.base import RecordSource
from es_mysql_pipeline.resources.sources.files import FileSource

__all__ = ["FileSource", "RecordSource"]
