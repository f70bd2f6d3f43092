"""The CLI's background HTTP endpoint: ``/metrics``, ``/health`` and ``/info``.

Built on the standard library's threading HTTP server and prometheus_client's own
exposition (``choose_encoder``), so ``/metrics`` speaks the Prometheus text format or
OpenMetrics exactly as prometheus_client does, while ``/health`` and ``/info`` are ours.
Each scrape runs in its own short-lived thread; the pipeline thread never waits on one.
"""

from __future__ import annotations

import errno
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from es_mysql_pipeline.errors import PipelineError
from es_mysql_pipeline.metrics.definitions import PrometheusRecorder, active_prometheus_recorder

DEFAULT_HOST = "127.0.0.1"

_SECRET_KEY_RE = re.compile(r"pass|secret|token|api_?key|credential|auth", re.IGNORECASE)


def redact(value: Any) -> Any:
    """Drop secret-looking keys and ``user:password@`` from URLs, recursively.

    Sources and sinks promise a ``describe()`` without credentials; this is the second
    line of defence because ``/info`` may be reachable from a whole network.
    """
    if isinstance(value, Mapping):
        return {str(k): redact(v) for k, v in value.items() if not _SECRET_KEY_RE.search(str(k))}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str) and "@" in value and "://" in value:
        parts = urlsplit(value)
        if parts.username or parts.password:
            host = parts.hostname or ""
            netloc = f"{host}:{parts.port}" if parts.port else host
            return urlunsplit(parts._replace(netloc=netloc))
    return value


class _Server(ThreadingHTTPServer):
    # Request threads are joined on close so stop() leaves no thread behind.
    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class MetricsServer:
    """A running endpoint; :meth:`stop` shuts it down and joins every thread it started."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        info: Mapping[str, Any],
        health: Callable[[], tuple[bool, dict[str, Any]]],
        cache_seconds: float = 0.25,
    ) -> None:
        self.registry = registry
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, bytes, str]] = {}
        self._cache_lock = threading.Lock()
        self.info = redact(dict(info))
        self.health = health
        self.started_at = time.time()
        handler = _make_handler(self)
        server_cls = _Server6 if ":" in host else _Server
        try:
            self._httpd = server_cls((host, port), handler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PipelineError(
                    f"--metrics-port {port}: {host}:{port} is already in use; choose another "
                    "port or stop the process that listens on it"
                ) from None
            raise PipelineError(
                f"--metrics-host {host} / --metrics-port {port}: cannot listen ({exc.strerror})"
            ) from None
        self.host = host
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.2},
            name=f"metrics-server-{self.port}",
            daemon=True,
        )
        self._thread.start()
        self._stopped = False

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def render(self, accept: str) -> tuple[bytes, str]:
        """The exposition for ``accept``, rendered at most once per ``cache_seconds``.

        Rendering holds the GIL for about a millisecond per hundred series; hundreds of
        scrapes a second would take that from the pipeline, so concurrent scrapers share
        one rendering. A scrape is at most ``cache_seconds`` stale.
        """
        encoder, content_type = choose_encoder(accept)
        with self._cache_lock:
            now = time.monotonic()
            cached = self._cache.get(content_type)
            if cached is None or now - cached[0] > self.cache_seconds:
                cached = (now, encoder(self.registry), content_type)
                self._cache[content_type] = cached
        return cached[1], cached[2]

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, close the socket and join the threads (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _make_handler(server: MetricsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "es-mysql-pipeline-metrics"
        timeout = 10  # a client that connects and never speaks cannot pin a thread

        def do_GET(self) -> None:
            path = urlsplit(self.path).path.rstrip("/") or "/"
            if path == "/metrics":
                payload, content_type = server.render(self.headers.get("Accept", ""))
                self._send(200, content_type, payload)
            elif path == "/health":
                healthy, body = server.health()
                body = {"status": "healthy" if healthy else "unhealthy", **body}
                body["uptime_seconds"] = round(time.time() - server.started_at, 3)
                self._json(200 if healthy else 503, body)
            elif path == "/info":
                self._json(200, server.info)
            elif path == "/":
                self._send(200, "text/plain; charset=utf-8", b"/metrics /health /info\n")
            else:
                self._json(404, {"error": f"no such path {path}; try /metrics /health /info"})

        def _json(self, status: int, body: Mapping[str, Any]) -> None:
            self._send(status, "application/json", json.dumps(body).encode())

        def _send(self, status: int, content_type: str, payload: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            """Scrapes every second would flood stderr; stay quiet."""

    return Handler


def recorder_health(
    recorder: PrometheusRecorder | None, pipeline_id: str
) -> Callable[[], tuple[bool, dict[str, Any]]]:
    """Health from the recorder's state: unhealthy once the pipeline entered ``error``.

    With ``recorder=None`` the recorder installed at request time is used, so the server
    can start before the CLI enables metrics.
    """

    def health() -> tuple[bool, dict[str, Any]]:
        rec = recorder or active_prometheus_recorder()
        state = rec.current_state if rec is not None else "stopped"
        return state != "error", {"state": state, "pipeline_id": pipeline_id}

    return health


def start_metrics_server(
    host: str = DEFAULT_HOST,
    port: int = 0,
    registry: CollectorRegistry | None = None,
    info: Mapping[str, Any] | None = None,
    *,
    recorder: PrometheusRecorder | None = None,
    cache_seconds: float = 0.25,
) -> MetricsServer:
    """Serve ``registry`` on ``host:port`` in a background thread (``port=0``: any free one).

    Args:
        host: ``127.0.0.1`` by default; ``0.0.0.0`` to be scraped from outside a container.
        port: TCP port; a port in use raises :class:`PipelineError` naming the flag.
        registry: Defaults to ``recorder.registry``.
        info: What ``/info`` shows (version, pipeline_id, source/sink type and target);
            secret-looking keys and URL credentials are removed.
        recorder: Its state drives ``/health`` (503 after the pipeline entered ``error``).
        cache_seconds: Scrapes within this time share one rendering (0 turns it off).
    """
    info = dict(info or {})
    if registry is None:
        if recorder is None:
            raise ValueError("start_metrics_server needs a registry or a recorder")
        registry = recorder.registry
    pipeline_id = str(info.get("pipeline_id", recorder.pipeline_id if recorder else "default"))
    return MetricsServer(
        host, port, registry, info, recorder_health(recorder, pipeline_id), cache_seconds
    )
