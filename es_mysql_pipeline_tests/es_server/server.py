"""The test server: REST endpoints for indices, bulk, mapping, count, PIT and search."""

from __future__ import annotations

import base64
import bisect
import copy
import fnmatch
import json
import re
import ssl
import threading
import time
import uuid
import zlib
from collections.abc import Iterable, Sequence
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from es_mysql_pipeline_tests.es_server.errors import EsError, _search_phase_error
from es_mysql_pipeline_tests.es_server.faults import Fault, Stats
from es_mysql_pipeline_tests.es_server.mapping import _parse_time_value
from es_mysql_pipeline_tests.es_server.search import (
    _after_value,
    _filter_source,
    _in_slice,
    _Match,
    _matches,
    _parse_sort,
    _ShardDocOrder,
    _shards,
    _sort_key,
    _sort_value,
    _source_filter,
    _unsort,
    _validate_query,
)
from es_mysql_pipeline_tests.es_server.store import _Doc, _Index, _Pit, _ShardSnap
from es_mysql_pipeline_tests.es_server.transport import PreEncoded, _Handler, _Httpd

_json_str = json.encoder.encode_basestring_ascii


def _json_value(value: Any) -> str:
    """``json.dumps`` of one sort value, without its per-call cost for the common types."""
    if isinstance(value, str):
        return str(_json_str(value))
    if type(value) is int:
        return str(value)
    return json.dumps(value)


