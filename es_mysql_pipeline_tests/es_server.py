"""A wire-level Elasticsearch test server: real HTTP, the official client's real requests.

No Elasticsearch server package exists on our registries, so the source's tests talk to
this stdlib server instead. It answers the subset of the REST API the pipeline uses, with
bodies shaped as the Elasticsearch reference documents them, and is strict where real ES
is strict (unknown fields, missing sort for ``search_after``, unknown PIT ids, compatible-with
headers, result window) so that a client bug fails here as it would against a cluster.

Fault injection (:meth:`EsTestServer.inject`) and counters (:attr:`EsTestServer.stats`) let
tests prove retries resume exactly and let the benchmark separate server time from pipeline
time.
"""

from __future__ import annotations

import base64
import bisect
import copy
import fnmatch
import json
import re
import socket
import ssl
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

MAX_RESULT_WINDOW = 10_000
_SEARCH_BODY_KEYS = {
    "query", "size", "from", "sort", "search_after", "pit", "slice", "_source",
    "track_total_hits", "timeout", "version", "seq_no_primary_term", "track_scores",
    "stored_fields", "terminate_after", "min_score", "explain",
}  # fmt: skip
_SEARCH_PARAMS = {
    "scroll", "size", "from", "_source", "_source_includes", "_source_excludes",
    "track_total_hits", "allow_partial_search_results", "filter_path", "typed_keys",
    "rest_total_hits_as_int", "ignore_unavailable", "expand_wildcards", "allow_no_indices",
    "request_cache", "pretty", "human", "error_trace", "timeout", "preference",
}  # fmt: skip
_MAPPING_PARAMS = {
    "allow_no_indices", "expand_wildcards", "ignore_unavailable", "local", "master_timeout",
    "filter_path", "pretty", "human", "error_trace",
}  # fmt: skip
_INDEX_NAME_BAD = re.compile(r'[\\/*?"<>| ,#:A-Z]')
#: ``strict_date_optional_time`` (the first default of ``dynamic_date_formats``), and the
#: second default ``yyyy/MM/dd HH:mm:ss Z||yyyy/MM/dd Z``: the strings dynamic mapping
#: takes for dates.
_STRICT_DATE_RE = re.compile(
    r"\d{4}-\d{2}-\d{2}(T\d{2}(:\d{2}(:\d{2}([.,]\d{1,9})?)?)?(Z|[+-]\d{2}(:?\d{2})?)?)?"
)
_SLASH_DATE_RE = re.compile(r"\d{4}/\d{2}/\d{2}( \d{2}:\d{2}:\d{2})? [+-]\d{4}")
_DEFAULT_DATE_FORMATS = ["strict_date_optional_time", "yyyy/MM/dd HH:mm:ss Z||yyyy/MM/dd Z"]


class EsError(Exception):
    """An error response; ``body`` is the full JSON error as real ES sends it."""

    def __init__(self, status: int, etype: str, reason: str, **extra: Any) -> None:
        super().__init__(reason)
        cause = {"type": etype, "reason": reason, **extra}
        self.status = status
        self.body: dict[str, Any] = {
            "error": {"root_cause": [cause], **cause},
            "status": status,
        }
        self.headers: dict[str, str] = {}


def _search_phase_error(status: int, etype: str, reason: str) -> EsError:
    """Shard-level failures are wrapped like ES does: root cause inside the phase error."""
    err = EsError(status, etype, reason)
    err.body["error"] = {
        "root_cause": [{"type": etype, "reason": reason}],
        "type": "search_phase_execution_exception",
        "reason": "all shards failed",
        "phase": "query",
        "grouped": True,
        "caused_by": {"type": etype, "reason": reason},
    }
    return err


def _parse_time_value(text: str) -> float:
    """ES time units (``30s``, ``2m``, ``1h``, ``500ms``, ``1d``) in seconds."""
    m = re.fullmatch(r"(\d+)(nanos|micros|ms|s|m|h|d)", text or "")
    if not m:
        raise EsError(
            400,
            "illegal_argument_exception",
            f"failed to parse setting [keep_alive] with value [{text}] as a time value: "
            "unit is missing or unrecognized",
        )
    n = int(m.group(1))
    scale = {"nanos": 1e-9, "micros": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}
    return n * scale[m.group(2)]


