"""Every metric, through the recording API, on a fresh registry (get_sample_value)."""

from __future__ import annotations

import time

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from es_mysql_pipeline import __version__
from es_mysql_pipeline.metrics.catalog import (
    RECORDER_SPECS,
    SPECS,
    PrometheusRecorder,
    active_prometheus_recorder,
    bounded_error_type,
    enable_process_metrics,
)
from es_mysql_pipeline.metrics.recorder import NullRecorder, get_recorder, set_recorder

PID = {"pipeline_id": "t1"}


@pytest.fixture
def rec() -> PrometheusRecorder:
    return PrometheusRecorder("t1", CollectorRegistry(), source_type="csv", sink_type="mysql")


def value(rec: PrometheusRecorder, name: str, **labels: str) -> float | None:
    return rec.registry.get_sample_value(name, {**PID, **labels})


@pytest.mark.parametrize("outcome", ["processed", "inserted", "updated", "skipped", "failed"])
@pytest.mark.parametrize("stage", ["fetch", "transform", "load"])
def test_record_counters(rec: PrometheusRecorder, outcome: str, stage: str) -> None:
    name = f"pipeline_records_{outcome}_total"
    assert value(rec, name, stage=stage) == 0  # pre-initialised for rate()
    rec.records(outcome, 7, stage)  # type: ignore[arg-type]
    rec.records(outcome, 3, stage)  # type: ignore[arg-type]
    rec.records(outcome, 0, stage)  # type: ignore[arg-type]
    rec.records(outcome, -5, stage)  # type: ignore[arg-type]  # never goes down
    assert value(rec, name, stage=stage) == 10


@pytest.mark.parametrize("kind", ["fetch", "insert", "batch", "run"])
def test_duration_histograms(rec: PrometheusRecorder, kind: str) -> None:
    name = f"pipeline_{kind}_duration_seconds"
    rec.duration(kind, 0.3)  # type: ignore[arg-type]
    rec.duration(kind, 7.0)  # type: ignore[arg-type]
    assert value(rec, f"{name}_count") == 2
    assert value(rec, f"{name}_sum") == pytest.approx(7.3)
    assert value(rec, f"{name}_bucket", le="+Inf") == 2
    assert value(rec, f"{name}_bucket", le="30.0") == 2
    # Batch-sized buckets: there is a bound between 0.3 s and 7 s and one above 7 s.
    buckets = SPECS[name].buckets
    assert any(0.3 <= b < 7 for b in buckets) and max(buckets) >= 60


def test_gauges_state_errors_and_more(rec: PrometheusRecorder) -> None:
    rec.worker_delta(+1)
    rec.worker_delta(+1)
    rec.worker_delta(-1)
    assert value(rec, "pipeline_active_workers") == 1
    rec.queue_depth(4)
    assert value(rec, "pipeline_queue_depth") == 4
    assert value(rec, "pipeline_state", pipeline_state="stopped") == 1
    rec.state("running")
    assert value(rec, "pipeline_state", pipeline_state="running") == 1
    assert value(rec, "pipeline_state", pipeline_state="stopped") == 0
    rec.state("error")
    assert rec.current_state == "error"
    rec.error("ConnectionError", "load")
    rec.error("ConnectionError", "load")
    assert value(rec, "pipeline_errors_total", error_type="ConnectionError", stage="load") == 2
    rec.analysis("success", 5)
    rec.analysis("failure")
    assert value(rec, "pipeline_ai_analysis_total", result="success") == 5
    assert value(rec, "pipeline_ai_analysis_total", result="failure") == 1
    rec.retry("load")
    rec.retry("load", 2)
    assert value(rec, "pipeline_retries_total", stage="load") == 3
    rec.dead_letter("transform", 4)
    assert value(rec, "pipeline_dead_letter_records_total", stage="transform") == 4
    rec.last_record_timestamp(1_700_000_000.5)
    assert value(rec, "pipeline_last_record_timestamp_seconds") == 1_700_000_000.5
    assert value(rec, "pipeline_last_success_timestamp_seconds") is None  # not 1970
    before = time.time()
    rec.success()
    assert before <= (value(rec, "pipeline_last_success_timestamp_seconds") or 0) <= time.time()
    rec.push_failed()
    assert value(rec, "pipeline_pushgateway_failures_total") == 1


def test_info(rec: PrometheusRecorder) -> None:
    labels = {**PID, "version": __version__, "source_type": "csv", "sink_type": "mysql"}
    assert rec.registry.get_sample_value("pipeline_info", labels) == 1


def test_error_type_cardinality_is_bounded() -> None:
    assert bounded_error_type("ValueError") == "ValueError"
    assert bounded_error_type("bad value 'x' in row 12") == "bad_value__x__in_row_12"
    assert len(bounded_error_type("E" * 500)) == 64
    assert bounded_error_type("") == "unknown"


def test_names_follow_prometheus_conventions(rec: PrometheusRecorder) -> None:
    text = generate_latest(rec.registry).decode()
    for spec in RECORDER_SPECS:
        assert f"# TYPE {spec.name}" in text or spec.kind in ("info", "enum", "histogram")
        assert spec.name.startswith("pipeline_")
        if spec.kind == "counter":
            assert spec.name.endswith("_total")
        if spec.kind == "histogram":
            assert spec.name.endswith("_seconds")
        assert set(spec.labels) <= {
            "pipeline_id",
            "stage",
            "error_type",
            "result",
            "version",
            "source_type",
            "sink_type",
            "change",  # added, widened, discarded
        }
    assert "run_id" not in text


def test_delta_reports_each_step_once(rec: PrometheusRecorder) -> None:
    rec.records("processed", 10, "fetch")
    first = rec.take_delta()
    assert list(first.values()) == [10]
    assert rec.take_delta() == {}
    rec.records("inserted", 4, "load")
    rec.duration("insert", 0.2)
    rec.duration("run", 3)  # the sensor owns run durations in Dagster
    second = rec.take_delta()
    assert not any("run_duration" in k for k in second)
    assert any("pipeline_records_inserted_total" in k for k in second)
    assert not any("pipeline_records_processed_total" in k for k in second)


def test_null_recorder_is_default_and_noop() -> None:
    previous = set_recorder(None)
    try:
        null = get_recorder()
        assert type(null) is NullRecorder and active_prometheus_recorder() is None
        null.records("processed", 5, "fetch")
        null.duration("fetch", 1.0)
        null.state("error")
        null.success()
    finally:
        set_recorder(previous)


def test_enable_process_metrics_installs_a_recorder() -> None:
    info = {"source": {"type": "csv", "target": "a.csv"}, "sink": {"type": "jsonl"}}
    previous = get_recorder()
    try:
        rec = enable_process_metrics("cli", info)
        assert get_recorder() is rec and active_prometheus_recorder() is rec
        labels = {"pipeline_id": "cli", "version": __version__}
        labels |= {"source_type": "csv", "sink_type": "jsonl"}
        assert rec.registry.get_sample_value("pipeline_info", labels) == 1
    finally:
        set_recorder(previous)