MAX_RESULT_WINDOW = 10_000
_SEARCH_BODY_KEYS = {
    "query", "size", "from", "sort", "search_after", "pit", "slice", "_source",
    "track_total_hits", "timeout", "version", "seq_no_primary_term", "track_scores",
    "stored_fields", "terminate_after", "min_score", "explain",
}  # fmt: skip
_SEARCH_PARAMS = {
    "size", "from", "_source", "_source_includes", "_source_excludes",
    "track_total_hits", "allow_partial_search_results", "filter_path", "typed_keys",
    "rest_total_hits_as_int", "ignore_unavailable", "expand_wildcards", "allow_no_indices",
    "request_cache", "pretty", "human", "error_trace", "timeout", "preference",
}  # fmt: skip
_MAPPING_PARAMS = {
    "allow_no_indices", "expand_wildcards", "ignore_unavailable", "local", "master_timeout",
    "filter_path", "pretty", "human", "error_trace",
}  # fmt: skip
_INDEX_NAME_BAD = re.compile(r'[\\/*?"<>| ,#:A-Z]')


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
        default_shards: int = 1,
    ) -> None:
        self.version = version
        self.major = int(version.split(".")[0])
        self.certfile = certfile
        self.keyfile = keyfile
        #: the token after ``ApiKey `` that requests must carry (``None``: no API key auth)
        self.api_key = api_key
        self.basic_auth = basic_auth
        self.default_shards = default_shards
        #: indices where the authenticated user may not read (403)
        self.deny_read: set[str] = set()
        #: indices whose mapping the user may not see (``read`` without
        #: ``view_index_metadata``: searches work, GET _mapping is 403)
        self.deny_metadata: set[str] = set()
        self.stats = Stats()
        self.indices: dict[str, _Index] = {}
        self.pits: dict[str, _Pit] = {}
        self.faults: list[Fault] = []
        self._lock = threading.RLock()
        #: per PIT, query, sort and slice: the matches in sort order, and their sort keys
        self._match_cache: dict[
            tuple[Any, ...], tuple[Sequence[_Match], Sequence[tuple[Any, ...]]]
        ] = {}
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
        sleeps ``delay`` seconds before answering; ``expire`` drops every PIT
        just before handling the request; ``shards`` answers as when a shard failed (200,
        ``_shards.failed`` 1, no hits).
        """
        if kind not in {"status", "drop", "delay", "expire", "shards"}:
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
        """Every open PIT disappears, as after ``keep_alive`` ran out."""
        with self._lock:
            self.pits.clear()
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
            self._drop_pit(pit.pit_uuid)
            self.stats.pits_closed += 1
            return 200, {"succeeded": True, "num_freed": len(pit.shards)}

    def _drop_pit(self, pit_uuid: str) -> None:
        """The PIT and its cached matches, which hold its shard snapshots: kept, every closed
        PIT's snapshots stayed alive for the collector to walk (seen: a third 1M-doc read
        cost the server 2.9 s of CPU, the first 1.1 s)."""
        del self.pits[pit_uuid]
        for key in [k for k in self._match_cache if k[0] == pit_uuid]:
            del self._match_cache[key]

    def _expire(self) -> None:
        now = time.monotonic()
        for key in [k for k, p in self.pits.items() if p.expires < now]:
            self._drop_pit(key)

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
        if pit_req is not None and expr is not None:
            raise EsError(
                400,
                "action_request_validation_exception",
                "Validation Failed: 1: [indices] cannot be used with point in time. Do not "
                "specify any index with point in time.;",
            )
        size = int(params.get("size", body.get("size", 10)))
        from_ = int(params.get("from", body.get("from", 0)))
        if size < 0:
            raise EsError(
                400,
                "illegal_argument_exception",
                f"[size] parameter cannot be negative, found [{size}]",
            )
        if from_ + size > MAX_RESULT_WINDOW:
            raise _search_phase_error(
                400,
                "illegal_argument_exception",
                f"Result window is too large, from + size must be less than or equal to: "
                f"[{MAX_RESULT_WINDOW}] but was [{from_ + size}]. See the scroll api for a more "
                "efficient way to request large data sets. This limit can be set by changing "
                "the [index.max_result_window] index level setting.",
            )
        sort = _parse_sort(body.get("sort"))
        search_after = body.get("search_after")
        if search_after is not None and not sort:
            raise _search_phase_error(
                400, "illegal_argument_exception", "Sort must contain at least one field."
            )
        slice_ = body.get("slice")
        if slice_ is not None:
            if pit_req is None:
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
            with self._lock:
                self.stats.slices_seen.add((int(slice_["id"]), int(slice_["max"])))
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
                if newest is not None and pit_req["id"] not in (newest, pit.sending.get(slice_key)):
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
            cached = self._match_cache.get(cache_key) if pit else None
        if cached is None:
            cached = self._matching(snaps, query, sort, slice_)
            if pit is not None:
                with self._lock:
                    if len(self._match_cache) > 64:
                        self._match_cache.clear()
                    self._match_cache[cache_key] = cached
        matches, match_keys = cached
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
            start = bisect.bisect_right(match_keys, after_key)
        total = len(matches)

        window = matches[start + from_ : start + from_ + size]
        resp: dict[str, Any] = {
            "took": int((time.perf_counter() - started) * 1000),
            "timed_out": False,
            "_shards": _shards(len(snaps)),
            "hits": {
                "max_score": None,
                "hits": self._page_hits(window, includes, excludes, sort),
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
            # counted as received only once the whole response went out (not on a drop); the
            # client may already use it while this thread is still marking it delivered
            pit.sending[slice_key] = new_id
            self._local.on_sent = lambda: pit.delivered.__setitem__(slice_key, new_id)
            resp = {"pit_id": new_id, **resp}
        return 200, resp

    def _matching(
        self,
        snaps: list[_ShardSnap],
        query: dict[str, Any],
        sort: list[tuple[str, str]],
        slice_: dict[str, Any] | None,
    ) -> tuple[Sequence[_Match], Sequence[tuple[Any, ...]]]:
        """The matches in sort order, and their sort keys.

        Shards outside a shard-level slice are skipped whole, and a plain ``_shard_doc``
        sort (a sliced PIT read's) sorts nothing: this runs before a slice's first page,
        which real Elasticsearch answers in milliseconds."""
        parts: list[tuple[int, Sequence[_Doc], str]] = []
        for req_index, snap in enumerate(snaps):
            docs: Sequence[_Doc] = snap.docs
            if slice_ is not None:
                if int(slice_["max"]) <= snap.nshards:  # whole shards: any doc decides
                    if docs and not _in_slice(snap, docs[0], slice_):
                        continue
                else:
                    docs = [doc for doc in docs if _in_slice(snap, doc, slice_)]
            if query != {"match_all": {}}:
                docs = [doc for doc in docs if _matches(query, doc)]
            parts.append((req_index << 32, docs, snap.index))
        if sort == [("_shard_doc", "asc")]:
            view = _ShardDocOrder(parts)
            return view, view.keys()
        out: list[_Match] = []
        for base, docs, index in parts:
            for doc in docs:
                values = [_sort_value(s, doc, base | doc.seq) for s in sort]
                out.append((_sort_key(sort, values), doc, index))
        out.sort(key=lambda m: m[0])
        return out, [m[0] for m in out]

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

    def _page_hits(
        self,
        window: Sequence[_Match],
        includes: list[str] | None,
        excludes: list[str],
        sort: list[tuple[str, str]],
    ) -> list[dict[str, Any]] | PreEncoded:
        """The page's hits; with whole sources, as JSON text around each source's cached text."""
        if includes is not None or excludes:
            return [self._hit(m, includes, excludes, sort) for m in window]
        if sort == [("_shard_doc", "asc")]:  # the sliced PIT reader's sort: one int per hit
            return PreEncoded(
                "["
                + ",".join(
                    [
                        f'{{"_index":{_json_str(index)},"_id":{_json_str(doc.doc_id)},'
                        f'"_score":null,"_source":{doc.source_json()},"sort":[{key[0][1]}]}}'
                        for key, doc, index in window
                    ]
                )
                + "]"
            )
        texts = []
        for key, doc, index in window:
            tail = ""
            if sort:
                values = ",".join(
                    _json_value(_unsort(s, v)) for s, v in zip(sort, key, strict=True)
                )
                tail = f',"sort":[{values}]'
            texts.append(
                f'{{"_index":{_json_str(index)},"_id":{_json_str(doc.doc_id)},"_score":null,'
                f'"_source":{doc.source_json()}{tail}}}'
            )
        return PreEncoded("[" + ",".join(texts) + "]")
