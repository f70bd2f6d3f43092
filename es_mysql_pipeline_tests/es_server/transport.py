"""HTTP(S) transport: the threaded server, TLS per connection, strict headers, dispatch."""

from __future__ import annotations

import json
import re
import secrets
import socket
import ssl
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from es_mysql_pipeline_tests.es_server.errors import EsError

if TYPE_CHECKING:
    from es_mysql_pipeline_tests.es_server.server import EsTestServer


@dataclass(frozen=True)
class PreEncoded:
    """A part of a response already encoded as JSON text (the hits of a page, each with its
    document's source encoded once when first served)."""

    text: str


def encode(payload: Any) -> bytes:
    """``json.dumps`` of the payload, with each :class:`PreEncoded` part spliced in as is."""
    parts: dict[str, str] = {}
    nonce = secrets.token_hex(8)

    def splice(obj: Any) -> str:
        if not isinstance(obj, PreEncoded):
            raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")
        token = f"{nonce}-{len(parts)}"
        parts[f'"{token}"'] = obj.text
        return token

    text = json.dumps(payload, default=splice)
    for token, raw in parts.items():
        text = text.replace(token, raw, 1)
    return text.encode()


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
        started, cpu_started = time.perf_counter(), time.thread_time()
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
            if fault is not None and fault.kind == "shards" and isinstance(payload, dict):
                payload = _failed_shard(payload)
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
            es.stats.serving_cpu_seconds += time.thread_time() - cpu_started

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
        data = b"" if payload is None else encode(payload)
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


def _failed_shard(payload: dict[str, Any]) -> dict[str, Any]:
    """The answer as when one shard failed: its hits missing, the failure named."""
    shards = payload.get("_shards") or {"total": 1, "successful": 1}
    failure = {
        "shard": 0,
        "index": "injected",
        "reason": {"type": "node_disconnected_exception", "reason": "injected shard failure"},
    }
    payload["_shards"] = {**shards, "successful": shards["total"] - 1, "failed": 1,
                          "failures": [failure]}  # fmt: skip
    if isinstance(payload.get("hits"), dict):
        payload["hits"]["hits"] = []
    return payload
