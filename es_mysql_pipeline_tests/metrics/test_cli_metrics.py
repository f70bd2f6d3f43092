"""The CLI glue: recorder installed, endpoint up, health follows the outcome, clean stop."""

from __future__ import annotations

import argparse
import json
import socket

import pytest

from es_mysql_pipeline.errors import PipelineError
from es_mysql_pipeline.metrics.catalog import active_prometheus_recorder
from es_mysql_pipeline.metrics.endpoint import start_cli_metrics
from es_mysql_pipeline_tests.fixtures.prometheus import http_get


class _Res:
    def __init__(self, **d: str) -> None:
        self.d = d

    def describe(self) -> dict[str, str]:
        return self.d


def test_start_cli_metrics_lifecycle() -> None:
    args = argparse.Namespace(pipeline_id="c1", metrics_host="127.0.0.1", metrics_port=0)
    res = {"source": _Res(type="csv", target="a.csv"), "sink": _Res(type="jsonl", target="out")}
    m = start_cli_metrics(args, res)
    try:
        assert active_prometheus_recorder() is m.recorder
        info = json.loads(http_get(m.server.url + "/info")[1])
        assert info["source"] == {"type": "csv", "target": "a.csv"} and info["pipeline_id"] == "c1"
        assert http_get(m.server.url + "/health")[0] == 200
        m.failed()
        assert http_get(m.server.url + "/health")[0] == 503
        body = http_get(m.server.url + "/metrics")[1].decode()
        assert 'pipeline_run_duration_seconds_count{pipeline_id="c1"} 1.0' in body
    finally:
        m.stop()
    assert active_prometheus_recorder() is None


def test_a_successful_run_reads_stopped_and_counts_its_duration() -> None:
    args = argparse.Namespace(pipeline_id="c2", metrics_host="127.0.0.1", metrics_port=0)
    m = start_cli_metrics(args, {})
    try:
        m.succeeded()
        assert http_get(m.server.url + "/health")[0] == 200
        body = http_get(m.server.url + "/metrics")[1].decode()
        assert 'pipeline_state{pipeline_id="c2",pipeline_state="stopped"} 1.0' in body
        assert 'pipeline_last_success_timestamp_seconds{pipeline_id="c2"}' in body
        assert 'pipeline_run_duration_seconds_count{pipeline_id="c2"} 1.0' in body
    finally:
        m.stop()


def test_an_endpoint_that_cannot_start_leaves_metrics_off() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args = argparse.Namespace(pipeline_id="c3", metrics_host="127.0.0.1", metrics_port=port)
        with pytest.raises(PipelineError, match=f"--metrics-port {port}: .* already in use"):
            start_cli_metrics(args, {})
    assert active_prometheus_recorder() is None
