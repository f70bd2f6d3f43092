"""Every metric, through the recording API, on a fresh registry (get_sample_value)."""

from __future__ import annotations

import argparse
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
)
from es_mysql_pipeline.metrics.endpoint import start_cli_metrics
from es_mysql_pipeline.metrics.recorder import NullRecorder, get_recorder, set_recorder

PID = {"pipeline_id": "t1"}


@pytest.fixture
def recorder() -> PrometheusRecorder:
    return PrometheusRecorder("t1", CollectorRegistry(), source_type="csv", sink_type="mysql")


def value(recorder: PrometheusRecorder, name: str, **labels: str) -> float | None:
    return recorder.registry.get_sample_value(name, {**PID, **labels})


@pytest.mark.parametrize("outcome", ["processed", "inserted", "updated", "skipped", "failed"])
@pytest.mark.parametrize("stage", ["fetch", "transform", "load"])
def test_record_counters(recorder: PrometheusRecorder, outcome: str, stage: str) -> None:
    name = f"pipeline_records_{outcome}_total"
    assert value(recorder, name, stage=stage) == 0  # pre-initialised for rate()
    recorder.records(outcome, 7, stage)  # type: ignore[arg-type]
    recorder.records(outcome, 3, stage)  # type: ignore[arg-type]
    recorder.records(outcome, 0, stage)  # type: ignore[arg-type]
    recorder.records(outcome, -5, stage)  # type: ignore[arg-type]  # never goes down
    assert value(recorder, name, stage=stage) == 10


@pytest.mark.parametrize("kind", ["fetch", "insert", "batch", "run"])
def test_duration_histograms(recorder: PrometheusRecorder, kind: str) -> None:
    name = f"pipeline_{kind}_duration_seconds"
    recorder.duration(kind, 0.3)  # type: ignore[arg-type]
    recorder.duration(kind, 7.0)  # type: ignore[arg-type]
    assert value(recorder, f"{name}_count") == 2
    assert value(recorder, f"{name}_sum") == pytest.approx(7.3)
    assert value(recorder, f"{name}_bucket", le="+Inf") == 2
    assert value(recorder, f"{name}_bucket", le="30.0") == 2
    # Batch-sized buckets: there is a bound between 0.3 s and 7 s and one above 7 s.
    buckets = SPECS[name].buckets
    assert any(0.3 <= b < 7 for b in buckets) and max(buckets) >= 60


def test_gauges_state_errors_and_more(recorder: PrometheusRecorder) -> None:
    recorder.worker_delta(+1)
    recorder.worker_delta(+1)
    recorder.worker_delta(-1)
    assert value(recorder, "pipeline_active_workers") == 1
    recorder.queue_depth(4)
    assert value(recorder, "pipeline_queue_depth") == 4
    assert value(recorder, "pipeline_state", pipeline_state="stopped") == 1
    recorder.state("running")
    assert value(recorder, "pipeline_state", pipeline_state="running") == 1
    assert value(recorder, "pipeline_state", pipeline_state="stopped") == 0
    recorder.state("error")
    assert recorder.current_state == "error"
    recorder.error("ConnectionError", "load")
    recorder.error("ConnectionError", "load")
    assert value(recorder, "pipeline_errors_total", error_type="ConnectionError", stage="load") == 2
    recorder.analysis("success", 5)
    recorder.analysis("failure")
    assert value(recorder, "pipeline_ai_analysis_total", result="success") == 5
    assert value(recorder, "pipeline_ai_analysis_total", result="failure") == 1
    recorder.retry("load")
    recorder.retry("load", 2)
    assert value(recorder, "pipeline_retries_total", stage="load") == 3
    recorder.dead_letter("transform", 4)
    assert value(recorder, "pipeline_dead_letter_records_total", stage="transform") == 4
    recorder.last_record_timestamp(1_700_000_000.5)
    assert value(recorder, "pipeline_last_record_timestamp_seconds") == 1_700_000_000.5
    assert value(recorder, "pipeline_last_success_timestamp_seconds") is None  # not 1970
    before = time.time()
    recorder.success()
    assert (
        before <= (value(recorder, "pipeline_last_success_timestamp_seconds") or 0) <= time.time()
    )
    recorder.push_failed()
    assert value(recorder, "pipeline_pushgateway_failures_total") == 1


def test_info(recorder: PrometheusRecorder) -> None:
    labels = {**PID, "version": __version__, "source_type": "csv", "sink_type": "mysql"}
    assert recorder.registry.get_sample_value("pipeline_info", labels) == 1


def test_error_type_cardinality_is_bounded() -> None:
    assert bounded_error_type("ValueError") == "ValueError"
    assert bounded_error_type("bad value 'x' in row 12") == "bad_value__x__in_row_12"
    assert len(bounded_error_type("E" * 500)) == 64
    assert bounded_error_type("") == "unknown"


def test_names_follow_prometheus_conventions(recorder: PrometheusRecorder) -> None:
    text = generate_latest(recorder.registry).decode()
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
            "mode",  # hard, soft (deletes)
        }
    assert "run_id" not in text


def test_delta_reports_each_step_once(recorder: PrometheusRecorder) -> None:
    recorder.records("processed", 10, "fetch")
    first = recorder.take_delta()
    assert list(first.values()) == [10]
    assert recorder.take_delta() == {}
    recorder.records("inserted", 4, "load")
    recorder.duration("insert", 0.2)
    recorder.duration("run", 3)  # the sensor owns run durations in Dagster
    second = recorder.take_delta()
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


def test_prometheus_recorder_records_every_method_of_the_base() -> None:
    """The base records nothing, so a method the Prometheus recorder forgot would be lost."""
    methods = [name for name in vars(NullRecorder) if not name.startswith("_")]
    assert len(methods) >= 10
    assert [m for m in methods if m not in vars(PrometheusRecorder)] == []


def test_enable_process_metrics_installs_a_recorder() -> None:
    """The CLI's recorder: installed for the process, ``pipeline_info`` from its resources."""

    class Described:
        def __init__(self, **d: str) -> None:
            self.d = d

        def describe(self) -> dict[str, str]:
            return self.d

    resources = {"source": Described(type="csv", target="a.csv"), "sink": Described(type="jsonl")}
    args = argparse.Namespace(pipeline_id="cli", metrics_host="127.0.0.1", metrics_port=0)
    previous = get_recorder()
    metrics = start_cli_metrics(args, resources)
    try:
        recorder = metrics.recorder
        assert get_recorder() is recorder and active_prometheus_recorder() is recorder
        labels = {"pipeline_id": "cli", "version": __version__}
        labels |= {"source_type": "csv", "sink_type": "jsonl"}
        assert recorder.registry.get_sample_value("pipeline_info", labels) == 1
    finally:
        metrics.stop()
        set_recorder(previous)


def test_schema_changes_and_deletes_are_counted(recorder: PrometheusRecorder) -> None:
    recorder.schema_change("added", 2)
    recorder.schema_change("added", 1)
    recorder.deleted("soft", 4)
    assert value(recorder, "pipeline_schema_changes_total", change="added") == 3
    assert value(recorder, "pipeline_records_deleted_total", mode="soft") == 4
