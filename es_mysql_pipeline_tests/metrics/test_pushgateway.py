"""PushgatewayResource: pushes reach a real Pushgateway; a down or slow one never stalls a run."""

from __future__ import annotations

import base64
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest
from prometheus_client import CollectorRegistry

from es_mysql_pipeline.metrics.catalog import PrometheusRecorder, active_prometheus_recorder
from es_mysql_pipeline.metrics.pushgateway import PushgatewayResource
from es_mysql_pipeline.metrics.recorder import get_recorder, set_recorder
from es_mysql_pipeline_tests.fixtures.prometheus import PushgatewayServer, free_port


class _Slow(BaseHTTPRequestHandler):
    seen_auth: list[str] = []

    def do_PUT(self) -> None:
        _Slow.seen_auth.append(self.headers.get("Authorization", ""))
        match = re.match(r"/sleep(\d+)/", self.path)
        time.sleep(float(match.group(1)) if match else 3.0)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


class _Dribble(BaseHTTPRequestHandler):
    """Answers one byte every 0.2 s: no read ever waits as long as the socket timeout."""

    def do_PUT(self) -> None:
        for byte in b"HTTP/1.0 200 OK\r\n\r\n":
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            time.sleep(0.2)

    def log_message(self, *args: object) -> None:
        pass


def _serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def slow_gateway() -> Iterator[str]:
    yield from _serve(_Slow)


@pytest.fixture
def dribbling_gateway() -> Iterator[str]:
    yield from _serve(_Dribble)


def test_push_reaches_the_pushgateway(pushgateway: PushgatewayServer) -> None:
    recorder = PrometheusRecorder("pg", CollectorRegistry())
    recorder.records("processed", 12, "fetch")
    res = PushgatewayResource(
        url=pushgateway.url, pipeline_id="pg", grouping_labels={"env": "test"}
    )
    assert res.push(recorder.registry, res.grouping_key(step="raw_records"), recorder=recorder)
    text = pushgateway.metrics_text()
    line = [
        line
        for line in text.splitlines()
        if line.startswith("pipeline_records_processed_total{") and 'stage="fetch"' in line
    ]
    assert len(line) == 1 and line[0].endswith(" 12")
    for label in (
        'env="test"',
        'job="es_mysql_pipeline"',
        'pipeline_id="pg"',
        'step="raw_records"',
    ):
        assert label in line[0]
    assert res.delete(res.grouping_key(step="raw_records"))
    assert "pipeline_records_processed_total{" not in pushgateway.metrics_text()


def test_down_pushgateway_warns_counts_and_returns(caplog: pytest.LogCaptureFixture) -> None:
    recorder = PrometheusRecorder("pg", CollectorRegistry())
    res = PushgatewayResource(url=f"http://127.0.0.1:{free_port()}", timeout_seconds=1)
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING):
        assert res.push(recorder.registry, res.grouping_key(), recorder=recorder) is False
    assert time.monotonic() - t0 < 1.6
    assert "the run goes on" in caplog.text
    assert (
        recorder.registry.get_sample_value(
            "pipeline_pushgateway_failures_total", {"pipeline_id": "pg"}
        )
        == 1
    )


def test_slow_pushgateway_never_stalls(slow_gateway: str) -> None:
    recorder = PrometheusRecorder("pg", CollectorRegistry())
    res = PushgatewayResource(url=slow_gateway + "/sleep10", timeout_seconds=0.5)
    warnings: list[str] = []
    t0 = time.monotonic()
    assert (
        res.push(recorder.registry, res.grouping_key(), recorder=recorder, warn=warnings.append)
        is False
    )
    assert time.monotonic() - t0 < 1.5
    assert "timed out" in warnings[0] or "no answer within 0.5s" in warnings[0]


