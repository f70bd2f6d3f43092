"""The process that serves the CLI's ``/metrics``, ``/health`` and ``/info``.

Why a process: the pipeline is CPU-bound pure Python. An HTTP server thread inside it has
to win the GIL several times per scrape (accept, parse the headers, send), and every
hand-off can wait for the 5 ms switch interval, so hundreds of scrapes a second both went
unserved and slowed the pipeline. Here the HTTP work runs under this process's own GIL.

:mod:`es_mysql_pipeline.metrics.endpoint_parent` binds the socket (so a port in use is reported
by the CLI, synchronously), starts this file with ``python -I -S`` (standard library
only: nothing from site-packages, no Dagster, no prometheus_client), hands over the
listening socket and talks to it over the child's stdin and stdout:

* ``/metrics``: the pipeline renders the exposition (prometheus_client's
  ``choose_encoder`` picks the text format or OpenMetrics from ``Accept``). Scrapes that
  arrive while the copy for their content type is younger than ``cache_seconds`` get the
  copy without the pipeline doing anything; otherwise one request goes up the pipe and
  every concurrent scrape for that content type waits for the same answer (at most
  ``cache_seconds`` when an older copy exists: then they get that one).
* ``/health``: answered from the last state the pipeline sent, asked again when older
  than ``cache_seconds``; the pipeline also sends each state change as it happens.
* ``/info``: sent once at start (already redacted).

The process exits when its stdin closes (the pipeline stopped it, exited or was killed
with ``kill -9``) or when its parent process is gone, so no orphan keeps the port.

Frames in both directions: one kind byte, a 4-byte big-endian length, the payload.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import IO, Any
from urllib.parse import urlsplit

_HEADER = struct.Struct(">cI")

# Pipeline -> endpoint process.
CONFIG = b"C"  # JSON: info, cache_seconds, started_at, parent_pid
METRICS = b"M"  # JSON header (accept, status, content_type, rendered_at), b"\n", body
HEALTH = b"H"  # JSON: healthy, body, at, seq (seq set: a pushed change to acknowledge)
QUIT = b"Q"
# Endpoint process -> pipeline.
READY = b"S"  # JSON: pid
ASK_METRICS = b"m"  # the Accept header
ASK_HEALTH = b"h"
ACK = b"a"  # the seq of a pushed health change

#: How long a scrape without any copy waits for the pipeline before it gets 503, and
#: after which an unanswered question is asked again.
REPLY_TIMEOUT = 5.0
#: Longer Accept headers are cut: they only choose between two formats.
MAX_ACCEPT = 1024


def write_frame(out: IO[bytes], kind: bytes, payload: bytes = b"") -> None:
    out.write(_HEADER.pack(kind, len(payload)) + payload)
    out.flush()


def read_frame(src: IO[bytes]) -> tuple[bytes, bytes] | None:
    """The next frame, or ``None`` at end of file."""
    header = src.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    kind, length = _HEADER.unpack(header)
    payload = src.read(length) if length else b""
    if len(payload) < length:
        return None
    return kind, payload


class _Pending:
    """One question to the pipeline that every concurrent scrape asking it shares."""

    def __init__(self, asked_at: float) -> None:
        self.asked_at = asked_at
        self.done = threading.Event()
        self.result: Any = None


class Endpoint:
    """The state the HTTP threads share: caches, pending questions, the pipe out."""

    def __init__(self, config: dict[str, Any], send: Callable[[bytes, bytes], None]) -> None:
        self.cache_seconds = float(config["cache_seconds"])
        self.started_at = float(config["started_at"])
        self.info_body = json.dumps(config["info"]).encode()
        self._send = send
        self._lock = threading.Lock()
        self._content_type_of: dict[str, str] = {}  # Accept header -> content type
        self._metrics: dict[str, tuple[float, bytes]] = {}  # content type -> (at, body)
        self._health: tuple[float, bool, dict[str, Any]] | None = None
        self._pending: dict[str, _Pending] = {}
        self._closed = False

    def _fresh(self, at: float) -> bool:
        return self.cache_seconds > 0 and time.monotonic() - at <= self.cache_seconds

    def _wait_for(self, have_copy: bool) -> float:
        """How long a scrape waits for the pipeline: not long when a stale copy is there.

        A thread that wakes up in the pipeline must win the GIL back, and a pipeline that
        releases it often for short system calls can keep it waiting for seconds (the
        waiter's 5 ms switch timer restarts on every hand-off). Scrapes do not wait for
        that: after ``cache_seconds`` they get the newest copy there is.
        """
        if have_copy and self.cache_seconds > 0:
            return max(self.cache_seconds, 0.05)
        return REPLY_TIMEOUT

    def _ask(self, key: str, kind: bytes, payload: bytes, wait: float) -> Any:
        """The pipeline's answer to ``key``, or ``None`` if it did not come within ``wait``.

        Concurrent scrapes share one question; an unanswered one is asked again after
        ``REPLY_TIMEOUT``.
        """
        now = time.monotonic()
        with self._lock:
            if self._closed:
                return None
            pending = self._pending.get(key)
            first = pending is None or now - pending.asked_at > REPLY_TIMEOUT
            if first:
                pending = self._pending[key] = _Pending(now)
        assert pending is not None
        if first:
            self._send(kind, payload)
        pending.done.wait(wait)
        return pending.result

    def _answer(self, key: str, result: Any) -> None:
        with self._lock:
            pending = self._pending.pop(key, None)
        if pending is not None:
            pending.result = result
            pending.done.set()

    # -- what the HTTP handler asks ------------------------------------------------------
    def metrics(self, accept: str) -> tuple[int, str, bytes]:
        accept = accept[:MAX_ACCEPT]
        with self._lock:
            content_type = self._content_type_of.get(accept)
            cached = self._metrics.get(content_type) if content_type else None
        if content_type and cached and self._fresh(cached[0]):
            return 200, content_type, cached[1]
        payload = accept.encode("latin-1", "replace")
        answer = self._ask("m" + accept, ASK_METRICS, payload, self._wait_for(bool(cached)))
        if answer is not None:
            return answer
        if content_type and cached:  # the pipeline is slow to answer: the newest copy
            return 200, content_type, cached[1]
        return 503, "text/plain; charset=utf-8", b"metrics not available right now\n"

    def health(self) -> tuple[int, bytes]:
        with self._lock:
            health = self._health
        if health is None or not self._fresh(health[0]):
            self._ask("h", ASK_HEALTH, b"", self._wait_for(health is not None))
            with self._lock:
                health = self._health or health
        if health is None:
            healthy, body = False, {"state": "unknown"}
        else:
            _, healthy, body = health
        out: dict[str, Any] = {"status": "healthy" if healthy else "unhealthy", **body}
        out["uptime_seconds"] = round(time.time() - self.started_at, 3)
        return (200 if healthy else 503), json.dumps(out).encode()

    # -- what the pipeline sends ---------------------------------------------------------
    def on_frame(self, kind: bytes, payload: bytes) -> None:
        if kind == METRICS:
            head, _, body = payload.partition(b"\n")
            meta = json.loads(head)
            accept, status, content_type = meta["accept"], meta["status"], meta["content_type"]
            if status == 200:
                with self._lock:
                    if len(self._content_type_of) >= 256:
                        self._content_type_of.clear()
                    self._content_type_of[accept] = content_type
                    self._metrics[content_type] = (float(meta["rendered_at"]), body)
            self._answer("m" + accept, (status, content_type, body))
        elif kind == HEALTH:
            msg = json.loads(payload)
            with self._lock:
                self._health = (float(msg["at"]), bool(msg["healthy"]), dict(msg["body"]))
            self._answer("h", True)
            if msg.get("seq") is not None:
                self._send(ACK, str(msg["seq"]).encode())

    def close(self) -> None:
        """The pipeline is gone: wake every waiting scrape (they get a stale copy or 503)."""
        with self._lock:
            self._closed = True
            pending, self._pending = self._pending, {}
        for p in pending.values():
            p.done.set()


class _Handler(BaseHTTPRequestHandler):
    server_version = "es-mysql-pipeline-metrics"
    timeout = 10  # a client that connects and never speaks cannot pin a thread
    server: _Server

    def do_GET(self) -> None:
        endpoint = self.server.endpoint
        path = urlsplit(self.path).path.rstrip("/") or "/"
        if path == "/metrics":
            status, content_type, payload = endpoint.metrics(self.headers.get("Accept", ""))
            self._send(status, content_type, payload)
        elif path == "/health":
            status, payload = endpoint.health()
            self._send(status, "application/json", payload)
        elif path == "/info":
            self._send(200, "application/json", endpoint.info_body)
        elif path == "/":
            self._send(200, "text/plain; charset=utf-8", b"/metrics /health /info\n")
        else:
            body = {"error": f"no such path {path}; try /metrics /health /info"}
            self._send(404, "application/json", json.dumps(body).encode())

    def _send(self, status: int, content_type: str, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every second would flood stderr; stay quiet."""


class _Server(ThreadingHTTPServer):
    """Serves on a socket that is already bound and listening (the pipeline bound it)."""

    daemon_threads = True

    def __init__(self, sock: socket.socket, endpoint: Endpoint) -> None:
        socketserver.BaseServer.__init__(self, sock.getsockname()[:2], _Handler)
        self.socket = sock
        self.endpoint = endpoint

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A scraper that hung up mid-response is not worth a traceback on stderr."""


def _watch_parent(parent_pid: int) -> None:
    """Exit if the pipeline is gone even though the pipe stayed open (a forked helper)."""
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    os._exit(0)


def main(argv: list[str]) -> int:
    # Ctrl+C reaches the whole process group; the pipeline decides when to stop us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    listen_fd = int(argv[argv.index("--listen-fd") + 1])
    pipe_in = sys.stdin.buffer
    # Our stdout is the pipe to the pipeline; a stray print() must not corrupt it.
    pipe_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    first = read_frame(pipe_in)
    if first is None or first[0] != CONFIG:
        return 2
    config = json.loads(first[1])

    outbox: queue.Queue[tuple[bytes, bytes] | None] = queue.Queue()

    def writer() -> None:
        # One writer, so the reader below never blocks on a full pipe (no deadlock).
        while (frame := outbox.get()) is not None:
            try:
                write_frame(pipe_out, *frame)
            except OSError:
                os._exit(0)  # the pipeline is gone

    endpoint = Endpoint(config, lambda kind, payload: outbox.put((kind, payload)))
    server = _Server(socket.socket(fileno=listen_fd), endpoint)
    threads = [
        threading.Thread(target=writer, daemon=True),
        threading.Thread(target=server.serve_forever, args=(0.5,), daemon=True),
        threading.Thread(target=_watch_parent, args=(int(config["parent_pid"]),), daemon=True),
    ]
    for thread in threads:
        thread.start()
    outbox.put((READY, json.dumps({"pid": os.getpid()}).encode()))
    try:
        while (frame := read_frame(pipe_in)) is not None and frame[0] != QUIT:
            endpoint.on_frame(*frame)
    finally:
        # No server.shutdown(): it waits for a poll interval. The process ends now, and
        # with it the listening socket and the daemon threads.
        endpoint.close()
        server.server_close()
        outbox.put(None)
        threads[0].join(2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
