"""Pushgateway down or slow during a real data run (the partitioned asset job with the step
hooks, into MariaDB): the run succeeds on time, each step's failed push is logged as a
warning and counted in ``pipeline_pushgateway_failures_total``.

The resource on its own (down, slow, auth) is covered by
``es_mysql_pipeline_tests/metrics/test_pushgateway.py``; this is the end-to-end view.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from prometheus_client import CollectorRegistry

from es_mysql_pipeline.assets import build_assets
from es_mysql_pipeline.assets.partitions import daily_partitions
from es_mysql_pipeline.hooks import PIPELINE_METRICS_HOOKS
from es_mysql_pipeline.metrics.catalog import PrometheusRecorder
from es_mysql_pipeline.metrics.pushgateway import PushgatewayResource
from es_mysql_pipeline.metrics.recorder import set_recorder
from es_mysql_pipeline.resources.sinks import SqlSink
from es_mysql_pipeline.resources.sources import FileSource
from es_mysql_pipeline_tests.chaos import common
from es_mysql_pipeline_tests.chaos.conftest import CsvFactory
from es_mysql_pipeline_tests.helpers import make_resources
from es_mysql_pipeline_tests.support.mysql import mysql_url

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

DAY = "2024-01-02"
TIMEOUT = 1.0


@pytest.fixture
def gateway(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """``down``: nothing listens; ``slow``: connections are accepted and never answered."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    if request.param == "down":
        sock.close()
        yield "down", f"http://127.0.0.1:{port}"
        return
    sock.listen(64)  # the kernel completes handshakes; nobody ever reads or answers
    try:
        yield "slow", f"http://127.0.0.1:{port}"
    finally:
        sock.close()


@pytest.mark.parametrize("gateway", ["down", "slow"], indirect=True)
def test_data_run_succeeds_on_time_with_a_broken_pushgateway(
    gateway: tuple[str, str], csv_factory: CsvFactory, chaos_table: str, tmp_path: Path
) -> None:
    with contextlib.ExitStack() as stack:
        _scenario(stack, gateway, csv_factory, chaos_table, tmp_path)


def _scenario(
    stack: contextlib.ExitStack,
    gateway: tuple[str, str],
    csv_factory: CsvFactory,
    chaos_table: str,
    tmp_path: Path,
) -> None:
    kind, url = gateway
    source = csv_factory(6_000, 6)
    expected = common.expected_rows(source, DAY)
    resources = make_resources(
        str(tmp_path),
        sink=SqlSink(url=common_url(), table=chaos_table),
        source=FileSource(path=str(source)),
    )
    partitions = daily_partitions()

    def run(push_url: str) -> tuple[dg.ExecuteInProcessResult, float]:
        resources["pushgateway"] = PushgatewayResource(
            url=push_url, pipeline_id="chaos", timeout_seconds=TIMEOUT
        )
        job = dg.Definitions(
            assets=build_assets(partitions),
            jobs=[
                dg.define_asset_job("j", partitions_def=partitions, hooks=PIPELINE_METRICS_HOOKS)
            ],
            resources=resources,
        ).resolve_job_def("j")
        started = time.monotonic()
        result = job.execute_in_process(partition_key=DAY, raise_on_error=False, instance=instance)
        return result, time.monotonic() - started

    instance = stack.enter_context(dg.instance_for_test())
    registry = CollectorRegistry()
    previous = set_recorder(PrometheusRecorder("chaos", registry))
    try:
        baseline, base_seconds = run("")  # pushing off: the time the data needs
        assert baseline.success
        result, seconds = run(url)
    finally:
        set_recorder(previous)
    warnings = [
        e.user_message
        for e in instance.all_logs(result.run_id)
        if "the run goes on" in (e.user_message or "")
    ]
    failures = registry.get_sample_value(
        "pipeline_pushgateway_failures_total", {"pipeline_id": "chaos"}
    )
    comparison = common.compare_table(chaos_table, expected, DAY)
    # three steps, each waits at most TIMEOUT + 0.5 s for its push (+ slack for a busy host)
    late = seconds - base_seconds
    on_time = late < 3 * (TIMEOUT + 0.5) + 5
    ok = result.success and comparison.exact and on_time and len(warnings) == 3 and failures == 3
    common.report(
        f"Pushgateway {kind} during a data run",
        1,
        comparison,
        0,
        ok,
        f"+{late:.1f}s vs no pushing, {len(warnings)} warnings, {failures} failures counted",
    )
    assert result.success
    assert comparison.exact, str(comparison)
    assert len(warnings) == 3, warnings
    assert failures == 3
    assert on_time, f"{late:.1f}s later than without pushing"


def common_url() -> str:
    return mysql_url()
