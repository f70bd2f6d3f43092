"""The CLI endpoint: /metrics (text and OpenMetrics), /health, /info, port in use, shutdown.

And that a thread of the pipeline serves realistic scrape rates while the pipeline holds
the GIL, renders only when scraped, and leaves no port behind when the pipeline is killed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from es_mysql_pipeline.errors import PipelineError
from es_mysql_pipeline.metrics.catalog import PrometheusRecorder
from es_mysql_pipeline.metrics.endpoint import (
    MetricsServer,
    start_metrics_server,
    strip_credentials,
)
from es_mysql_pipeline_tests.fixtures.prometheus import http_get

INFO = {
    "version": "0.1.0",
    "pipeline_id": "srv",
    "source": {"type": "elasticsearch", "target": "https://elastic:s3cr3t@es.example:9200/logs"},
    "sink": {"type": "mysql", "target": "db.example/records", "password": "s3cr3t"},
}


@pytest.fixture
def served() -> Iterator[tuple[PrometheusRecorder, MetricsServer]]:
    recorder = PrometheusRecorder("srv", CollectorRegistry(), source_type="es", sink_type="mysql")
    server = start_metrics_server("127.0.0.1", 0, recorder.registry, INFO, recorder=recorder)
    yield recorder, server
    server.stop()


def get(server: MetricsServer, path: str, accept: str = "") -> tuple[int, str, str]:
    req = urllib.request.Request(server.url + path, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def health(server: MetricsServer) -> tuple[int, dict[str, object]]:
    """``/health``: its status and JSON body, the uptime (a clock reading) left out."""
    status, _, body = get(server, "/health")
    answer = json.loads(body)
    assert isinstance(answer.pop("uptime_seconds"), (int, float))
    return status, answer


def test_metrics_text_and_openmetrics(served: tuple[PrometheusRecorder, MetricsServer]) -> None:
    recorder, server = served
    recorder.records("processed", 42, "fetch")
    status, ctype, body = get(server, "/metrics")
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
    assert 'pipeline_records_processed_total{pipeline_id="srv",stage="fetch"} 42.0' in body
    status, ctype, body = get(server, "/metrics", "application/openmetrics-text; version=1.0.0")
    assert status == 200 and ctype.startswith("application/openmetrics-text")
    assert body.rstrip().endswith("# EOF")
    assert 'pipeline_records_processed_total{pipeline_id="srv",stage="fetch"} 42.0' in body


def test_health_turns_503_after_error(served: tuple[PrometheusRecorder, MetricsServer]) -> None:
    recorder, server = served
    recorder.state("running")
    status, ctype, body = get(server, "/health")
    assert status == 200 and ctype == "application/json"
    assert json.loads(body)["status"] == "healthy"
    recorder.state("error")
    assert health(server) == (
        503,
        {"status": "unhealthy", "state": "error", "pipeline_id": "srv"},
    )


def test_info_without_secrets(served: tuple[PrometheusRecorder, MetricsServer]) -> None:
    _, server = served
    status, _, body = get(server, "/info")
    info = json.loads(body)
    assert status == 200
    assert info["pipeline_id"] == "srv" and info["version"] == "0.1.0"
    assert info["source"] == {"type": "elasticsearch", "target": "https://es.example:9200/logs"}
    assert info["sink"] == {"type": "mysql", "target": "db.example/records"}
    for path in ("/metrics", "/health", "/info"):
        assert "s3cr3t" not in get(server, path)[2]
    assert get(server, "/nope")[0] == 404


def test_strip_credentials_nested() -> None:
    assert strip_credentials({"a": [{"api_key": "x", "u": "mysql://u:p@h/db"}]}) == {
        "a": [{"u": "mysql://h/db"}]
    }


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://elastic:pw@[::1]:9200/logs", "https://[::1]:9200/logs"),
        ("mysql+pymysql://loader@DB.example:3306/app#t", "mysql+pymysql://DB.example:3306/app#t"),
        ("https://[::1]:9200/logs@2024?", "https://[::1]:9200/logs@2024?"),  # not re-assembled
    ],
    ids=["ipv6-user-password", "user", "at-sign-in-the-path-only"],
)
def test_strip_credentials_keeps_the_host_as_written(url: str, shown: str) -> None:
    assert strip_credentials({"target": url}) == {"target": shown}


def test_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(PipelineError, match=f"--metrics-port {port}: .* already in use"):
            start_metrics_server("127.0.0.1", port, CollectorRegistry(), {})


def test_stop_leaves_no_thread_and_frees_the_port() -> None:
    before = set(threading.enumerate())
    recorder = PrometheusRecorder("srv", CollectorRegistry())
    server = start_metrics_server(recorder=recorder)
    assert server.host == "127.0.0.1"  # loopback unless asked otherwise
    with ThreadPoolExecutor(8) as pool:
        assert all(s == 200 for s in pool.map(lambda _: get(server, "/metrics")[0], range(40)))
    server.stop()
    server.stop()  # idempotent
    deadline = time.monotonic() + 5
    while set(threading.enumerate()) - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert set(threading.enumerate()) - before == set()
    with pytest.raises(OSError):
        http_get(server.url + "/metrics", timeout=1)
    # The port can be bound again right away.
    again = start_metrics_server("127.0.0.1", server.port, recorder.registry, {})
    again.stop()


def test_no_server_without_metrics_port() -> None:
    """Importing starts no server: the CLI starts one only with --metrics-port."""
    import es_mysql_pipeline.metrics.catalog  # noqa: F401 - importing starts nothing

    assert not [t for t in threading.enumerate() if t.name.startswith("metrics-server")]


SCRAPER = Path(__file__).with_name("scraper.py")
OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def scrape(server: MetricsServer, path: str, seconds: float, *args: str) -> subprocess.Popen[str]:
    """Start the raw-socket scraper in its own process (see scraper.py for the arguments)."""
    host = ["127.0.0.1", str(server.port)]
    return subprocess.Popen(
        [sys.executable, "-I", "-S", str(SCRAPER), *host, path, str(seconds), *args],
        stdout=subprocess.PIPE,
        text=True,
    )


def scrape_result(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=30)
    return dict(json.loads(out))


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


class CountingCollector:
    """Counts how often the registry is rendered (each render collects every collector)."""

    def __init__(self) -> None:
        self.collections = 0

    def collect(self) -> list[Any]:
        self.collections += 1
        return []


def test_serves_while_the_pipeline_holds_the_gil(
    served: tuple[PrometheusRecorder, MetricsServer],
) -> None:
    """Prometheus asks once every 1-60 s with a 10 s timeout: a busy pipeline answers far
    faster than that (two scrapes a second here, one after the other, is a wide margin)."""
    recorder, server = served
    recorder.records("processed", 7, "fetch")
    scraper = scrape(server, "/metrics", 2.0, "1")
    n, deadline = 0, time.monotonic() + 2.2
    while time.monotonic() < deadline:  # pure-Python work that keeps the GIL
        for i in range(10_000):
            n += i % 7
    result = scrape_result(scraper)
    assert result["failed"] == 0
    assert result["ok"] / result["seconds"] >= 2, result
    assert 'stage="fetch"} 7.0' in get(server, "/metrics")[2]


def test_renders_only_when_scraped() -> None:
    registry = CollectorRegistry()
    counter = CountingCollector()
    registry.register(counter)
    with start_metrics_server("127.0.0.1", 0, registry, {}) as server:
        time.sleep(0.3)
        assert counter.collections == 0  # nobody scrapes: nothing rendered
        for accept in ("", OPENMETRICS, "", OPENMETRICS):
            assert get(server, "/metrics", accept)[0] == 200
        get(server, "/health")
        get(server, "/info")
        assert counter.collections == 4  # one rendering per scrape of /metrics, no more
        time.sleep(0.3)
        assert counter.collections == 4


def test_health_from_a_plain_callable_follows() -> None:
    """Without a recorder, /health asks the callable (at most 0.25 s stale, as before)."""
    healthy = [True]
    server = MetricsServer(
        "127.0.0.1",
        0,
        CollectorRegistry(),
        {},
        lambda: (healthy[0], {"state": "running" if healthy[0] else "error"}),
    )
    with server:
        assert get(server, "/health")[0] == 200
        healthy[0] = False
        t0 = time.monotonic()
        while get(server, "/health")[0] != 503:
            assert time.monotonic() - t0 < 0.25 + 0.5
            time.sleep(0.02)
        assert json.loads(get(server, "/health")[2])["state"] == "error"


def test_health_flips_at_once_with_the_recorder_even_when_cached(
    served: tuple[PrometheusRecorder, MetricsServer],
) -> None:
    recorder, server = served
    recorder.state("running")
    for _ in range(5):
        assert get(server, "/health")[0] == 200
    recorder.state("error")
    assert get(server, "/health")[0] == 503
    recorder.state("running")
    assert get(server, "/health")[0] == 200


def test_the_port_is_free_once_the_pipeline_is_killed() -> None:
    code = (
        "import time\n"
        "from prometheus_client import CollectorRegistry\n"
        "from es_mysql_pipeline.metrics.endpoint import start_metrics_server\n"
        "s = start_metrics_server('127.0.0.1', 0, CollectorRegistry(), {})\n"
        "print(s.port, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        port = int(parent.stdout.readline())
        assert http_get(f"http://127.0.0.1:{port}/health")[0] == 200
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(5)
        deadline = time.monotonic() + 5
        while not refused(port):
            assert time.monotonic() < deadline, "the port outlived the pipeline"
            time.sleep(0.05)
    finally:
        parent.kill()
        parent.wait()


def test_health_body_without_a_recorder_uses_the_installed_one() -> None:
    with start_metrics_server("127.0.0.1", 0, CollectorRegistry(), {"pipeline_id": "p"}) as server:
        answer = health(server)
    assert answer == (200, {"status": "healthy", "state": "stopped", "pipeline_id": "p"})


def test_ipv6_loopback() -> None:
    try:
        socket.socket(socket.AF_INET6).bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    with start_metrics_server("::1", 0, CollectorRegistry(), {"pipeline_id": "v6"}) as server:
        assert server.url == f"http://[::1]:{server.port}"
        assert get(server, "/metrics")[0] == 200
        assert json.loads(get(server, "/info")[2]) == {"pipeline_id": "v6"}


def test_the_root_lists_the_paths(served: tuple[PrometheusRecorder, MetricsServer]) -> None:
    assert get(served[1], "/") == (200, "text/plain; charset=utf-8", "/metrics /health /info\n")


def test_a_host_that_cannot_be_listened_on_is_a_clear_error() -> None:
    with pytest.raises(PipelineError, match=r"--metrics-host 192\.0\.2\.1 / --metrics-port 0: "):
        start_metrics_server("192.0.2.1", 0, CollectorRegistry(), {})  # not this machine's
    with pytest.raises(ValueError, match="needs a registry or a recorder"):
        start_metrics_server("127.0.0.1", 0)