def _parse_date(value: Any) -> datetime | None:
    """A date field's value as ES reads it: ISO 8601 string or epoch milliseconds."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value / 1000.0, tz=timezone.utc)
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"-?\d+", text):
            return datetime.fromtimestamp(int(text) / 1000.0, tz=timezone.utc)
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            return None
        return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)
    return None


def _dynamic_type(value: Any, formats: list[str]) -> dict[str, Any] | None:
    """The mapping ES's dynamic mapping gives a new field's first (non-null) value."""
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "long"}
    if isinstance(value, float):
        return {"type": "float"}
    if isinstance(value, str):
        if _is_dynamic_date(value, formats):
            return {"type": "date"}
        return {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}}
    return None


def _is_dynamic_date(value: str, formats: list[str]) -> bool:
    for fmt in formats:
        if fmt in ("strict_date_optional_time", "date_optional_time"):
            if _STRICT_DATE_RE.fullmatch(value) and _parse_date(value) is not None:
                return True
        elif fmt.startswith("yyyy/MM/dd") and _SLASH_DATE_RE.fullmatch(value):
            return True
    return False


def _map_object(props: dict[str, Any], obj: dict[str, Any], formats: list[str]) -> None:
    # Inlined checks: seeding a million documents must not spend its time here.
    for key, value in obj.items():
        tp = type(value)
        if tp is dict:
            _map_field(props, key, value, formats)
        elif tp is list:  # an array is mapped by its elements
            for item in value:
                if item is not None and (key not in props or type(item) in (dict, list)):
                    _map_field(props, key, item, formats)
        elif value is not None and key not in props:
            _map_field(props, key, value, formats)


def _map_field(props: dict[str, Any], key: str, value: Any, formats: list[str]) -> None:
    if "." in key and key.strip(".") and key not in props:
        head, _, rest = key.partition(".")  # ``{"a.b": 1}`` is ``{"a": {"b": 1}}`` to ES
        _map_field(props, head, {rest: value}, formats)
        return
    if isinstance(value, list):
        _map_object(props, {key: value}, formats)
        return
    spec = props.get(key)
    if isinstance(value, dict):
        if spec is None:
            spec = props[key] = {} if value else {"type": "object"}
        if spec.get("type", "object") not in ("object", "nested"):
            return  # a leaf mapped earlier: ES would reject the document
        if str(spec.get("dynamic", "true")).lower() != "true":
            return
        if value:
            if spec.get("type") == "object":
                del spec["type"]  # ES leaves the default type out once there are properties
            _map_object(spec.setdefault("properties", {}), value, formats)
        return
    if spec is None and value is not None:
        new = _dynamic_type(value, formats)
        if new is not None:
            props[key] = new


def _sorted_properties(props: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in sorted(props):
        spec = props[name]
        if isinstance(spec, dict) and isinstance(spec.get("properties"), dict):
            spec = {**spec, "properties": _sorted_properties(spec["properties"])}
        out[name] = spec
    return out


def _field_values(source: dict[str, Any], path: str) -> list[Any]:
    """All leaf values at a dotted path, through objects and arrays (like doc values)."""
    current: list[Any] = [source]
    for part in path.split("."):
        nxt: list[Any] = []
        for obj in current:
            items = obj if isinstance(obj, list) else [obj]
            for item in items:
                if isinstance(item, dict) and part in item:
                    nxt.append(item[part])
        current = nxt
    out: list[Any] = []
    for v in current:
        if isinstance(v, list):
            out.extend(x for x in v if x is not None)
        elif v is not None:
            out.append(v)
    return out


@dataclass
class _Doc:
    doc_id: str
    source: dict[str, Any]
    seq: int  # position in its shard: the Lucene doc id


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
                shard.append(_Doc(doc_id, src, seq))
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


@dataclass
class _Scroll:
    scroll_id: str
    hits: list[dict[str, Any]]
    position: int
    size: int
    expires: float
    total: int


@dataclass
class Fault:
    """One injected fault; ``match`` is a regex on ``METHOD path``; fires ``count`` times."""

    kind: str  # "status" | "drop" | "delay" | "expire"
    count: int
    match: str | None = None
    after: int = 0
    status: int = 503
    retry_after: str | None = None
    delay: float = 0.0
    fired: int = 0

    def wants(self, line: str) -> bool:
        if self.count <= 0 or (self.match and not re.search(self.match, line)):
            return False
        if self.after > 0:
            self.after -= 1
            return False
        self.count -= 1
        self.fired += 1
        return True


@dataclass
class Stats:
    """Counters for tests and the benchmark."""

    requests: int = 0
    by_endpoint: dict[str, int] = field(default_factory=dict)
    serving_seconds: float = 0.0
    faults_fired: int = 0
    stale_pit_ids: int = 0
    pits_opened: int = 0
    pits_closed: int = 0
    scrolls_opened: int = 0
    scrolls_cleared: int = 0


class EsTestServer:
    """An in-memory Elasticsearch speaking HTTP(S) on a free 127.0.0.1 port.

    Use as a context manager or call :meth:`start`/:meth:`stop`.
    """

    def __init__(
        self,
        *,
        version: str = "9.1.0",
        certfile: str | None = None,
        keyfile: str | None = None,
        api_key: str | None = None,
        basic_auth: tuple[str, str] | None = None,
        pit_supported: bool = True,
        default_shards: int = 1,
    ) -> None:
        self.version = version
        self.major = int(version.split(".")[0])
        self.certfile = certfile
        self.keyfile = keyfile
        #: the token after ``ApiKey `` that requests must carry (``None``: no API key auth)
        self.api_key = api_key
        self.basic_auth = basic_auth
        self.pit_supported = pit_supported
        self.default_shards = default_shards
        #: indices where the authenticated user may not read (403)
        self.deny_read: set[str] = set()
        #: indices whose mapping the user may not see (``read`` without
        #: ``view_index_metadata``: searches work, GET _mapping is 403)
        self.deny_metadata: set[str] = set()
        self.stats = Stats()
        self.indices: dict[str, _Index] = {}
        self.pits: dict[str, _Pit] = {}
        self.scrolls: dict[str, _Scroll] = {}
        self.faults: list[Fault] = []
        self._lock = threading.RLock()
        self._match_cache: dict[tuple[Any, ...], list[tuple[tuple[Any, ...], _Doc, str]]] = {}
        self._local = threading.local()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        scheme = "https" if self.certfile else "http"
        return f"{scheme}://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> EsTestServer:
        ctx: ssl.SSLContext | None = None
        if self.certfile:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(self.certfile, self.keyfile)
        self._httpd = _Httpd(("127.0.0.1", 0), _Handler, self, ctx)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> EsTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- fault injection -------------------------------------------------------------------

    def inject(
        self,
        kind: str,
        count: int = 1,
        *,
        match: str | None = None,
        after: int = 0,
        status: int = 503,
        retry_after: str | None = None,
        delay: float = 0.0,
    ) -> Fault:
        """Make the next ``count`` requests matching ``match`` (after skipping ``after``) fail.

        ``status`` answers with that HTTP status (``retry_after`` sets ``Retry-After``);
        ``drop`` sends headers and half the body, then closes the connection; ``delay``
        sleeps ``delay`` seconds before answering; ``expire`` drops every PIT and scroll
        context just before handling the request.
        """
        if kind not in {"status", "drop", "delay", "expire"}:
            raise ValueError(f"unknown fault kind {kind!r}")
        fault = Fault(kind, count, match, after, status, retry_after, delay)
        with self._lock:
            self.faults.append(fault)
        return fault

    def fail_with_429(self, count: int, retry_after: str = "1", match: str | None = None) -> Fault:
        return self.inject("status", count, status=429, retry_after=retry_after, match=match)

    def fail_with_503(self, count: int, match: str | None = None) -> Fault:
        return self.inject("status", count, status=503, match=match)

    def expire_all_contexts(self) -> None:
        """Every open PIT and scroll disappears, as after ``keep_alive`` ran out."""
        with self._lock:
            self.pits.clear()
            self.scrolls.clear()
            self._match_cache.clear()

    # -- seeding helpers for tests that do not need the client -----------------------------

    def create_index(
        self, name: str, shards: int = 1, mappings: dict[str, Any] | None = None
    ) -> None:
        """``mappings`` as in a create-index request (``{"properties": {...}}``); fields it
        does not name are mapped dynamically from the documents."""
        with self._lock:
            body: dict[str, Any] = {"settings": {"number_of_shards": shards}}
            if mappings is not None:
                body["mappings"] = mappings
            self._create_index(name, body)

    def add_docs(self, name: str, docs: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Index and refresh ``(id, source)`` pairs directly (no HTTP)."""
        with self._lock:
            idx = self.indices.get(name) or self._create_index(name, {})
            for doc_id, src in docs:
                idx.pending[doc_id] = src
                idx.map_source(src)
            idx.refresh()

    @property
    def open_pits(self) -> int:
        with self._lock:
            self._expire()
            return len(self.pits)

    @property
    def open_scrolls(self) -> int:
        with self._lock:
            self._expire()
            return len(self.scrolls)

    # -- request handling ------------------------------------------------------------------

    def take_fault(self, line: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.wants(line):
                    self.stats.faults_fired += 1
                    if fault.kind == "expire":
                        self.expire_all_contexts()
                        continue
                    return fault
        return None

    def check_auth(self, headers: Any, path: str) -> None:
        if self.api_key is None and self.basic_auth is None:
            return
        given = headers.get("Authorization") or ""
        if self.api_key is not None and given == f"ApiKey {self.api_key}":
            return
        if self.basic_auth is not None:
            token = base64.b64encode(":".join(self.basic_auth).encode()).decode()
            if given == f"Basic {token}":
                return
        reason = (
            f"missing authentication credentials for REST request [{path}]"
            if not given
            else "unable to authenticate with provided credentials and anonymous access "
            "is not allowed for this request"
        )
        err = EsError(401, "security_exception", reason)
        err.headers["WWW-Authenticate"] = 'Basic realm="security", charset="UTF-8"'
        raise err

    def dispatch(
        self, method: str, path: str, params: dict[str, str], body: Any, raw: bytes
    ) -> tuple[int, Any]:
        parts = [unquote(p) for p in path.strip("/").split("/") if p]
        with self._lock:
            self._expire()
        if not parts:
            if method in ("GET", "HEAD"):
                return 200, self._info()
        elif parts == ["_bulk"] and method in ("POST", "PUT"):
            return self._bulk(None, raw, params)
        elif parts == ["_pit"] and method == "DELETE":
            return self._close_pit(body)
        elif parts == ["_search"] and method in ("GET", "POST"):
            return self._search(None, params, body)
        elif parts == ["_search", "scroll"] and method in ("GET", "POST"):
            return self._scroll_next(params, body)
        elif parts == ["_search", "scroll"] and method == "DELETE":
            return self._clear_scroll(body)
        elif parts == ["_refresh"] and method in ("GET", "POST"):
            return self._refresh("*")
        elif parts == ["_mapping"] and method == "GET":
            return self._get_mapping("_all", params)
        elif len(parts) == 1 and not parts[0].startswith("_"):
            if method == "PUT":
                with self._lock:
                    idx = self._create_index(parts[0], body or {})
                return 200, {"acknowledged": True, "shards_acknowledged": True, "index": idx.name}
            if method == "HEAD":
                return (200 if self._resolve(parts[0], allow_empty=True) else 404), None
            if method == "DELETE":
                return self._delete_index(parts[0])
        elif len(parts) == 2 and not parts[0].startswith("_"):
            index, op = parts
            if op == "_bulk" and method in ("POST", "PUT"):
                return self._bulk(index, raw, params)
            if op == "_refresh" and method in ("GET", "POST"):
                return self._refresh(index)
            if op == "_count" and method in ("GET", "POST"):
                return self._count(index, body)
            if op == "_mapping" and method == "GET":
                return self._get_mapping(index, params)
            if op == "_pit" and method == "POST":
                return self._open_pit(index, params, path)
            if op == "_search" and method in ("GET", "POST"):
                return self._search(index, params, body)
        raise EsError(
            400,
            "illegal_argument_exception",
            f"no handler found for uri [{path}] and method [{method}]",
        )

    # -- endpoints -------------------------------------------------------------------------

    def _info(self) -> dict[str, Any]:
        return {
            "name": "es-test-node",
            "cluster_name": "es-test",
            "cluster_uuid": "Q0e6HnZaQ6a2y3uJhUoM_w",
            "version": {
                "number": self.version,
                "build_flavor": "default",
                "build_type": "docker",
                "build_hash": "0" * 40,
                "build_date": "2025-01-01T00:00:00.000Z",
                "build_snapshot": False,
                "lucene_version": "10.1.0",
                "minimum_wire_compatibility_version": f"{self.major - 1}.18.0",
                "minimum_index_compatibility_version": f"{self.major - 1}.0.0",
            },
            "tagline": "You Know, for Search",
        }

    def _create_index(self, name: str, body: dict[str, Any]) -> _Index:
        if name in self.indices:
            raise EsError(
                400,
                "resource_already_exists_exception",
                f"index [{name}/{self.indices[name].uuid}] already exists",
                index=name,
            )
        if _INDEX_NAME_BAD.search(name) or name.startswith(("_", "-", "+")):
            raise EsError(
                400,
                "invalid_index_name_exception",
                f"Invalid index name [{name}], must be lowercase and not contain "
                '[\\, /, *, ?, ", <, >, |, " ", ",", #, :]',
                index=name,
            )
        settings = body.get("settings") or {}
        settings = {**settings, **(settings.get("index") or {})}
        shards = int(settings.get("number_of_shards", self.default_shards))
        if not 1 <= shards <= 1024:
            raise EsError(
                400,
                "illegal_argument_exception",
                f"Failed to parse value [{shards}] for setting [index.number_of_shards] "
                "must be >= 1",
            )
        idx = _Index(name, shards, copy.deepcopy(body.get("mappings") or {}))
        self.indices[name] = idx
        return idx

    def _delete_index(self, pattern: str) -> tuple[int, Any]:
        with self._lock:
            names = self._resolve(pattern)
            for name in names:
                del self.indices[name]
            self._match_cache.clear()
        return 200, {"acknowledged": True}

    def _resolve(
        self,
        expr: str,
        *,
        allow_empty: bool = False,
        ignore_missing: bool = False,
        action: str = "indices:data/read/search",
        privileges: str = "read,all",
        denied: set[str] | None = None,
    ) -> list[str]:
        """Index names for a comma-separated list of names and ``*`` patterns.

        A name in ``denied`` (default :attr:`deny_read`) is a 403 for ``action``.
        """
        names: list[str] = []
        for part in expr.split(","):
            if "*" in part:
                names.extend(n for n in sorted(self.indices) if fnmatch.fnmatchcase(n, part))
            elif part in ("_all",):
                names.extend(sorted(self.indices))
            elif part in self.indices:
                names.append(part)
            elif ignore_missing:
                continue
            elif not allow_empty:
                raise EsError(
                    404,
                    "index_not_found_exception",
                    f"no such index [{part}]",
                    **{
                        "resource.type": "index_or_alias",
                        "resource.id": part,
                        "index_uuid": "_na_",
                        "index": part,
                    },
                )
            else:
                return []
        for name in names:
            if name in (self.deny_read if denied is None else denied):
                raise EsError(
                    403,
                    "security_exception",
                    f"action [{action}] is unauthorized for user [reader] "
                    f"with effective roles [reader] on indices [{name}], this action is "
                    f"granted by the index privileges [{privileges}]",
                )
        return list(dict.fromkeys(names))

    def _get_mapping(self, expr: str, params: dict[str, str]) -> tuple[int, Any]:
        """``{"<index>": {"mappings": {...}}}`` per matched index; ``{}`` when a pattern
        matches none; 404 for a missing name (unless ``ignore_unavailable``)."""
        for key in params:
            if key not in _MAPPING_PARAMS:
                raise EsError(
                    400,
                    "illegal_argument_exception",
                    f"request [/{expr}/_mapping] contains unrecognized parameter: [{key}]",
                )
        with self._lock:
            names = self._resolve(
                expr,
                ignore_missing=params.get("ignore_unavailable") in ("", "true"),
                action="indices:admin/mappings/get",
                privileges="view_index_metadata,manage,all",
                denied=self.deny_read | self.deny_metadata,
            )
            return 200, {name: {"mappings": self.indices[name].mapping_body()} for name in names}

    def _bulk(
        self, default_index: str | None, raw: bytes, params: dict[str, str]
    ) -> tuple[int, Any]:
        started = time.perf_counter()
        lines = [ln for ln in raw.split(b"\n") if ln.strip()]
        items: list[dict[str, Any]] = []
        errors = False
        touched: set[str] = set()
        i = 0
        with self._lock:
            while i < len(lines):
                try:
                    action = json.loads(lines[i])
                except ValueError:
                    raise EsError(
                        400,
                        "x_content_parse_exception",
                        f"[{i + 1}:1] Malformed action/metadata line",
                    ) from None
                if not isinstance(action, dict) or len(action) != 1:
                    raise EsError(
                        400,
                        "illegal_argument_exception",
                        f"Malformed action/metadata line [{i + 1}], expected START_OBJECT",
                    )
                op, meta = next(iter(action.items()))
                if op not in ("index", "create", "delete"):
                    raise EsError(
                        400,
                        "illegal_argument_exception",
                        f"Malformed action/metadata line [{i + 1}], expected field [create], "
                        f"[delete], [index] or [update] but found [{op}]",
                    )
                index = meta.get("_index") or default_index
                if not index:
                    raise EsError(
                        400,
                        "action_request_validation_exception",
                        "Validation Failed: 1: index is missing;",
                    )
                doc_id = str(meta.get("_id") or uuid.uuid4().hex[:20])
                source: dict[str, Any] | None = None
                if op != "delete":
                    i += 1
                    if i >= len(lines):
                        raise EsError(
                            400,
                            "illegal_argument_exception",
                            "The bulk request must be terminated by a newline [\\n]",
                        )
                    source = json.loads(lines[i])
                i += 1
                idx = self.indices.get(index) or self._create_index(index, {})
                touched.add(index)
                exists = doc_id in idx.live_ids() if op != "index" else False
                item: dict[str, Any] = {"_index": index, "_id": doc_id}
                if isinstance(source, dict) and "_id" in source:
                    item.update(
                        status=400,
                        error={
                            "type": "document_parsing_exception",
                            "reason": "[1:8] Field [_id] is a metadata field and cannot be "
                            "added inside a document. Use the index API request parameters.",
                        },
                    )
                    errors = True
                elif op == "create" and exists:
                    item.update(
                        status=409,
                        error={
                            "type": "version_conflict_engine_exception",
                            "reason": f"[{doc_id}]: version conflict, document already exists",
                            "index": index,
                        },
                    )
                    errors = True
                elif op == "delete":
                    existed = doc_id in idx.live_ids()
                    idx.pending[doc_id] = None
                    item.update(status=200 if existed else 404,
                                result="deleted" if existed else "not_found")  # fmt: skip
                else:
                    idx.pending[doc_id] = source
                    if isinstance(source, dict):
                        idx.map_source(source)
                    item.update(status=201, result="created", _version=1, _seq_no=0,
                                _primary_term=1,
                                _shards={"total": 1, "successful": 1, "failed": 0})  # fmt: skip
                items.append({op: item})
            if params.get("refresh") in ("", "true", "wait_for"):
                for name in touched:
                    self.indices[name].refresh()
                self._match_cache.clear()
        took = int((time.perf_counter() - started) * 1000)
        return 200, {"errors": errors, "took": took, "items": items}

    def _refresh(self, expr: str) -> tuple[int, Any]:
        with self._lock:
            names = self._resolve(expr, allow_empty=True)
            for name in names:
                self.indices[name].refresh()
            self._match_cache.clear()
            n = sum(self.indices[name].shards for name in names)
        return 200, {"_shards": {"total": n, "successful": n, "failed": 0}}

    def _snapshot(self, expr: str) -> list[_ShardSnap]:
        with self._lock:
            names = self._resolve(expr)
            return [
                _ShardSnap(name, s, self.indices[name].shards, tuple(self.indices[name].visible[s]))
                for name in names
                for s in range(self.indices[name].shards)
            ]

    def _count(self, expr: str, body: Any) -> tuple[int, Any]:
        body = body or {}
        for key in body:
            if key != "query":
                raise EsError(400, "parsing_exception", f"request does not support [{key}]")
        snaps = self._snapshot(expr)
        query = body.get("query") or {"match_all": {}}
        _validate_query(query)
        n = sum(1 for snap in snaps for d in snap.docs if _matches(query, d))
        total = len(snaps)
        return 200, {
            "count": n,
            "_shards": {"total": total, "successful": total, "skipped": 0, "failed": 0},
        }

    def _open_pit(self, expr: str, params: dict[str, str], path: str) -> tuple[int, Any]:
        if not self.pit_supported:
            raise EsError(
                400,
                "illegal_argument_exception",
                f"no handler found for uri [{path}] and method [POST]",
            )
        if "keep_alive" not in params:
            raise EsError(
                400,
                "action_request_validation_exception",
                "Validation Failed: 1: [keep_alive] is not specified;",
            )
        keep = _parse_time_value(params["keep_alive"])
        snaps = self._snapshot(expr)
        with self._lock:
            pit = _Pit(uuid.uuid4().hex, snaps, time.monotonic() + keep)
            self.pits[pit.pit_uuid] = pit
            self.stats.pits_opened += 1
            pit_id = self._pit_id(pit)
        n = len(snaps)
        return 200, {
            "id": pit_id,
            "_shards": {"total": n, "successful": n, "skipped": 0, "failed": 0},
        }

    def _pit_id(self, pit: _Pit) -> str:
        pit.generation += 1
        raw = f"{pit.pit_uuid}:{pit.generation}".encode()
        return base64.urlsafe_b64encode(b"\x00pit\x01" + raw).decode().rstrip("=")

    def _find_pit(self, pit_id: Any) -> _Pit:
        try:
            padded = str(pit_id) + "=" * (-len(str(pit_id)) % 4)
            raw = base64.urlsafe_b64decode(padded.encode())
            pit_uuid = raw[5:].decode().split(":")[0] if raw.startswith(b"\x00pit\x01") else ""
        except ValueError:
            pit_uuid = ""
        pit = self.pits.get(pit_uuid)
        if pit is None:
            raise EsError(
                404,
                "search_context_missing_exception",
                f"No search context found for id [{zlib.crc32(str(pit_id).encode())}]",
            )
        return pit

    def _close_pit(self, body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict) or "id" not in body:
            raise EsError(
                400,
                "action_request_validation_exception",
                "Validation Failed: 1: [id] is required;",
            )
        with self._lock:
            try:
                pit = self._find_pit(body["id"])
            except EsError:
                return 404, {"succeeded": True, "num_freed": 0}
            del self.pits[pit.pit_uuid]
            self.stats.pits_closed += 1
            return 200, {"succeeded": True, "num_freed": len(pit.shards)}

    def _expire(self) -> None:
        now = time.monotonic()
        for key in [k for k, p in self.pits.items() if p.expires < now]:
            del self.pits[key]
        for key in [k for k, s in self.scrolls.items() if s.expires < now]:
            del self.scrolls[key]

    def _search(self, expr: str | None, params: dict[str, str], body: Any) -> tuple[int, Any]:
        started = time.perf_counter()
        body = dict(body or {})
        for key in params:
            if key not in _SEARCH_PARAMS:
                raise EsError(
                    400,
                    "illegal_argument_exception",
                    f"request [/_search] contains unrecognized parameter: [{key}]",
                )
        for key, value in body.items():
            if key not in _SEARCH_BODY_KEYS:
                kind = "START_OBJECT" if isinstance(value, dict) else "VALUE_STRING"
                raise EsError(400, "parsing_exception", f"Unknown key for a {kind} in [{key}].",
                              line=1, col=2)  # fmt: skip
        pit_req = body.get("pit")
        scroll = params.get("scroll")
        if pit_req is not None and expr is not None:
            raise EsError(
                400,
                "action_request_validation_exception",
                "Validation Failed: 1: [indices] cannot be used with point in time. Do not "
                "specify any index with point in time.;",
            )
        if pit_req is not None and scroll is not None:
            raise EsError(
                400,
                "action_request_validation_exception",
                "Validation Failed: 1: using [point in time] is not allowed in a scroll context;",
            )
        size = int(params.get("size", body.get("size", 10)))
        from_ = int(params.get("from", body.get("from", 0)))
        if size < 0:
            raise EsError(
                400,
                "illegal_argument_exception",
                f"[size] parameter cannot be negative, found [{size}]",
            )
        if scroll is None and from_ + size > MAX_RESULT_WINDOW:
            raise _search_phase_error(
                400,
                "illegal_argument_exception",
                f"Result window is too large, from + size must be less than or equal to: "
                f"[{MAX_RESULT_WINDOW}] but was [{from_ + size}]. See the scroll api for a more "
                "efficient way to request large data sets. This limit can be set by changing "
                "the [index.max_result_window] index level setting.",
            )
        if scroll is not None and size > MAX_RESULT_WINDOW:
            raise _search_phase_error(
                400,
                "illegal_argument_exception",
                f"Batch size is too large, size must be less than or equal to: "
                f"[{MAX_RESULT_WINDOW}] but was [{size}]. Scroll batch sizes cost as much "
                "memory as result windows so they are controlled by the "
                "[index.max_result_window] index level setting.",
            )
        sort = _parse_sort(body.get("sort"))
        search_after = body.get("search_after")
        if search_after is not None and not sort:
            raise _search_phase_error(
                400, "illegal_argument_exception", "Sort must contain at least one field."
            )
        if search_after is not None and scroll is not None:
            raise EsError(
                400,
                "action_request_validation_exception",
                "Validation Failed: 1: `search_after` cannot be used in a scroll context.;",
            )
        slice_ = body.get("slice")
        if slice_ is not None:
            if pit_req is None and scroll is None:
                raise EsError(
                    400,
                    "action_request_validation_exception",
                    "Validation Failed: 1: [slice] can only be used with [scroll] or "
                    "[point-in-time] requests;",
                )
            if set(slice_) - {"id", "max", "field"} or "id" not in slice_ or "max" not in slice_:
                raise EsError(400, "parsing_exception", "[slice] requires [id] and [max]")
            if int(slice_["max"]) <= 1:
                raise EsError(400, "illegal_argument_exception", "max must be greater than 1")
            if not 0 <= int(slice_["id"]) < int(slice_["max"]):
                raise EsError(400, "illegal_argument_exception", "id must be lower than max")
        if any(s[0] == "_shard_doc" for s in sort) and pit_req is None:
            raise _search_phase_error(
                400,
                "illegal_argument_exception",
                "[_shard_doc] sort field cannot be used without [point in time] search",
            )
        query = body.get("query") or {"match_all": {}}
        _validate_query(query)
        includes, excludes = _source_filter(body.get("_source"), params)

        pit: _Pit | None = None
        with self._lock:
            if pit_req is not None:
                if not isinstance(pit_req, dict) or "id" not in pit_req:
                    raise EsError(400, "x_content_parse_exception",
                                  "[1:9] [point_in_time] failed to parse field [id]")  # fmt: skip
                if set(pit_req) - {"id", "keep_alive"}:
                    raise EsError(400, "x_content_parse_exception",
                                  "[1:9] [point_in_time] unknown field")  # fmt: skip
                pit = self._find_pit(pit_req["id"])
                slice_key = json.dumps(slice_, sort_keys=True)
                newest = pit.delivered.get(slice_key)
                if newest is not None and newest != pit_req["id"]:
                    self.stats.stale_pit_ids += 1
                if "keep_alive" in pit_req:
                    pit.expires = time.monotonic() + _parse_time_value(pit_req["keep_alive"])
                snaps = pit.shards
            else:
                snaps = self._snapshot(expr or "_all")

        if pit is not None and not any(s[0] in ("_shard_doc", "_doc") for s in sort):
            sort = [*sort, ("_shard_doc", "asc")]  # the implicit tiebreaker
        cache_key = (
            pit.pit_uuid if pit else id(snaps),
            json.dumps(query, sort_keys=True),
            json.dumps(sort),
            json.dumps(slice_, sort_keys=True),
        )
        with self._lock:
            matches = self._match_cache.get(cache_key) if pit else None
        if matches is None:
            matches = self._matching(snaps, query, sort, slice_)
            if pit is not None:
                with self._lock:
                    if len(self._match_cache) > 64:
                        self._match_cache.clear()
                    self._match_cache[cache_key] = matches
        start = 0
        if search_after is not None:
            n_after = len(search_after) if isinstance(search_after, list) else 1
            if not isinstance(search_after, list) or n_after != len(sort):
                raise _search_phase_error(
                    400,
                    "illegal_argument_exception",
                    f"search_after has {n_after} value(s) but sort has {len(sort)}.",
                )
            after_key = _sort_key(sort, [_after_value(v) for v in search_after])
            start = bisect.bisect_right([m[0] for m in matches], after_key)
        total = len(matches)

        if scroll is not None:
            keep = _parse_time_value(scroll)
            hits = [self._hit(m, includes, excludes, sort) for m in matches]
            sc = _Scroll(uuid.uuid4().hex, hits, 0, size, time.monotonic() + keep, total)
            with self._lock:
                self.scrolls[sc.scroll_id] = sc
                self.stats.scrolls_opened += 1
            page = self._scroll_page(sc)
            page["_scroll_id"] = _encode_scroll_id(sc.scroll_id)
            page["_shards"] = _shards(len(snaps))
            page["took"] = int((time.perf_counter() - started) * 1000)
            return 200, page

        window = matches[start + from_ : start + from_ + size]
        resp: dict[str, Any] = {
            "took": int((time.perf_counter() - started) * 1000),
            "timed_out": False,
            "_shards": _shards(len(snaps)),
            "hits": {
                "max_score": None,
                "hits": [self._hit(m, includes, excludes, sort) for m in window],
            },
        }
        tth = params.get("track_total_hits", body.get("track_total_hits", MAX_RESULT_WINDOW))
        if tth in (False, "false"):
            pass
        elif tth in (True, "true"):
            resp["hits"]["total"] = {"value": total, "relation": "eq"}
        else:
            limit = int(tth)
            relation = "eq" if total <= limit else "gte"
            resp["hits"]["total"] = {"value": min(total, limit), "relation": relation}
        if pit is not None:
            with self._lock:
                new_id = self._pit_id(pit)
            slice_key = json.dumps(slice_, sort_keys=True)
            # counted as received only once the whole response went out (not on a drop)
            self._local.on_sent = lambda: pit.delivered.__setitem__(slice_key, new_id)
            resp = {"pit_id": new_id, **resp}
        return 200, resp

    def _matching(
        self,
        snaps: list[_ShardSnap],
        query: dict[str, Any],
        sort: list[tuple[str, str]],
        slice_: dict[str, Any] | None,
    ) -> list[tuple[tuple[Any, ...], _Doc, str]]:
        out: list[tuple[tuple[Any, ...], _Doc, str]] = []
        for req_index, snap in enumerate(snaps):
            for doc in snap.docs:
                if slice_ is not None and not _in_slice(snap, doc, slice_):
                    continue
                if not _matches(query, doc):
                    continue
                shard_doc = (req_index << 32) | doc.seq
                values = [_sort_value(s, doc, shard_doc) for s in sort]
                out.append((_sort_key(sort, values), doc, snap.index))
        out.sort(key=lambda m: m[0])
        return out

    def _hit(
        self,
        match: tuple[tuple[Any, ...], _Doc, str],
        includes: list[str] | None,
        excludes: list[str],
        sort: list[tuple[str, str]],
    ) -> dict[str, Any]:
        key, doc, index = match
        hit: dict[str, Any] = {"_index": index, "_id": doc.doc_id, "_score": None}
        if includes is None and not excludes:
            hit["_source"] = doc.source
        elif includes != []:
            hit["_source"] = _filter_source(doc.source, includes or [], excludes)
        if sort:
            hit["sort"] = [_unsort(s, v) for s, v in zip(sort, key, strict=True)]
        return hit

    def _scroll_page(self, sc: _Scroll) -> dict[str, Any]:
        hits = sc.hits[sc.position : sc.position + sc.size]
        sc.position += len(hits)
        return {
            "took": 1,
            "timed_out": False,
            "hits": {
                "total": {"value": sc.total, "relation": "eq"},
                "max_score": None,
                "hits": hits,
            },
        }

    def _scroll_next(self, params: dict[str, str], body: Any) -> tuple[int, Any]:
        body = body or {}
        for key in body:
            if key not in ("scroll", "scroll_id"):
                raise EsError(
                    400,
                    "parsing_exception",
                    f"Unknown parameter [{key}] in request body or parameter is of the wrong "
                    "type[VALUE_STRING] ",
                )
        raw_id = body.get("scroll_id") or params.get("scroll_id")
        if not raw_id:
            raise EsError(
                400,
                "action_request_validation_exception",
                "Validation Failed: 1: scrollId is missing;",
            )
        keep = body.get("scroll") or params.get("scroll")
        with self._lock:
            sc = self.scrolls.get(_decode_scroll_id(raw_id))
            if sc is None:
                ctx = zlib.crc32(raw_id.encode())
                raise EsError(
                    404,
                    "search_context_missing_exception",
                    f"No search context found for id [{ctx}]",
                )
            if keep:
                sc.expires = time.monotonic() + _parse_time_value(keep)
            page = self._scroll_page(sc)
        page["_scroll_id"] = raw_id
        page["_shards"] = _shards(1)
        return 200, page

    def _clear_scroll(self, body: Any) -> tuple[int, Any]:
        ids = (body or {}).get("scroll_id")
        ids = [ids] if isinstance(ids, str) else list(ids or [])
        freed = 0
        with self._lock:
            for raw in ids:
                if self.scrolls.pop(_decode_scroll_id(raw), None) is not None:
                    freed += 1
                    self.stats.scrolls_cleared += 1
        return (200 if freed or not ids else 404), {"succeeded": True, "num_freed": freed}


def _shards(n: int) -> dict[str, int]:
    return {"total": n, "successful": n, "skipped": 0, "failed": 0}


def _encode_scroll_id(sid: str) -> str:
    return base64.urlsafe_b64encode(b"\x00scroll\x01" + sid.encode()).decode().rstrip("=")


def _decode_scroll_id(raw: str) -> str:
    try:
        data = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    except ValueError:
        return ""
    return data[8:].decode(errors="replace") if data.startswith(b"\x00scroll\x01") else ""


def _in_slice(snap: _ShardSnap, doc: _Doc, slice_: dict[str, Any]) -> bool:
    """Shard-level slicing when ``max <= shards``, else docs split within each shard."""
    sid, smax = int(slice_["id"]), int(slice_["max"])
    n = snap.nshards
    if smax <= n:
        return snap.shard % smax == sid
    if sid % n != snap.shard:
        return False
    per_shard = len(range(snap.shard, smax, n))
    return snap.shard + n * (zlib.crc32(doc.doc_id.encode()) % per_shard) == sid


def _parse_sort(sort: Any) -> list[tuple[str, str]]:
    if sort is None:
        return []
    items = sort if isinstance(sort, list) else [sort]
    out: list[tuple[str, str]] = []
    for item in items:
        if isinstance(item, str):
            name, _, order = item.partition(":")
            out.append((name, order or ("desc" if name == "_score" else "asc")))
        elif isinstance(item, dict) and len(item) == 1:
            name, spec = next(iter(item.items()))
            order = spec.get("order", "asc") if isinstance(spec, dict) else spec
            if order not in ("asc", "desc"):
                raise EsError(400, "illegal_argument_exception",
                              f"Unknown SortOrder [{order}]")  # fmt: skip
            out.append((name, order))
        else:
            raise EsError(
                400,
                "parsing_exception",
                "malformed sort format, within the sort array, an object, or an actual string "
                f"are allowed [{item}]",
            )
    return out


_MISSING = object()


def _sort_value(spec: tuple[str, str], doc: _Doc, shard_doc: int) -> Any:
    name = spec[0]
    if name in ("_shard_doc", "_doc"):
        return shard_doc if name == "_shard_doc" else doc.seq
    if name == "_score":
        return 1.0
    values = _field_values(doc.source, name)
    if not values:
        return None
    dates = [_parse_date(v) for v in values if not isinstance(v, (int, float))]
    if dates and all(d is not None for d in dates):
        millis = [int(d.timestamp() * 1000) for d in dates if d is not None]
        return min(millis) if spec[1] == "asc" else max(millis)
    plain = [v for v in values if isinstance(v, (int, float, str))]
    try:
        return min(plain) if spec[1] == "asc" else max(plain)
    except (TypeError, ValueError):
        return str(plain[0]) if plain else None


class _Rev:
    """Reverses ordering for ``desc`` sort keys."""

    __slots__ = ("v",)

    def __init__(self, v: Any) -> None:
        self.v = v

    def __lt__(self, other: _Rev) -> bool:
        return bool(other.v < self.v)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Rev) and self.v == other.v