def test_a_gateway_answering_too_slowly_is_given_up_after_the_timeout(
    dribbling_gateway: str,
) -> None:
    recorder = PrometheusRecorder("pg", CollectorRegistry())
    res = PushgatewayResource(url=dribbling_gateway, timeout_seconds=0.5)
    warnings: list[str] = []
    t0 = time.monotonic()
    assert not res.push(
        recorder.registry, res.grouping_key(), recorder=recorder, warn=warnings.append
    )
    assert time.monotonic() - t0 < 1.5  # the answer would take 3.6 s
    assert warnings == [
        f"Pushgateway {dribbling_gateway}: push of {{'pipeline_id': 'default'}} failed "
        "(no answer within 0.5s); the run goes on"
    ]
    assert (
        recorder.registry.get_sample_value(
            "pipeline_pushgateway_failures_total", {"pipeline_id": "pg"}
        )
        == 1
    )


def test_pushing_off_pushes_and_deletes_nothing(caplog: pytest.LogCaptureFixture) -> None:
    recorder = PrometheusRecorder("pg", CollectorRegistry())
    res = PushgatewayResource()  # no url
    with caplog.at_level(logging.WARNING):
        assert res.push(recorder.registry, res.grouping_key(), recorder=recorder)
        assert res.delete(res.grouping_key())
    assert caplog.text == ""
    assert (
        recorder.registry.get_sample_value(
            "pipeline_pushgateway_failures_total", {"pipeline_id": "pg"}
        )
        == 0
    )


def test_basic_auth_from_env_var(slow_gateway: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PG_USER", "pusher")
    monkeypatch.setenv("PG_PASSWORD", "hunter2")
    _Slow.seen_auth.clear()

    @dg.op
    def push_once(pushgateway: PushgatewayResource) -> bool:
        return pushgateway.push(CollectorRegistry(), pushgateway.grouping_key())

    @dg.job
    def push_job() -> None:
        push_once()

    res = PushgatewayResource(
        url=slow_gateway + "/sleep0",
        username=dg.EnvVar("PG_USER"),
        password=dg.EnvVar("PG_PASSWORD"),
    )
    result = push_job.execute_in_process(resources={"pushgateway": res})
    assert result.output_for_node("push_once") is True
    assert _Slow.seen_auth == ["Basic " + base64.b64encode(b"pusher:hunter2").decode()]


def test_setup_installs_a_recorder_per_process_and_restores() -> None:
    seen: list[object] = []

    @dg.op
    def record(pushgateway: PushgatewayResource) -> None:
        seen.append(active_prometheus_recorder())
        get_recorder().records("processed", 3, "fetch")

    @dg.job
    def rec_job() -> None:
        record()

    before = get_recorder()
    rec_job.execute_in_process(
        resources={"pushgateway": PushgatewayResource(url="http://127.0.0.1:1", pipeline_id="x")}
    )
    assert isinstance(seen[0], PrometheusRecorder) and seen[0].pipeline_id == "x"
    assert get_recorder() is before  # torn down
    # Disabled (no url): no recorder, metrics cost nothing.
    rec_job.execute_in_process(resources={"pushgateway": PushgatewayResource()})
    assert seen[1] is None
    # A process-wide recorder (the CLI's) is reused, not replaced.
    cli = PrometheusRecorder("cli", CollectorRegistry())
    previous = set_recorder(cli)
    try:
        rec_job.execute_in_process(
            resources={"pushgateway": PushgatewayResource(url="http://127.0.0.1:1")}
        )
        assert seen[2] is cli and get_recorder() is cli
    finally:
        set_recorder(previous)


def test_free_port_helper_gives_a_closed_port() -> None:
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", free_port()), timeout=1):
        pass


def test_retire_with_credentials_finds_and_deletes_the_pipelines_groups(
    pushgateway: PushgatewayServer,
) -> None:
    res = PushgatewayResource(url=pushgateway.url, pipeline_id="au", username="u", password="p")
    recorder = PrometheusRecorder("au", CollectorRegistry())
    assert res.push(recorder.registry, res.grouping_key(step="raw_records"))
    mine = [g for g in res.groups() if g.get("pipeline_id") == "au"]
    assert mine == [{"job": "es_mysql_pipeline", "pipeline_id": "au", "step": "raw_records"}]
    assert res.retire("au") == 1
    assert [g for g in res.groups() if g.get("pipeline_id") == "au"] == []
