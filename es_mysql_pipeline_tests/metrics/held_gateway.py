"""A proxy in front of the real Pushgateway that holds every request until released.

It stands for a slow network between one run's steps and the Pushgateway: a push sent
by that run is still in flight when another run of the same step has ended and pushed,
and lands afterwards (the pusher stopped waiting after its timeout; the request did not).
"""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class HeldGateway:
    """Forwards to ``target`` only after :meth:`release`; counts requests and forwards."""

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.url = ""
        self.received = 0
        self.forwarded = 0
        self._released = threading.Event()
        self._lock = threading.Lock()

    def release(self, timeout: float = 10.0) -> None:
        """Let every held request through and wait until each has reached the target."""
        self._released.set()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self.forwarded == self.received:
                    return
            time.sleep(0.05)
        raise AssertionError(f"{self.received - self.forwarded} held pushes never arrived")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                with gateway._lock:
                    gateway.received += 1
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                gateway._released.wait(30)
                request = urllib.request.Request(
                    gateway.target + self.path,
                    data=body,
                    method=self.command,
                    headers={"Content-Type": self.headers.get("Content-Type", "")},
                )
                try:
                    with urllib.request.urlopen(request, timeout=10) as resp:
                        status = resp.status
                finally:
                    with gateway._lock:
                        gateway.forwarded += 1
                try:
                    self.send_response(status)
                    self.end_headers()
                except OSError:  # the pusher stopped waiting long ago
                    pass

            do_PUT = do_POST = do_DELETE = _forward

            def log_message(self, *args: object) -> None:
                pass

        return Handler


@contextmanager
def held_gateway(target: str) -> Iterator[HeldGateway]:
    """A :class:`HeldGateway` in front of ``target`` on a free loopback port."""
    gateway = HeldGateway(target)
    server = ThreadingHTTPServer(("127.0.0.1", 0), gateway._handler())
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    gateway.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield gateway
    finally:
        gateway._released.set()
        server.shutdown()
        server.server_close()
