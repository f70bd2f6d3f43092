"""What a paged read of one index needs, shared by PIT paging and the scroll fallback."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from elasticsearch import Elasticsearch

from es_mysql_pipeline.records import Record
from es_mysql_pipeline.resources.sources.elasticsearch.errors import ErrorPolicy


@dataclass(frozen=True)
class Paging:
    client: Elasticsearch
    policy: ErrorPolicy
    index: str
    keep_alive: str
    page_size: int
    slices: int
    include_index: bool
    source_includes: list[str] | None
    source_excludes: list[str] | None
    #: the query, built when the read asks for it: after the PIT opened, so that errors of
    #: the index itself (a missing index) are the read's to report
    query: Callable[[], dict[str, Any]]

    def search_body(self, query: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "size": self.page_size,
            "query": query,
            "track_total_hits": False,
        }
        if self.source_includes or self.source_excludes:
            src: dict[str, list[str]] = {}
            if self.source_includes:
                src["includes"] = list(self.source_includes)
            if self.source_excludes:
                src["excludes"] = list(self.source_excludes)
            body["_source"] = src
        return body

    def record(self, hit: dict[str, Any]) -> Record:
        """A search hit as a record: ``_id``, the source fields, and ``_index`` if asked."""
        record: Record = {"_id": hit["_id"], **(hit.get("_source") or {})}
        if self.include_index:
            record["_index"] = hit.get("_index")
        return record