def _sort_key(sort: list[tuple[str, str]], values: list[Any]) -> tuple[Any, ...]:
    """Missing values sort last in both directions, as ES does by default."""
    key: list[Any] = []
    for (_, order), value in zip(sort, values, strict=True):
        present = value is not None
        if order == "desc":
            key.append((0, _Rev(value)) if present else (1, 0))
        else:
            key.append((0, value) if present else (1, 0))
    return tuple(key)


def _unsort(spec: tuple[str, str], part: Any) -> Any:
    value = part[1]
    if part[0] == 1:
        return None
    return value.v if isinstance(value, _Rev) else value


def _after_value(v: Any) -> Any:
    if isinstance(v, str) and re.fullmatch(r"-?\d+", v):
        return int(v)
    return v


def _source_filter(source: Any, params: dict[str, str]) -> tuple[list[str] | None, list[str]]:
    """``(includes, excludes)``: ``None`` includes all, ``[]`` means no ``_source`` at all."""
    includes: list[str] | None = None
    excludes: list[str] = []
    if source is False or params.get("_source") == "false":
        return [], []
    if isinstance(source, str):
        includes = [source]
    elif isinstance(source, list):
        includes = list(source)
    elif isinstance(source, dict):
        for key in source:
            if key not in ("includes", "include", "excludes", "exclude"):
                raise EsError(
                    400, "parsing_exception", f"Unknown key for a START_ARRAY in [{key}]."
                )
        inc = source.get("includes", source.get("include"))
        if inc is not None:
            includes = [inc] if isinstance(inc, str) else list(inc)
        exc = source.get("excludes", source.get("exclude"))
        if exc is not None:
            excludes = [exc] if isinstance(exc, str) else list(exc)
    if "_source_includes" in params:
        includes = params["_source_includes"].split(",")
    if "_source_excludes" in params:
        excludes = params["_source_excludes"].split(",")
    return (includes if includes else None), excludes


