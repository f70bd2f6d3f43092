"""Step hooks: when a step of our assets ends, leave what it recorded in the run's event log.

The hooks push nothing. Each writes one engine event into its run's log, at its step
(``DagsterInstance.report_engine_event``, public API): a line for people ("step
loaded_records: inserted 590 (load), failed 10 (transform)") and a
:class:`~es_mysql_pipeline.metrics.run_totals.StepRecord` the run-status sensor
(:mod:`es_mysql_pipeline.sensors`) reads when the run has finished:

* the step's counter and histogram *increments* (a fresh step process starts its counters
  at zero, which ``rate()`` would misread); the sensor adds them, once per run, to the
  totals of the run's pipeline;
* the step's last-run values (state, data freshness, info; ``pipeline_step_records``,
  duration, end time, success). The sensor keeps, per step, those of the execution that
  ended last and pushes them as the group ``{job, pipeline_id, step}``.

Why the event log and not a file: it is the one store every step process reaches,
whatever the executor (in-process, multiprocess, celery workers on other hosts), it lives
as long as the run, and the record stays readable in the run's log in the UI.
One writer per group (the sensor, whose ticks never overlap) is what keeps two runs of
the same step from overwriting each other's group with older values, without a run id
label; and nothing is lost before the sensor reads it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import dagster as dg
from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector

from es_mysql_pipeline.metrics.catalog import (
    OUTCOMES,
    RECORD_SPECS,
    STEP_DURATION,
    STEP_END,
    STEP_RECORDS,
    STEP_SUCCESS,
    PrometheusRecorder,
    active_prometheus_recorder,
    build_metric,
    parse_sample_key,
)
from es_mysql_pipeline.metrics.pushgateway import PushgatewayResource
from es_mysql_pipeline.metrics.run_totals import StepRecord, StepSnapshot

PUSHGATEWAY_KEY = "pushgateway"
_RECORD_SAMPLE_TO_OUTCOME = {spec.name: outcome for outcome, spec in RECORD_SPECS.items()}


class _GaugesOf(Collector):
    """The gauge-like families of a registry: last-run values, not totals."""

    def __init__(self, source: CollectorRegistry) -> None:
        self._source = source

    def collect(self) -> Any:
        for family in self._source.collect():
            if family.type in ("gauge", "stateset", "info"):
                yield family


def step_registry(
    recorder: PrometheusRecorder,
    delta: Mapping[str, float],
    *,
    success: bool,
    duration_seconds: float | None,
    end_time: float,
) -> CollectorRegistry:
    """What one step's group shows: the recorder's gauges plus its own last-run values."""
    registry = CollectorRegistry()
    registry.register(_GaugesOf(recorder.registry))
    pid = recorder.pipeline_id
    records = build_metric(STEP_RECORDS, registry)
    for key, value in delta.items():
        name, labels = parse_sample_key(key)
        outcome = _RECORD_SAMPLE_TO_OUTCOME.get(name)
        if outcome is not None:
            records.labels(pid, outcome, labels.get("stage", "load")).inc(value)
    build_metric(STEP_SUCCESS, registry).labels(pid).set(1 if success else 0)
    build_metric(STEP_END, registry).labels(pid).set(end_time)
    if duration_seconds is not None:
        build_metric(STEP_DURATION, registry).labels(pid).set(duration_seconds)
    return registry


def _step_name(context: dg.HookContext) -> str:
    return context.op.name


def _step_key(context: dg.HookContext) -> str:
    try:
        return context.step_key
    except Exception:  # an unbound test context has no step
        return context.op.name


def _instance(context: dg.HookContext) -> dg.DagsterInstance | None:
    try:
        return context.instance
    except Exception:  # build_hook_context() without instance=
        return None


def _step_duration(context: dg.HookContext, instance: dg.DagsterInstance | None) -> float | None:
    """From the step's STEP_START event: the recorder may have lived through earlier steps."""
    if instance is None:
        return None
    step_key = _step_key(context)
    starts = [
        e.timestamp
        for e in instance.all_logs(context.run_id, of_type=dg.DagsterEventType.STEP_START)
        if e.step_key == step_key
    ]
    return max(0.0, time.time() - max(starts)) if starts else None


def _summary(step_key: str, delta: Mapping[str, float]) -> str:
    """The record's line for people: the step's record counts by outcome and stage."""
    counts = []
    for key, value in delta.items():
        name, labels = parse_sample_key(key)
        outcome = _RECORD_SAMPLE_TO_OUTCOME.get(name)
        if outcome is not None:
            stage = labels.get("stage", "load")
            counts.append((OUTCOMES.index(outcome), f"{outcome} {value:,.0f} ({stage})"))
    what = ", ".join(text for _, text in sorted(counts)) if counts else "no records"
    return f"step {step_key} recorded for the metrics sensor: {what}"


def record_step_metrics(context: dg.HookContext, *, success: bool) -> bool:
    """Write this step's increments and last-run values for the sensor; never raises."""
    recorder = active_prometheus_recorder()
    pushgateway: PushgatewayResource = getattr(context.resources, PUSHGATEWAY_KEY)
    instance = _instance(context)
    if recorder is None or not pushgateway.enabled or instance is None:
        return False
    try:
        if not success and recorder.current_state != "error":
            recorder.state("error")
        delta = recorder.take_delta()
        end = time.time()
        registry = step_registry(
            recorder,
            delta,
            success=success,
            duration_seconds=_step_duration(context, instance),
            end_time=end,
        )
        snapshot = StepSnapshot.of_registry(_step_name(context), end, registry)
        record = StepRecord(snapshot, dict(delta))
        instance.report_engine_event(
            record.to_message(_summary(_step_key(context), delta)),
            step_key=_step_key(context),
            job_name=context.job_name,
            run_id=context.run_id,
        )
    except Exception as exc:  # metrics must never fail the data run
        context.log.warning(f"pipeline metrics of this step were not recorded: {exc!r}")
        return False
    return True


@dg.success_hook(name="record_step_metrics_on_success", required_resource_keys={PUSHGATEWAY_KEY})
def record_step_metrics_on_success(context: dg.HookContext) -> None:
    """Record the step's metrics after it succeeded."""
    record_step_metrics(context, success=True)


@dg.failure_hook(name="record_step_metrics_on_failure", required_resource_keys={PUSHGATEWAY_KEY})
def record_step_metrics_on_failure(context: dg.HookContext) -> None:
    """Record the step's metrics after it failed (state ``error``, partial counts)."""
    record_step_metrics(context, success=False)


#: On the assets (``@asset(hooks=PIPELINE_METRICS_HOOKS)``), so every job that runs them
#: records their metrics.
PIPELINE_METRICS_HOOKS: set[dg.HookDefinition] = {
    record_step_metrics_on_success,
    record_step_metrics_on_failure,
}
