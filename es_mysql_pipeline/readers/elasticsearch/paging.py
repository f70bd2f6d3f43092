"""What a paged read of one index needs: the settings, the client, the query."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from elasticsearch import Elasticsearch

from es_mysql_pipeline.readers.elasticsearch.errors import ErrorPolicy
from es_mysql_pipeline.records import Columns, Frame, Record


@dataclass(frozen=True)
class PageSettings:
    """What each page asks for: plain values, which a slice's worker process takes."""

    index: str
    keep_alive: str
    page_size: int
    include_index: bool
    source_includes: list[str] | None
    source_excludes: list[str] | None


@dataclass(frozen=True)
class Paging:
    settings: PageSettings
    client: Elasticsearch
    policy: ErrorPolicy
    slices: int
    #: the query, built when the read asks for it: after the PIT opened, so that errors of
    #: the index itself (a missing index) are the read's to report
    query: Callable[[], dict[str, Any]]

    def search_body(self, query: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "size": self.settings.page_size,
            "query": query,
            "track_total_hits": False,
        }
        if self.settings.source_includes or self.settings.source_excludes:
            src: dict[str, list[str]] = {}
            if self.settings.source_includes:
                src["includes"] = list(self.settings.source_includes)
            if self.settings.source_excludes:
                src["excludes"] = list(self.settings.source_excludes)
            body["_source"] = src
        return body

    def record(self, hit: dict[str, Any]) -> Record:
        """A search hit as a record: ``_id``, the source fields, and ``_index`` if asked."""
        record: Record = {"_id": hit["_id"], **(hit.get("_source") or {})}
        if self.settings.include_index:
            record["_index"] = hit.get("_index")
        return record

    def records(self, hits: list[dict[str, Any]]) -> list[Record]:
        return [self.record(h) for h in hits]

    def frame(self, hits: list[dict[str, Any]]) -> Frame:
        """A page's records (see :meth:`record`), as :data:`Columns` when every source has
        the same fields in the same order (no dict per record built and taken apart
        again); otherwise as records."""
        try:
            sources = list(map(_SOURCE, hits))
            shapes = dict.fromkeys(map(tuple, sources))
        except (KeyError, TypeError):  # a hit without a source (_source: false), or null
            shapes = {}
        if len(shapes) != 1:
            return self.records(hits)
        names = next(iter(shapes))
        columns: Columns = {"_id": list(map(_ID, hits))}
        columns.update(zip(names, zip(*map(dict.values, sources), strict=True), strict=True))
        if self.settings.include_index:
            columns["_index"] = [h.get("_index") for h in hits]
        return columns


_SOURCE = itemgetter("_source")
_ID = itemgetter("_id")
