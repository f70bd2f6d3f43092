"""The Elasticsearch source: resource, PIT paging, scroll fallback, errors, time field."""

from es_mysql_pipeline.resources.sources.elasticsearch.resource import ElasticsearchSource
from es_mysql_pipeline.resources.sources.elasticsearch.time_field import date_fields

__all__ = ["ElasticsearchSource", "date_fields"]
