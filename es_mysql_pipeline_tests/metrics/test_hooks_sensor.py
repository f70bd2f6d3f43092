"""Step hooks and the run-status sensor, evaluated as Dagster does, against a real Pushgateway."""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from es_mysql_pipeline.hooks import push_step_metrics_on_failure, push_step_metrics_on_success
from es_mysql_pipeline.metrics.catalog import PrometheusRecorder, sample_key
from es_mysql_pipeline.metrics.pushgateway import PushgatewayResource
from es_mysql_pipeline.metrics.recorder import set_recorder
from es_mysql_pipeline.metrics.run_totals import MetricsCursor, fold_run
from es_mysql_pipeline_tests.fixtures.prometheus import PushgatewayServer

from .metrics_job import FAILED, INSERTED, PROCESSED, fetched, make_defs, run, tick


def gateway_samples(pg: PushgatewayServer, name: str, **labels: str) -> list[float]:
    out = []
    for family in text_string_to_metric_families(pg.metrics_text()):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                out.append(s.value)
    return out


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


def test_hooks_push_each_step_to_its_own_group(pushgateway: PushgatewayServer) -> None:
    res = PushgatewayResource(url=pushgateway.url, pipeline_id="h")
    recorder = PrometheusRecorder("h", CollectorRegistry())
    previous = set_recorder(recorder)
    try:
        recorder.records("processed", 5, "fetch")
        recorder.queue_depth(2)
        with dg.build_hook_context(resources={"pushgateway": res}, op=fetched.op) as ctx:
            push_step_metrics_on_success(ctx)
        recorder.records("failed", 2, "load")
        loaded_op = dg.op(name="loaded")(lambda: None)
        with dg.build_hook_context(resources={"pushgateway": res}, op=loaded_op) as ctx:
            push_step_metrics_on_failure(ctx)
    finally:
        set_recorder(previous)
    assert gateway_samples(
        pushgateway, "pipeline_step_records", step="fetched", result="processed"
    ) == [5]
    # The second step reports only its own increments, in its own group.
    assert gateway_samples(
        pushgateway, "pipeline_step_records", step="loaded", result="failed"
    ) == [2]
    assert (
        gateway_samples(pushgateway, "pipeline_step_records", step="loaded", result="processed")
        == []
    )
    assert gateway_samples(pushgateway, "pipeline_step_success", step="fetched") == [1]
    assert gateway_samples(pushgateway, "pipeline_step_success", step="loaded") == [0]
    assert gateway_samples(
        pushgateway, "pipeline_state", step="loaded", pipeline_state="error"
    ) == [1]
    assert gateway_samples(pushgateway, "pipeline_queue_depth", step="fetched") == [2]
    # Monotonic totals are never pushed per step (a fresh process would reset them).
    assert gateway_samples(pushgateway, "pipeline_records_processed_total") == []


def test_hooks_with_pushing_off_do_nothing() -> None:
    with dg.build_hook_context(
        resources={"pushgateway": PushgatewayResource()}, op=fetched.op
    ) as ctx:
        push_step_metrics_on_success(ctx)  # no recorder, no url: returns quietly


