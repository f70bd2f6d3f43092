"""The in-memory index/document store and the point-in-time contexts over it."""

from __future__ import annotations

import copy
import json
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Any

from es_mysql_pipeline_tests.es_server.mapping import (
    _DEFAULT_DATE_FORMATS,
    _map_object,
    _sorted_properties,
)


@dataclass
class _Doc:
    doc_id: str
    source: dict[str, Any]
    seq: int  # position in its shard: the Lucene doc id
    _source_json: str | None = field(default=None, repr=False, compare=False)

    def source_json(self) -> str:
        """The source as JSON text, encoded once when indexed, as Elasticsearch keeps the
        source text it was sent: a stored document never changes (an update is a new
        ``_Doc``), and encoding each page anew made this server, not the client under test,
        the larger cost of a big read."""
        if self._source_json is None:
            self._source_json = json.dumps(self.source)
        return self._source_json


def _encoded(source: dict[str, Any]) -> str | None:
    try:
        return json.dumps(source)
    except (TypeError, ValueError):
        return None  # a test's odd value: a search that serves it fails as it did before


@dataclass
class _Index:
    name: str
    shards: int
    mappings: dict[str, Any] = field(default_factory=dict)
    #: searchable (refreshed) docs per shard, and docs written since the last refresh
    visible: list[list[_Doc]] = field(default_factory=list)
    pending: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    uuid: str = field(default_factory=lambda: uuid.uuid4().hex[:22])

    def __post_init__(self) -> None:
        self.visible = [[] for _ in range(self.shards)]

    def shard_of(self, doc_id: str) -> int:
        return zlib.crc32(doc_id.encode()) % self.shards

    def live_ids(self) -> set[str]:
        ids = {d.doc_id for shard in self.visible for d in shard}
        for doc_id, src in self.pending.items():
            if src is None:
                ids.discard(doc_id)
            else:
                ids.add(doc_id)
        return ids

    def map_source(self, source: dict[str, Any]) -> None:
        """Dynamic mapping, as ES does it when a document is indexed: a new field's type is
        taken from its first value (ISO date strings are ``date``, numbers ``long``/``float``,
        other strings ``text`` with a ``keyword`` subfield, objects ``properties``); a mapped
        field keeps its type. ``dynamic: false|strict`` maps nothing new (this server never
        rejects a document)."""
        mappings = self.mappings
        if str(mappings.get("dynamic", "true")).lower() != "true":
            return
        if mappings.get("date_detection", True) in (False, "false"):
            formats: list[str] = []
        else:
            formats = list(mappings.get("dynamic_date_formats") or _DEFAULT_DATE_FORMATS)
        _map_object(mappings.setdefault("properties", {}), source, formats)

    def mapping_body(self) -> dict[str, Any]:
        """``mappings`` as GET _mapping returns it: properties sorted, none when empty."""
        body = copy.deepcopy(self.mappings)
        if not body.get("properties"):
            body.pop("properties", None)
        else:
            body["properties"] = _sorted_properties(body["properties"])
        return body

    def refresh(self) -> None:
        """Like a Lucene refresh: updated docs are deleted and re-appended at the end."""
        if not self.pending:
            return
        for s in range(self.shards):
            self.visible[s] = [d for d in self.visible[s] if d.doc_id not in self.pending]
        for doc_id, src in self.pending.items():
            if src is not None:
                shard = self.visible[self.shard_of(doc_id)]
                seq = shard[-1].seq + 1 if shard else 0
                shard.append(_Doc(doc_id, src, seq, _encoded(src)))
        self.pending = {}


@dataclass
class _ShardSnap:
    index: str
    shard: int
    nshards: int
    docs: tuple[_Doc, ...]


@dataclass
class _Pit:
    pit_uuid: str
    shards: list[_ShardSnap]
    expires: float
    generation: int = 0
    #: newest id the client received per slice key, to count requests that use an older one
    delivered: dict[str, str] = field(default_factory=dict)
    #: per slice, the id in a response being written: a fast client may use it before the
    #: server thread marks the response delivered, and that is not a stale id
    sending: dict[str, str] = field(default_factory=dict)