def _filter_source(obj: dict[str, Any], includes: list[str], excludes: list[str]) -> dict[str, Any]:
    def matches(path: str, patterns: list[str]) -> bool:
        return any(fnmatch.fnmatchcase(path, p) or path.startswith(p + ".") for p in patterns)

    def could_contain(path: str) -> bool:
        return any(p.startswith(path + ".") or "*" in p for p in includes)

    def walk(value: Any, prefix: str, included: bool) -> Any:
        if isinstance(value, list):
            kept = [walk(v, prefix, included) for v in value]
            return [v for v in kept if v is not _MISSING]
        if not isinstance(value, dict):
            return value if included else _MISSING
        out: dict[str, Any] = {}
        for key, sub in value.items():
            path = f"{prefix}{key}"
            if excludes and matches(path, excludes):
                continue
            inc = included or not includes or matches(path, includes)
            if not inc and not (isinstance(sub, (dict, list)) and could_contain(path)):
                continue
            kept = walk(sub, path + ".", inc)
            if kept is _MISSING or (not inc and kept in ({}, [])):
                continue
            out[key] = kept
        return out

    result = walk(obj, "", not includes)
    return result if isinstance(result, dict) else {}


_QUERY_TYPES = {
    "match_all",
    "match_none",
    "bool",
    "range",
    "term",
    "terms",
    "exists",
    "ids",
    "match",
}


