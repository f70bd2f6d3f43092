"""The Elasticsearch source: resource, PIT paging, errors, time field.

Names are imported on first use: a worker process reading a slice (``slice_parts``) must not
pay for importing Dagster."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from es_mysql_pipeline.resources.sources.elasticsearch.resource import ElasticsearchSource
    from es_mysql_pipeline.resources.sources.elasticsearch.time_field import date_fields

_HOMES = {
    "ElasticsearchSource": "es_mysql_pipeline.resources.sources.elasticsearch.resource",
    "date_fields": "es_mysql_pipeline.resources.sources.elasticsearch.time_field",
}

__all__ = ["UNUSED_HTTP_STACKS", "ElasticsearchSource", "date_fields"]

#: The optional HTTP stacks elastic_transport imports when installed; a slice worker's
#: client uses urllib3, and importing these costs each worker memory for nothing.
UNUSED_HTTP_STACKS = ("aiohttp", "requests")


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
