"""The CLI's metrics: its recorder, and ``/metrics``, ``/health`` and ``/info`` served on a
daemon thread while it runs (:func:`start_cli_metrics`).

``/metrics`` is prometheus_client's WSGI app on its threading server (what its
``start_http_server`` serves): rendered once per scrape, text or OpenMetrics as asked.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from es_mysql_pipeline import __version__
from es_mysql_pipeline.errors import PipelineError
from es_mysql_pipeline.metrics.catalog import PrometheusRecorder, active_prometheus_recorder
from es_mysql_pipeline.metrics.recorder import set_recorder

DEFAULT_HOST = "127.0.0.1"

Health = Callable[[], tuple[bool, dict[str, Any]]]

_SECRET_KEY_RE = re.compile(r"pass|secret|token|api_?key|credential|auth", re.IGNORECASE)


def strip_credentials(value: Any) -> Any:
    """Drop secret-looking keys and ``user:password@`` from URLs, recursively: a second
    line of defence after ``describe()``, as ``/info`` may be reachable from a network."""
    if isinstance(value, Mapping):
        return {
            str(k): strip_credentials(v)
            for k, v in value.items()
            if not _SECRET_KEY_RE.search(str(k))
        }
    if isinstance(value, (list, tuple)):
        return [strip_credentials(v) for v in value]
    if isinstance(value, str) and "@" in value and "://" in value:
        parts = urlsplit(value)
        if "@" in parts.netloc:  # the host and port as written: an IPv6 host keeps its []
            return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    return value


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would flood stderr; stay quiet."""


class _Server(ThreadingWSGIServer):
    """A daemon thread per request (a slow client holds up nobody), IPv6 if the host is."""

    def __init__(self, address: tuple[str, int], handler: type[WSGIRequestHandler]) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A scraper that hung up mid-answer is not worth a traceback on stderr."""


class MetricsServer:
    """``registry`` on ``/metrics``, ``info`` (redacted) on ``/info``, ``health()`` asked at
    each ``/health``; ``port=0`` binds any free port (:attr:`port` is the bound one)."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        info: Mapping[str, Any],
        health: Health,
    ) -> None:
        self.info = strip_credentials(dict(info))
        self.health = health
        self.started_at = time.time()
        self._metrics_app = make_wsgi_app(registry)
        self._stopped = False
        try:
            self._server = make_server(host, port, self._app, _Server, _QuietHandler)
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
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"metrics-server-{self.port}", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "").rstrip("/") or "/"
        if path == "/metrics":
            return self._metrics_app(environ, start_response)
        if path == "/":
            start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"/metrics /health /info\n"]
        status, body = "200 OK", self.info
        if path == "/health":
            healthy, state = self.health()
            status = "200 OK" if healthy else "503 Service Unavailable"
            body = {"status": "healthy" if healthy else "unhealthy", **state}
            body["uptime_seconds"] = round(time.time() - self.started_at, 3)
        elif path != "/info":
            status = "404 Not Found"
            body = {"error": f"no such path {path}; try /metrics /health /info"}
        payload = json.dumps(body).encode()
        start_response(
            status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
        )
        return [payload]

    def stop(self, timeout: float = 5.0) -> None:
        """Close the port and join the serving thread. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        # A listening socket shut down wakes serve_forever's select at once (Linux), so
        # shutdown() need not wait for the next poll half a second away.
        with contextlib.suppress(OSError):
            self._server.socket.shutdown(socket.SHUT_RDWR)
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_metrics_server(
    host: str = DEFAULT_HOST,
    port: int = 0,
    registry: CollectorRegistry | None = None,
    info: Mapping[str, Any] | None = None,
    *,
    recorder: PrometheusRecorder | None = None,
) -> MetricsServer:
    """Serve ``registry`` (default ``recorder.registry``) on ``host:port`` from a daemon thread.

    A port in use raises :class:`PipelineError` naming the flag. ``/health`` answers 503 once
    the pipeline entered ``error``: the state of ``recorder``, else of the recorder installed
    at request time (the server can start before the CLI enables metrics).
    """
    info = dict(info or {})
    if registry is None:
        if recorder is None:
            raise ValueError("start_metrics_server needs a registry or a recorder")
        registry = recorder.registry
    pipeline_id = str(info.get("pipeline_id", recorder.pipeline_id if recorder else "default"))

    def health() -> tuple[bool, dict[str, Any]]:
        installed = recorder or active_prometheus_recorder()
        state = installed.current_state if installed is not None else "stopped"
        return state != "error", {"state": state, "pipeline_id": pipeline_id}

    return MetricsServer(host, port, registry, info, health)


def _describe(resource: Any) -> dict[str, str]:
    describe = getattr(resource, "describe", None)
    return dict(describe()) if callable(describe) else {"type": type(resource).__name__}


@dataclass
class CliMetrics:
    """The CLI's recorder and endpoint: it calls succeeded() or failed(), then stop()."""

    recorder: PrometheusRecorder
    server: MetricsServer
    _started: float = field(default_factory=time.perf_counter)

    def succeeded(self) -> None:
        self.recorder.duration("run", time.perf_counter() - self._started)
        self.recorder.success()
        self.recorder.state("stopped")

    def failed(self) -> None:
        self.recorder.duration("run", time.perf_counter() - self._started)
        self.recorder.state("error")

    def stop(self) -> None:
        """Stop the endpoint (port closed, thread joined) and turn metrics off again."""
        self.server.stop()
        set_recorder(None)


def start_cli_metrics(args: argparse.Namespace, resources: dict[str, Any]) -> CliMetrics:
    """Install the process recorder and start ``/metrics`` on ``--metrics-host:--metrics-port``
    (a port in use raises a one-line :class:`PipelineError` naming ``--metrics-port``)."""
    info = {
        "version": __version__,
        "pipeline_id": args.pipeline_id,
        "source": _describe(resources.get("source")),
        "sink": _describe(resources.get("sink")),
    }
    types = {f"{kind}_type": info[kind].get("type", "unknown") for kind in ("source", "sink")}
    recorder = PrometheusRecorder(args.pipeline_id, **types)
    set_recorder(recorder)
    try:
        server = start_metrics_server(
            args.metrics_host, args.metrics_port, recorder.registry, info, recorder=recorder
        )
    except Exception:
        set_recorder(None)
        raise
    recorder.state("running")
    return CliMetrics(recorder, server)