def _validate_query(query: Any) -> None:
    if not isinstance(query, dict) or len(query) != 1:
        raise EsError(
            400,
            "parsing_exception",
            "[_na] query malformed, must start with start_object"
            if not isinstance(query, dict)
            else "[_na] query malformed, no start_object after query name",
        )
    name, spec = next(iter(query.items()))
    if name not in _QUERY_TYPES:
        err = EsError(
            400, "parsing_exception", f"unknown query [{name}]", line=1, col=len(name) + 13
        )
        err.body["error"]["caused_by"] = {
            "type": "named_object_not_found_exception",
            "reason": f"[1:{len(name) + 13}] unknown field [{name}]",
        }
        raise err
    if name == "bool":
        for key, clauses in spec.items():
            if key in ("minimum_should_match", "boost"):
                continue
            if key not in ("filter", "must", "must_not", "should"):
                raise EsError(400, "parsing_exception", f"[bool] query does not support [{key}]")
            for clause in clauses if isinstance(clauses, list) else [clauses]:
                _validate_query(clause)
    elif name == "range":
        for bounds in spec.values():
            for key in bounds:
                if key not in ("gte", "gt", "lte", "lt", "format", "time_zone", "boost"):
                    raise EsError(
                        400, "parsing_exception", f"[range] query does not support [{key}]"
                    )
            if "format" in bounds and bounds["format"] not in (
                "strict_date_optional_time", "date_optional_time", "epoch_millis",
                "strict_date_optional_time||epoch_millis",
            ):  # fmt: skip
                raise EsError(
                    400, "illegal_argument_exception", f"Invalid format: [{bounds['format']}]"
                )
            for key in ("gte", "gt", "lte", "lt"):
                if (
                    key in bounds
                    and isinstance(bounds[key], str)
                    and _parse_date(bounds[key]) is None
                ):
                    try:
                        float(bounds[key])
                    except ValueError:
                        raise _search_phase_error(
                            400,
                            "parse_exception",
                            f"failed to parse date field [{bounds[key]}] with format "
                            f"[{bounds.get('format', 'strict_date_optional_time||epoch_millis')}]",
                        ) from None


