"""Pushgateway down or slow around a real data run (the partitioned asset job with the step
hooks, into MariaDB): the run succeeds on time and never touches the Pushgateway (the step
hooks only write to the run's event log); the metrics sensor's next tick is the one push, and
against a broken Pushgateway it waits one bounded timeout, logs one warning, counts one
failure in ``pipeline_pushgateway_failures_total`` (its cursor) and says the next tick
pushes again, which the next tick, against a working Pushgateway, does: no count lost.

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
from prometheus_client.parser import text_string_to_metric_families

from es_mysql_pipeline.assets import build_assets
from es_mysql_pipeline.assets.partitions import daily_partitions
from es_mysql_pipeline.hooks import PIPELINE_METRICS_HOOKS
from es_mysql_pipeline.metrics.catalog import PrometheusRecorder
from es_mysql_pipeline.metrics.pushgateway import PushgatewayResource
from es_mysql_pipeline.metrics.recorder import set_recorder
from es_mysql_pipeline.metrics.run_totals import MetricsCursor
from es_mysql_pipeline.resources.sinks import SqlSink
from es_mysql_pipeline.resources.sources import FileSource
from es_mysql_pipeline.sensors import WATCHED_ASSETS, evaluate_metrics_sensor, forget_kept_totals
from es_mysql_pipeline_tests.chaos import common
from es_mysql_pipeline_tests.chaos.conftest import CsvFactory
from es_mysql_pipeline_tests.fixtures.prometheus import PushgatewayServer
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
    gateway: tuple[str, str],
    csv_factory: CsvFactory,
    chaos_table: str,
    tmp_path: Path,
    pushgateway: PushgatewayServer,
) -> None:
    with contextlib.ExitStack() as stack:
        _scenario(stack, gateway, csv_factory, chaos_table, tmp_path, pushgateway)


def _scenario(
    stack: contextlib.ExitStack,
    gateway: tuple[str, str],
    csv_factory: CsvFactory,
    chaos_table: str,
    tmp_path: Path,
    working: PushgatewayServer,
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
    run_warnings = [
        e.user_message
        for e in instance.all_logs(result.run_id)
        if "the run goes on" in (e.user_message or "")
    ]
    comparison = common.compare_table(chaos_table, expected, DAY)
    late = seconds - base_seconds
    on_time = late < 5  # the data run does not push at all: only a busy host's slack

    # The sensor's tick: the one writer to the Pushgateway.
    gateway_resource = PushgatewayResource(url=url, pipeline_id="chaos", timeout_seconds=TIMEOUT)
    tick_started = time.monotonic()
    with dg.build_sensor_context(instance=instance, cursor=None) as context:
        said = evaluate_metrics_sensor(context, gateway_resource, WATCHED_ASSETS).skip_message
        raw_cursor = context.cursor
        cursor = MetricsCursor.from_json(raw_cursor)
    tick_seconds = time.monotonic() - tick_started
    # The next tick, in a restarted process, against a working Pushgateway: what the
    # failed tick said it would push is pushed.
    forget_kept_totals()
    with dg.build_sensor_context(instance=instance, cursor=raw_cursor) as context:
        evaluate_metrics_sensor(
            context,
            PushgatewayResource(url=working.url, pipeline_id="chaos"),
            WATCHED_ASSETS,
        )
    pushed = working.metrics_text()
    ok = (
        result.success
        and comparison.exact
        and on_time
        and not run_warnings
        and cursor.push_failures == {"chaos": 1}
        and cursor.runs_counted == 1
    )
    common.report(
        f"Pushgateway {kind} around a data run",
        1,
        comparison,
        0,
        ok,
        f"+{late:.1f}s vs no pushing, sensor tick {tick_seconds:.1f}s, "
        f"{cursor.push_failures} push failure counted",
    )
    assert result.success
    assert comparison.exact, str(comparison)
    assert not run_warnings, run_warnings  # steps never wait on the Pushgateway
    assert on_time, f"{late:.1f}s later than without pushing"
    # one failed push per tick (the totals group; step groups wait for the next tick) ...
    assert cursor.push_failures == {"chaos": 1}
    assert tick_seconds < TIMEOUT + 0.5 + 5
    assert said is not None and "the next tick pushes them again" in said, said
    # ... and nothing lost: the run with pushing on is counted, and the next tick pushes it;
    # the baseline run (pushing off: its steps recorded nothing) is not counted as a run.
    assert cursor.runs_counted == 1
    assert "1 finished run(s) not counted" in said
    assert pushed_values(pushed, "pipeline_runs_total", result="success") == [1]
    assert pushed_values(pushed, "pipeline_pushgateway_failures_total") == [1]
    assert sum(pushed_values(pushed, "pipeline_records_processed_total")) > 0


def pushed_values(text: str, name: str, **labels: str) -> list[float]:
    """Values of ``name`` (pipeline ``chaos``) in a Pushgateway's exposition."""
    return [
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
        and s.labels.get("pipeline_id") == "chaos"
        and all(s.labels.get(k) == v for k, v in labels.items())
    ]


def common_url() -> str:
    return mysql_url()
