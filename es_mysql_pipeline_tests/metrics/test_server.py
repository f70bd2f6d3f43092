"""The CLI endpoint: /metrics (text and OpenMetrics), /health, /info, port in use, shutdown."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client import CollectorRegistry

from es_mysql_pipeline.errors import PipelineError
from es_mysql_pipeline.metrics.definitions import PrometheusRecorder
from es_mysql_pipeline.metrics.server import MetricsServer, redact, start_metrics_server
from es_mysql_pipeline_tests.fixtures.prometheus import http_get

INFO = {
    "version": "0.1.0",
    "pipeline_id": "srv",
    "source": {"type": "elasticsearch", "target": "https://elastic:s3cr3t@es.example:9200/logs"},
    "sink": {"type": "mysql", "target": "db.example/records", "password": "s3cr3t"},
}


@pytest.fixture
def served() -> Iterator[tuple[PrometheusRecorder, MetricsServer]]:
    rec = PrometheusRecorder("srv", CollectorRegistry(), source_type="es", sink_type="mysql")
    server = start_metrics_server("127.0.0.1", 0, rec.registry, INFO, recorder=rec)
    yield rec, server
    server.stop()


def get(server: MetricsServer, path: str, accept: str = "") -> tuple[int, str, str]:
    req = urllib.request.Request(server.url + path, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def test_metrics_text_and_openmetrics(served: tuple[PrometheusRecorder, MetricsServer]) -> None:
    rec, server = served
    rec.records("processed", 42, "fetch")
    status, ctype, body = get(server, "/metrics")
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
    assert 'pipeline_records_processed_total{pipeline_id="srv",stage="fetch"} 42.0' in body
    status, ctype, body = get(server, "/metrics", "application/openmetrics-text; version=1.0.0")
    assert status == 200 and ctype.startswith("application/openmetrics-text")
    assert body.rstrip().endswith("# EOF")
    assert 'pipeline_records_processed_total{pipeline_id="srv",stage="fetch"} 42.0' in body


def test_health_turns_503_after_error(served: tuple[PrometheusRecorder, MetricsServer]) -> None:
    rec, server = served
    rec.state("running")
    status, ctype, body = get(server, "/health")
    assert status == 200 and ctype == "application/json"
    assert json.loads(body)["status"] == "healthy"
    rec.state("error")
    status, _, body = get(server, "/health")
    assert status == 503
    assert json.loads(body) | {"uptime_seconds": 0} == {
        "status": "unhealthy",
        "state": "error",
        "pipeline_id": "srv",
        "uptime_seconds": 0,
    }


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


def test_redact_nested() -> None:
    assert redact({"a": [{"api_key": "x", "u": "mysql://u:p@h/db"}]}) == {
        "a": [{"u": "mysql://h/db"}]
    }


def test_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(PipelineError, match=f"--metrics-port {port}: .* already in use"):
            start_metrics_server("127.0.0.1", port, CollectorRegistry(), {})


def test_stop_leaves_no_thread_and_frees_the_port() -> None:
    before = set(threading.enumerate())
    rec = PrometheusRecorder("srv", CollectorRegistry())
    server = start_metrics_server(recorder=rec)
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
    again = start_metrics_server("127.0.0.1", server.port, rec.registry, {})
    again.stop()


def test_no_server_without_metrics_port() -> None:
    """Importing starts no server: the CLI starts one only with --metrics-port."""
    import es_mysql_pipeline.metrics.definitions  # noqa: F401 - importing starts nothing

    assert not [t for t in threading.enumerate() if t.name.startswith("metrics-server")]