def _matches(query: dict[str, Any], doc: _Doc) -> bool:
    name, spec = next(iter(query.items()))
    src = doc.source
    if name == "match_all":
        return True
    if name == "match_none":
        return False
    if name == "bool":

        def clauses(key: str) -> list[dict[str, Any]]:
            c = spec.get(key, [])
            return c if isinstance(c, list) else [c]

        if not all(_matches(q, doc) for q in clauses("filter") + clauses("must")):
            return False
        if any(_matches(q, doc) for q in clauses("must_not")):
            return False
        should = clauses("should")
        if should:
            default = 0 if clauses("filter") or clauses("must") else 1
            need = int(spec.get("minimum_should_match", default))
            return sum(_matches(q, doc) for q in should) >= need
        return True
    if name == "ids":
        return doc.doc_id in spec.get("values", [])
    if name == "exists":
        return bool(_field_values(src, spec["field"]))
    if name in ("term", "match"):
        fname, value = next(iter(spec.items()))
        if isinstance(value, dict):
            value = value.get("value", value.get("query"))
        return any(_eq(v, value) for v in _field_values(src, fname))
    if name == "terms":
        fname, values = next((k, v) for k, v in spec.items() if k != "boost")
        return any(_eq(v, w) for v in _field_values(src, fname) for w in values)
    if name == "range":
        fname, bounds = next(iter(spec.items()))
        return any(_in_range(v, bounds) for v in _field_values(src, fname))
    return False