def test_sensor_counts_each_run_once_across_failures_and_restarts(
    pushgateway: PushgatewayServer, instance: dg.DagsterInstance
) -> None:
    defs = make_defs(PushgatewayResource(url=pushgateway.url, pipeline_id="s"))
    cursor = tick(defs, instance, None)
    assert gateway_samples(pushgateway, "pipeline_records_processed_total", stage="fetch") == [0]
    assert run(defs, instance)
    assert run(defs, instance)
    assert not run(defs, instance, fail=True)
    cursor = tick(defs, instance, cursor)
    cursor = tick(defs, instance, cursor)  # nothing new: nothing counted twice
    # Exactly one series (the sensor's group; no step group pushes totals), exact totals.
    assert gateway_samples(pushgateway, "pipeline_records_processed_total", stage="fetch") == [
        3 * PROCESSED
    ]
    assert gateway_samples(pushgateway, "pipeline_records_inserted_total", stage="load") == [
        3 * INSERTED
    ]
    assert gateway_samples(pushgateway, "pipeline_records_failed_total", stage="transform") == [
        3 * FAILED
    ]
    assert gateway_samples(pushgateway, "pipeline_runs_total", result="success") == [2]
    assert gateway_samples(pushgateway, "pipeline_runs_total", result="failure") == [1]
    assert gateway_samples(pushgateway, "pipeline_insert_duration_seconds_count") == [3]
    assert gateway_samples(pushgateway, "pipeline_run_duration_seconds_count") == [3]
    assert gateway_samples(pushgateway, "pipeline_last_run_success") == [0]
    # The last success survives the failed run: the sensor's group keeps it (one series),
    # the step group of the failed run has none.
    assert len(gateway_samples(pushgateway, "pipeline_last_success_timestamp_seconds")) == 1
    assert gateway_samples(pushgateway, "pipeline_step_success", step="loaded") == [0]

    # "Daemon restart": a new evaluation starts from the stored cursor only; the
    # Pushgateway lost its state too (restart without persistence).
    pushgateway.wipe()
    run_record_crash = instance.create_run_for_job(defs.get_job_def("metrics_job"))
    instance.report_run_failed(run_record_crash)  # crashed before any step or hook ran
    assert run(defs, instance)
    cursor = tick(defs, instance, cursor)
    assert gateway_samples(pushgateway, "pipeline_records_processed_total", stage="fetch") == [
        4 * PROCESSED
    ]
    assert gateway_samples(pushgateway, "pipeline_runs_total", result="success") == [3]
    assert gateway_samples(pushgateway, "pipeline_runs_total", result="failure") == [2]
    assert MetricsCursor.from_json(cursor).runs_counted == 5


def test_sensor_counts_runs_of_our_assets_whatever_their_job(
    pushgateway: PushgatewayServer, instance: dg.DagsterInstance
) -> None:
    """Issue 11: a user's job over our assets is counted (once); a job of other assets is not."""
    defs = make_defs(PushgatewayResource(url=pushgateway.url, pipeline_id="any"))
    assert run(defs, instance, job_name="user_job")
    assert run(defs, instance, job_name="metrics_job")
    assert run(defs, instance, job_name="unrelated_job")
    cursor = tick(defs, instance, None)
    cursor = tick(defs, instance, cursor)  # nothing new: nothing counted twice
    assert gateway_samples(pushgateway, "pipeline_runs_total", result="success") == [2]
    assert gateway_samples(pushgateway, "pipeline_records_processed_total", stage="fetch") == [
        2 * PROCESSED
    ]
    assert MetricsCursor.from_json(cursor).runs_counted == 2


def test_sensor_survives_a_down_pushgateway(instance: dg.DagsterInstance) -> None:
    defs = make_defs(
        PushgatewayResource(url="http://127.0.0.1:9", pipeline_id="d", timeout_seconds=0.5)
    )
    assert run(defs, instance)
    cursor = MetricsCursor.from_json(tick(defs, instance, None))
    assert cursor.push_failures == 1 and cursor.runs_counted == 1
    key = sample_key("pipeline_records_processed_total", {"pipeline_id": "d", "stage": "fetch"})
    assert cursor.totals[key] == PROCESSED  # kept for the next push


def test_fold_run_is_pure_and_ignores_foreign_families() -> None:
    cursor = MetricsCursor()
    delta = {
        sample_key(
            "pipeline_records_processed_total", {"pipeline_id": "other", "stage": "fetch"}
        ): 7.0,
        sample_key("pipeline_active_workers", {"pipeline_id": "x"}): 3.0,
    }
    fold_run(cursor, "p", "success", 12.0, 1000.0, [delta])
    assert (
        cursor.totals[
            sample_key("pipeline_records_processed_total", {"pipeline_id": "p", "stage": "fetch"})
        ]
        == 7
    )
    assert not any("active_workers" in k for k in cursor.totals)
    assert cursor.last_success == 1000.0 and cursor.last_run_duration == 12.0
    assert MetricsCursor.from_json(cursor.to_json()) == cursor
    assert MetricsCursor.from_json('{"v": 0}') == MetricsCursor()
