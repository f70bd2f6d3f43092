"""The Elasticsearch source: the resource and its time field (the reading itself is in
:mod:`es_mysql_pipeline.readers.elasticsearch`)."""

from es_mysql_pipeline.resources.sources.elasticsearch.resource import ElasticsearchSource
from es_mysql_pipeline.resources.sources.elasticsearch.time_field import date_fields

__all__ = ["ElasticsearchSource", "date_fields"]