def _eq(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, str):
        try:
            return float(a) == float(b)
        except ValueError:
            return False
    return bool(a == b) or (isinstance(a, bool) and str(a).lower() == str(b).lower())


def _in_range(value: Any, bounds: dict[str, Any]) -> bool:
    checks: list[tuple[str, Callable[[Any, Any], bool]]] = [
        ("gte", lambda x, y: x >= y), ("gt", lambda x, y: x > y),
        ("lte", lambda x, y: x <= y), ("lt", lambda x, y: x < y),
    ]  # fmt: skip
    for key, op in checks:
        if key not in bounds or bounds[key] is None:
            continue
        bound = bounds[key]
        left: Any
        right: Any
        if isinstance(bound, str) and _parse_date(bound) is not None:
            left, right = _parse_date(value), _parse_date(bound)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            left, right = value, float(bound)
        else:
            left, right = str(value), str(bound)
        if left is None or right is None:
            return False
        try:
            if not op(left, right):
                return False
        except TypeError:
            return False
    return True


class _Httpd(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        addr: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        es: EsTestServer,
        ssl_ctx: ssl.SSLContext | None,
    ) -> None:
        super().__init__(addr, handler)
        self.es = es
        self.ssl_ctx = ssl_ctx

    def finish_request(self, request: Any, client_address: Any) -> None:
        """TLS handshake per connection thread, so a bad client never blocks the others."""
        if self.ssl_ctx is not None:
            try:
                request = self.ssl_ctx.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                return
        super().finish_request(request, client_address)


