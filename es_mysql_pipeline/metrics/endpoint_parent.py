"""The CLI's HTTP endpoint: ``/metrics``, ``/health`` and ``/info``, served by a child process.

The pipeline is CPU-bound pure Python. An HTTP server thread inside it would need the GIL
for every step of every scrape (accept, header parsing, send), each hand-off waiting up to
the 5 ms switch interval: hundreds of scrapes a second were neither served nor free (the
pipeline ran 6-13 % slower). So the serving happens in a small standard-library-only
process (:mod:`es_mysql_pipeline.metrics.endpoint_child`), and this process keeps only
what needs its memory:

* the prometheus_client registry, rendered here with prometheus_client's own
  ``choose_encoder`` (text format, or OpenMetrics when ``Accept`` asks for it) by one
  thread that sleeps on the pipe to the child. It renders only when a scrape comes and
  the child's copy for that content type is older than ``cache_seconds``, so at most
  once per ``cache_seconds`` per content type, and never while nobody scrapes;
* ``/health``: the child asks for it when its copy is older than ``cache_seconds``, and
  the recorder's state changes are sent to it as they happen;
* ``/info``: redacted here, sent once.

This process binds the socket and passes it to the child, so ``port=0`` and a port in
use behave as before. The child exits when this process stops it, exits or is killed; if
the child dies, the pipeline goes on with a warning.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from es_mysql_pipeline.errors import PipelineError
from es_mysql_pipeline.metrics import endpoint_child as proto
from es_mysql_pipeline.metrics.catalog import PrometheusRecorder, active_prometheus_recorder

DEFAULT_HOST = "127.0.0.1"
#: How long :func:`start_metrics_server` waits for the child to say it serves.
START_TIMEOUT = 15.0
#: How long a state change waits for the child to acknowledge it (then goes on anyway).
PUSH_TIMEOUT = 1.0

log = logging.getLogger(__name__)

_SECRET_KEY_RE = re.compile(r"pass|secret|token|api_?key|credential|auth", re.IGNORECASE)
_CHILD = Path(proto.__file__).resolve()


def strip_credentials(value: Any) -> Any:
    """Drop secret-looking keys and ``user:password@`` from URLs, recursively.

    Sources and sinks promise a ``describe()`` without credentials; this is the second
    line of defence because ``/info`` may be reachable from a whole network.
    """
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
        if parts.username or parts.password:
            host = parts.hostname or ""
            netloc = f"{host}:{parts.port}" if parts.port else host
            return urlunsplit(parts._replace(netloc=netloc))
    return value


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``; errors name the CLI flags."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PipelineError(
                f"--metrics-port {port}: {host}:{port} is already in use; choose another "
                "port or stop the process that listens on it"
            ) from None
        raise PipelineError(
            f"--metrics-host {host} / --metrics-port {port}: cannot listen ({exc.strerror})"
        ) from None
    return sock


class MetricsServer:
    """A running endpoint; :meth:`stop` ends the child process and joins the pipe thread.

    Args:
        host: Address to listen on (``:`` in it: IPv6).
        port: TCP port, ``0`` for any free one (:attr:`port` is the bound one).
        registry: What ``/metrics`` shows.
        info: What ``/info`` shows, redacted here.
        health: ``(healthy, body)`` for ``/health``; asked at most once per
            ``cache_seconds`` while somebody asks for ``/health``.
        cache_seconds: Freshness of the child's copies (0: ask this process every time).
        recorder: When given, each of its state changes reaches ``/health`` at once.

    Attributes:
        pid: The child process that serves HTTP.
        renders: How many times this process rendered the registry (for the tests and
            ``benchmarks/metrics_overhead.py``).
    """

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        info: Mapping[str, Any],
        health: Callable[[], tuple[bool, dict[str, Any]]],
        cache_seconds: float = 0.25,
        *,
        recorder: PrometheusRecorder | None = None,
    ) -> None:
        self.registry = registry
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, bytes, str]] = {}
        self._cache_lock = threading.Lock()
        self.info = strip_credentials(dict(info))
        self.health = health
        self.started_at = time.time()
        self.renders = 0
        self._stopped = False
        self._alive = False
        self._ready = threading.Event()
        self._served = False  # the child said it serves (a death after that is a warning)
        self._write_lock = threading.Lock()
        self._acks: dict[int, threading.Event] = {}
        self._seq = itertools.count(1)
        self._recorder: PrometheusRecorder | None = None
        sock = _listen(host, port)
        self.host = host
        self.port = int(sock.getsockname()[1])
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", str(_CHILD), "--listen-fd", str(sock.fileno())],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                pass_fds=(sock.fileno(),),
            )
        finally:
            sock.close()  # the child has its own copy: when it exits, the port is free
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._to_child = self._proc.stdin
        self._from_child = self._proc.stdout
        self.pid = self._proc.pid
        self._alive = True
        config = {
            "info": self.info,
            "cache_seconds": cache_seconds,
            "started_at": self.started_at,
            "parent_pid": os.getpid(),
        }
        self._send(proto.CONFIG, json.dumps(config).encode())
        self._thread = threading.Thread(
            target=self._serve_child, name=f"metrics-server-{self.port}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT) or not self._alive:
            self._stopped = True
            self._shutdown(timeout=1.0)
            raise PipelineError(
                f"--metrics-port {self.port}: the metrics endpoint process did not start "
                f"(exit code {self._proc.returncode})"
            )
        if recorder is not None:
            self._recorder = recorder
            recorder.add_state_listener(self._state_changed)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def render(self, accept: str) -> tuple[bytes, str]:
        """The exposition for ``accept``, rendered at most once per ``cache_seconds``.

        The child asks only when its own copy is stale; this cache makes its questions
        for different Accept headers of the same content type share one rendering.
        """
        _, body, content_type = self._render(accept)
        return body, content_type

    def _render(self, accept: str) -> tuple[float, bytes, str]:
        encoder, content_type = choose_encoder(accept)
        with self._cache_lock:
            now = time.monotonic()
            cached = self._cache.get(content_type)
            if cached is None or now - cached[0] > self.cache_seconds:
                cached = (now, encoder(self.registry), content_type)
                self._cache[content_type] = cached
                self.renders += 1
        return cached

    # -- the pipe to the child -----------------------------------------------------------
    def _send(self, kind: bytes, payload: bytes = b"") -> bool:
        with self._write_lock:
            if not self._alive:
                return False
            try:
                proto.write_frame(self._to_child, kind, payload)
            except (OSError, ValueError):
                self._alive = False
                return False
        return True

    def _health_frame(self, seq: int | None) -> bytes:
        try:
            healthy, body = self.health()
        except Exception:  # a broken health callable must not end the pipe thread
            log.exception("metrics endpoint: the health check failed")
            healthy, body = False, {"state": "unknown"}
        msg = {"healthy": healthy, "body": body, "at": time.monotonic(), "seq": seq}
        return json.dumps(msg).encode()

    def _metrics_frame(self, accept: str) -> bytes:
        try:
            rendered_at, body, content_type = self._render(accept)
            status = 200
        except Exception as exc:
            log.exception("metrics endpoint: rendering /metrics failed")
            rendered_at, status = time.monotonic(), 500
            body, content_type = f"{exc}\n".encode(), "text/plain; charset=utf-8"
        meta = {
            "accept": accept,
            "status": status,
            "content_type": content_type,
            "rendered_at": rendered_at,
        }
        return json.dumps(meta).encode() + b"\n" + body

    def _serve_child(self) -> None:
        """Answer the child until its pipe closes (sleeps on the pipe in between)."""
        try:
            while (frame := proto.read_frame(self._from_child)) is not None:
                kind, payload = frame
                if kind == proto.ASK_METRICS:
                    accept = payload.decode("latin-1")
                    self._send(proto.METRICS, self._metrics_frame(accept))
                elif kind == proto.ASK_HEALTH:
                    self._send(proto.HEALTH, self._health_frame(None))
                elif kind == proto.ACK:
                    event = self._acks.get(int(payload))
                    if event is not None:
                        event.set()
                elif kind == proto.READY:
                    self._served = True
                    self._ready.set()
        except (OSError, ValueError):
            pass
        finally:
            self._alive = False
            self._ready.set()
            for event in list(self._acks.values()):
                event.set()
        if self._served and not self._stopped:
            code = self._proc.poll()
            log.warning(
                "the metrics endpoint process (pid %s) exited unexpectedly (exit code %s); "
                "%s is no longer served, the pipeline goes on",
                self.pid,
                code,
                self.url,
            )

    def _state_changed(self, state: str) -> None:
        """Recorder listener: send the new health now, so /health never lags a change."""
        if self._stopped or not self._alive:
            return
        seq = next(self._seq)
        event = self._acks[seq] = threading.Event()
        try:
            if self._send(proto.HEALTH, self._health_frame(seq)):
                event.wait(PUSH_TIMEOUT)
        except Exception:  # the pipeline's state change must never fail because of us
            log.exception("metrics endpoint: could not send the new state")
        finally:
            self._acks.pop(seq, None)

    # -- lifecycle -----------------------------------------------------------------------
    def _shutdown(self, timeout: float) -> None:
        if self._write_lock.acquire(timeout=timeout):
            try:
                with contextlib.suppress(OSError, ValueError):
                    if self._alive:
                        proto.write_frame(self._to_child, proto.QUIT)
                    self._to_child.close()
                self._alive = False
            finally:
                self._write_lock.release()
        else:  # a write is stuck: the child stopped reading its pipe
            self._proc.kill()
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._thread.join(timeout)
        for pipe in (self._to_child, self._from_child):
            with contextlib.suppress(OSError, ValueError):
                pipe.close()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the child (the port is free when this returns) and join the pipe thread.

        Idempotent; never raises because the child already died.
        """
        if self._stopped:
            return
        self._stopped = True
        if self._recorder is not None:
            self._recorder.remove_state_listener(self._state_changed)
        self._shutdown(timeout)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def recorder_health(
    recorder: PrometheusRecorder | None, pipeline_id: str
) -> Callable[[], tuple[bool, dict[str, Any]]]:
    """Health from the recorder's state: unhealthy once the pipeline entered ``error``.

    With ``recorder=None`` the recorder installed at request time is used, so the server
    can start before the CLI enables metrics.
    """

    def health() -> tuple[bool, dict[str, Any]]:
        installed = recorder or active_prometheus_recorder()
        state = installed.current_state if installed is not None else "stopped"
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
    """Serve ``registry`` on ``host:port`` from a child process (``port=0``: any free one).

    Args:
        host: ``127.0.0.1`` by default; ``0.0.0.0`` to be scraped from outside a container.
        port: TCP port; a port in use raises :class:`PipelineError` naming the flag.
        registry: Defaults to ``recorder.registry``.
        info: What ``/info`` shows (version, pipeline_id, source/sink type and target);
            secret-looking keys and URL credentials are removed.
        recorder: Its state drives ``/health`` (503 after the pipeline entered ``error``),
            and each state change reaches the endpoint at once.
        cache_seconds: Scrapes within this time share one rendering and one health answer
            (0: every scrape asks the pipeline).
    """
    info = dict(info or {})
    if registry is None:
        if recorder is None:
            raise ValueError("start_metrics_server needs a registry or a recorder")
        registry = recorder.registry
    pipeline_id = str(info.get("pipeline_id", recorder.pipeline_id if recorder else "default"))
    return MetricsServer(
        host,
        port,
        registry,
        info,
        recorder_health(recorder, pipeline_id),
        cache_seconds,
        recorder=recorder,
    )
