"""The fault proxy itself: forwards bytes exactly, and each fault does what it says."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from es_mysql_pipeline_tests.faultproxy import FaultProxy

pytestmark = [pytest.mark.chaos, pytest.mark.integration]


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A TCP echo server on 127.0.0.1."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            while data := conn.recv(65536):
                conn.sendall(data)

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1]
    stop.set()
    server.close()


def _roundtrip(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(payload)
        got = b""
        with contextlib.suppress(OSError):  # a cut: return what arrived
            while len(got) < len(payload):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                got += chunk
        return got


def test_forwards_bytes_exactly_and_counts(echo_port: int) -> None:
    payload = bytes(range(256)) * 4000  # 1 MB, every byte value
    with FaultProxy("127.0.0.1", echo_port) as proxy:
        assert _roundtrip(proxy.port, payload) == payload
        assert proxy.counters.connections == 1
        assert proxy.counters.bytes_up == proxy.counters.bytes_down == len(payload)
        assert proxy.counters.cuts == 0


def test_cut_open_connections_once_mid_stream(echo_port: int) -> None:
    with FaultProxy("127.0.0.1", echo_port) as proxy:
        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        sock.sendall(b"hello")
        assert sock.recv(5) == b"hello"
        while not proxy.open_connections():
            time.sleep(0.01)
        assert proxy.cut_open_connections(after_bytes=3) == 1
        sock.sendall(b"world")
        got = b""
        with pytest.raises(OSError):  # reset after the first 3 bytes, or EOF then reset
            while True:
                chunk = sock.recv(100)
                if not chunk:
                    raise ConnectionResetError("EOF")
                got += chunk
        assert got == b"wor"[: len(got)]
        sock.close()
        assert proxy.counters.cuts == 1
        # a new connection is not cut: "once"
        assert _roundtrip(proxy.port, b"again" * 1000) == b"again" * 1000


def test_cut_new_connections_counts_down(echo_port: int) -> None:
    with FaultProxy("127.0.0.1", echo_port) as proxy:
        proxy.cut_new_connections(after_bytes=10, count=2)
        for _ in range(2):
            assert len(_roundtrip(proxy.port, b"x" * 100)) < 100
        assert _roundtrip(proxy.port, b"x" * 100) == b"x" * 100
        assert proxy.counters.cuts == 2


def test_latency_is_added_per_direction(echo_port: int) -> None:
    with FaultProxy("127.0.0.1", echo_port) as proxy:
        proxy.set_latency(0.2)
        t0 = time.monotonic()
        assert _roundtrip(proxy.port, b"ping") == b"ping"
        elapsed = time.monotonic() - t0
        assert 0.4 <= elapsed < 1.5  # 200 ms up + 200 ms down


def test_blackhole_holds_traffic_then_delivers(echo_port: int) -> None:
    with FaultProxy("127.0.0.1", echo_port) as proxy:
        assert _roundtrip(proxy.port, b"warm") == b"warm"
        proxy.blackhole(1.5)
        t0 = time.monotonic()
        assert _roundtrip(proxy.port, b"held") == b"held"
        assert time.monotonic() - t0 >= 1.4
        t0 = time.monotonic()
        assert _roundtrip(proxy.port, b"free") == b"free"
        assert time.monotonic() - t0 < 0.5