_COMPAT_RE = re.compile(r"compatible-with=(\d+)")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid 40 ms stalls
    server: _Httpd

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_DELETE = do_HEAD = do_GET

    def _handle(self) -> None:
        es = self.server.es
        started = time.perf_counter()
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        split = urlsplit(self.path)
        params = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        line = f"{self.command} {split.path}"
        endpoint = re.sub(r"^/[^_/][^/]*", "/{index}", split.path) or "/"
        with es._lock:
            es.stats.requests += 1
            es.stats.by_endpoint[f"{self.command} {endpoint}"] = (
                es.stats.by_endpoint.get(f"{self.command} {endpoint}", 0) + 1
            )
        compat = self._compat_version()
        fault = es.take_fault(line)
        es._local.on_sent = None
        try:
            if fault is not None and fault.kind == "delay":
                time.sleep(fault.delay)
            if fault is not None and fault.kind == "status":
                err = EsError(
                    fault.status,
                    "es_rejected_execution_exception" if fault.status == 429 else "unavailable",
                    "rejected execution (injected)" if fault.status == 429 else "injected fault",
                )
                if fault.retry_after is not None:
                    err.headers["Retry-After"] = fault.retry_after
                raise err
            self._check_headers(compat, raw)
            es.check_auth(self.headers, split.path)
            body: Any = None
            if raw and not split.path.endswith("_bulk"):
                try:
                    body = json.loads(raw)
                except ValueError as exc:
                    raise EsError(
                        400, "x_content_parse_exception", f"[1:1] Unexpected character: {exc}"
                    ) from None
            status, payload = es.dispatch(self.command, split.path, params, body, raw)
            headers: dict[str, str] = {}
        except EsError as exc:
            status, payload, headers = exc.status, exc.body, exc.headers
        except Exception as exc:  # a bug here should show as a 500, like ES would
            status, payload, headers = 500, EsError(500, "exception", repr(exc)).body, {}
        dropped = fault is not None and fault.kind == "drop"
        try:
            self._send(status, payload, headers, compat, drop=dropped)
        except OSError:  # the client gave up (timeout) before the answer was written
            dropped = True
            self.close_connection = True
        on_sent = es._local.on_sent
        if on_sent is not None and not dropped:
            with es._lock:
                on_sent()
        with es._lock:
            es.stats.serving_seconds += time.perf_counter() - started

    def _compat_version(self) -> int | None:
        for name in ("Accept", "Content-Type"):
            m = _COMPAT_RE.search(self.headers.get(name) or "")
            if m:
                return int(m.group(1))
        return None

    def _check_headers(self, compat: int | None, raw: bytes) -> None:
        es = self.server.es
        accept = self.headers.get("Accept") or ""
        ctype = self.headers.get("Content-Type") or ""
        if compat is not None and compat not in (es.major, es.major - 1):
            err = EsError(
                400,
                "media_type_header_exception",
                "Invalid media-type value on headers [Accept, Content-Type]",
            )
            err.body["error"]["caused_by"] = {
                "type": "status_exception",
                "reason": f"Accept version must be either version {es.major} or "
                f"{es.major - 1}, but found {compat}. Accept={accept}",
            }
            raise err
        versions = {int(m) for h in (accept, ctype) for m in _COMPAT_RE.findall(h)}
        if len(versions) > 1:
            raise EsError(
                400,
                "media_type_header_exception",
                "Invalid media-type value on headers [Accept, Content-Type]",
            )
        if raw and not re.search(r"application/(vnd\.elasticsearch\+)?(json|x-ndjson)", ctype):
            raise EsError(406, "media_type_header_exception",
                          f"Content-Type header [{ctype}] is not supported")  # fmt: skip

    def _send(
        self, status: int, payload: Any, headers: dict[str, str], compat: int | None, drop: bool
    ) -> None:
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("X-Elastic-Product", "Elasticsearch")
        if compat is not None:
            ctype = f"application/vnd.elasticsearch+json;compatible-with={compat}"
        else:
            ctype = "application/json"
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command == "HEAD":
            return
        if drop:
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            # RST instead of FIN: what a crashed node or a cut network looks like
            self.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            self.close_connection = True
            return
        self.wfile.write(data)
