"""A small threaded TCP fault proxy for tests: forwards to a target and misbehaves on demand.

Put it between a client and a server (point the client at ``proxy.port``) and inject:

* :meth:`FaultProxy.cut_open_connections` - every connection open now is cut once, abruptly
  (RST), after it has carried ``after_bytes`` more bytes; connections opened later are not.
* :meth:`FaultProxy.cut_new_connections` - the next ``count`` new connections (``None``:
  all of them, until :meth:`FaultProxy.heal`) are cut after ``after_bytes`` bytes.
* :meth:`FaultProxy.set_latency` - every chunk is delivered ``seconds`` late, per direction,
  without limiting throughput (a delivery queue, not a sleep in the reader).
* :meth:`FaultProxy.blackhole` - for ``seconds`` nothing moves: bytes are held, not
  acknowledged onwards, and new connections are not connected upstream; afterwards the
  held bytes flow again, as TCP retransmission would deliver them after a network partition.

:class:`ProxyCounters` counts connections, bytes each way, cuts and held chunks.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

_CHUNK = 65536
_CUT = (0.0, b"")  # queue marker: reset the connection here


@dataclass
class ProxyCounters:
    """What went through the proxy (all fields grow only)."""

    connections: int = 0
    bytes_up: int = 0  # client -> target
    bytes_down: int = 0  # target -> client
    cuts: int = 0
    upstream_failures: int = 0
    held_chunks: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + n)


class _Conn:
    """One proxied connection: two pumps (reader + delayed writer per direction)."""

    def __init__(self, proxy: FaultProxy, client: socket.socket, ident: int) -> None:
        self.proxy = proxy
        self.client = client
        self.ident = ident
        self.upstream: socket.socket | None = None
        self.lock = threading.Lock()
        #: bytes this connection may still carry before it is cut (None: never)
        self.cut_budget: int | None = None
        self.cut_fired = False
        self.closed = threading.Event()

    def arm_cut(self, after_bytes: int) -> None:
        with self.lock:
            self.cut_budget = max(0, after_bytes)

    def run(self) -> None:
        proxy = self.proxy
        proxy._wait_passable(self.closed)
        try:
            self.upstream = socket.create_connection(proxy.target, timeout=10)
            self.upstream.settimeout(None)
        except OSError:
            proxy.counters.add("upstream_failures")
            self.close(abort=True)
            return
        for src, dst, counter in (
            (self.client, self.upstream, "bytes_up"),
            (self.upstream, self.client, "bytes_down"),
        ):
            q: queue.Queue[tuple[float, bytes] | None] = queue.Queue()
            threading.Thread(
                target=self._read, args=(src, q, counter), daemon=True, name="proxy-read"
            ).start()
            threading.Thread(
                target=self._write, args=(dst, q), daemon=True, name="proxy-write"
            ).start()

    def _read(
        self, src: socket.socket, q: queue.Queue[tuple[float, bytes] | None], ctr: str
    ) -> None:
        try:
            while not self.closed.is_set():
                try:
                    data = src.recv(_CHUNK)
                except OSError:
                    break
                if not data:
                    break
                if self.proxy._wait_passable(self.closed):
                    self.proxy.counters.add("held_chunks")
                cut = False
                with self.lock:
                    if self.cut_budget is not None:
                        if len(data) >= self.cut_budget:
                            data, cut = data[: self.cut_budget], True
                            self.cut_budget = 0
                            self.cut_fired, fired_before = True, self.cut_fired
                            if fired_before:  # the other direction is already cutting
                                return
                        else:
                            self.cut_budget -= len(data)
                self.proxy.counters.add(ctr, len(data))
                if data:
                    q.put((time.monotonic() + self.proxy.latency, data))
                if cut:
                    # the writer sends the truncated chunk, then resets both sides
                    self.proxy.counters.add("cuts")
                    q.put(_CUT)
                    return
        finally:
            q.put(None)

    def _write(self, dst: socket.socket, q: queue.Queue[tuple[float, bytes] | None]) -> None:
        while True:
            item = q.get()
            if item is None:
                break
            if item is _CUT:
                self.close(abort=True)
                return
            due, data = item
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            try:
                dst.sendall(data)
            except OSError:
                break
        # one direction ended: half-close onwards, full close when both are done
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
        if dst is self.client:
            self.close()

    def close(self, abort: bool = False) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for sock in (self.client, self.upstream):
            if sock is None:
                continue
            if abort:  # RST instead of FIN: the peer sees "connection reset"
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            # shutdown first: close() alone leaves a recv() blocked in another thread (and
            # so the connection) alive until data arrives
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
        self.proxy._forget(self)


class FaultProxy:
    """Forward ``127.0.0.1:<port>`` to ``target``; a context manager."""

    def __init__(self, target_host: str, target_port: int, listen_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.listen_host = listen_host
        self.counters = ProxyCounters()
        self.latency = 0.0
        self._blackhole_until = 0.0
        self._cut_new: tuple[int, int | None] | None = None  # (after_bytes, remaining)
        self._conns: dict[int, _Conn] = {}
        self._lock = threading.Lock()
        self._server: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._next_id = 0

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def port(self) -> int:
        assert self._server is not None, "proxy not started"
        return int(self._server.getsockname()[1])

    @property
    def url_host(self) -> str:
        return f"{self.listen_host}:{self.port}"

    def start(self) -> FaultProxy:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((self.listen_host, 0))
        server.listen(128)
        self._server = server
        self._thread = threading.Thread(target=self._accept, daemon=True, name="proxy-accept")
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            with contextlib.suppress(OSError):
                self._server.shutdown(socket.SHUT_RDWR)
            self._server.close()
        self._blackhole_until = 0.0
        for conn in self.open_connections():
            conn.close()
        if self._thread is not None:
            self._thread.join(2)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- faults --------------------------------------------------------------------------
    def cut_open_connections(self, after_bytes: int = 0) -> int:
        """Cut each currently open connection once, after ``after_bytes`` more bytes."""
        conns = self.open_connections()
        for conn in conns:
            conn.arm_cut(after_bytes)
        return len(conns)

    def cut_new_connections(self, after_bytes: int, count: int | None = None) -> None:
        """Cut the next ``count`` new connections (all with ``None``) after ``after_bytes``."""
        self._cut_new = (after_bytes, count)

    def set_latency(self, seconds: float) -> None:
        """Deliver every chunk ``seconds`` late (each direction)."""
        self.latency = max(0.0, seconds)

    def blackhole(self, seconds: float) -> None:
        """Hold all traffic and new connections for ``seconds`` from now (non-blocking)."""
        self._blackhole_until = time.monotonic() + seconds

    def heal(self) -> None:
        """Stop injecting faults (cuts already armed on open connections stay armed)."""
        self._cut_new = None
        self.latency = 0.0
        self._blackhole_until = 0.0

    def open_connections(self) -> list[_Conn]:
        with self._lock:
            return list(self._conns.values())

    # -- internals -----------------------------------------------------------------------
    def _wait_passable(self, closed: threading.Event) -> bool:
        """Block while blackholed; True if it had to wait."""
        waited = False
        while not closed.is_set():
            left = self._blackhole_until - time.monotonic()
            if left <= 0:
                break
            waited = True
            time.sleep(min(left, 0.05))
        return waited

    def _accept(self) -> None:
        assert self._server is not None
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._next_id += 1
                conn = _Conn(self, client, self._next_id)
                self._conns[conn.ident] = conn
                plan = self._cut_new
                if plan is not None:
                    after, remaining = plan
                    conn.arm_cut(after)
                    if remaining is not None:
                        self._cut_new = (after, remaining - 1) if remaining > 1 else None
            self.counters.add("connections")
            threading.Thread(target=conn.run, daemon=True, name="proxy-conn").start()

    def _forget(self, conn: _Conn) -> None:
        with self._lock:
            self._conns.pop(conn.ident, None)
