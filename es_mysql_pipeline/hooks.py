"""Step hooks: when a step of the asset job ends, push what it recorded.

Each step of the multiprocess executor runs in its own process with its own registry, so
each pushes to its own Pushgateway group ``{job, pipeline_id, step}``: no step overwrites
another's metrics. Pushed per step (Prometheus' batch-job practice, "last run" values):
the gauges (workers, queue depth, state, data freshness, info), the step's record counts
as ``pipeline_step_records``, its duration, end time and success.

The monotonic ``_total`` counters and histograms are *not* pushed per step: a fresh
process starts them at zero each run, which ``rate()`` would misread. Instead the hook
writes the step's increments into the run's event log (an engine event with
:data:`SNAPSHOT_METADATA_KEY`), and the run-status sensor (:mod:`es_mysql_pipeline.sensors`)
adds them, once per run, to totals it keeps in its cursor and pushes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import dagster as dg

# Dagster has no public way for a hook to write metadata into its run's event log; the
# engine event (read back by the sensor through public EventLogEntry fields) is the one
# private name this module needs.
from dagster._core.events import EngineEventData
from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector

from es_mysql_pipeline.metrics.catalog import (
    PUSH_FAILURES,
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

SNAPSHOT_METADATA_KEY = "es_mysql_pipeline/metrics_delta"
PUSHGATEWAY_KEY = "pushgateway"
_RECORD_SAMPLE_TO_OUTCOME = {spec.name: outcome for outcome, spec in RECORD_SPECS.items()}


class _GaugesOf(Collector):
    """The gauge-like families of a registry (and the push-failure counter), for a push."""

    def __init__(self, source: CollectorRegistry) -> None:
        self._source = source

    def collect(self) -> Any:
        for family in self._source.collect():
            if family.type in ("gauge", "stateset", "info") or family.name == PUSH_FAILURES.family:
                yield family


def step_registry(
    recorder: PrometheusRecorder,
    delta: Mapping[str, float],
    *,
    success: bool,
    duration_seconds: float | None,
) -> CollectorRegistry:
    """What one step pushes: the recorder's gauges plus the step's own last-run values."""
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
    build_metric(STEP_END, registry).labels(pid).set(time.time())
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


def push_step_metrics(context: dg.HookContext, *, success: bool) -> bool:
    """Record this step's increments for the sensor and push its group; never raises."""
    recorder = active_prometheus_recorder()
    pushgateway: PushgatewayResource = getattr(context.resources, PUSHGATEWAY_KEY)
    if recorder is None or not pushgateway.enabled:
        return False
    try:
        if not success and recorder.current_state != "error":
            recorder.state("error")
        delta = recorder.take_delta()
        instance = _instance(context)
        if instance is not None and delta:
            instance.report_engine_event(
                f"pipeline metrics of step {_step_key(context)}: {len(delta)} samples grew",
                engine_event_data=EngineEventData(
                    metadata={SNAPSHOT_METADATA_KEY: dg.MetadataValue.json(dict(delta))}
                ),
                step_key=_step_key(context),
                job_name=context.job_name,
                run_id=context.run_id,
            )
        registry = step_registry(
            recorder, delta, success=success, duration_seconds=_step_duration(context, instance)
        )
    except Exception as exc:  # metrics must never fail the data run
        context.log.warning(f"pipeline metrics of this step were not recorded: {exc!r}")
        return False
    return pushgateway.push(
        registry,
        pushgateway.grouping_key(pipeline_id=recorder.pipeline_id, step=_step_name(context)),
        recorder=recorder,
        warn=context.log.warning,
    )


@dg.success_hook(name="push_step_metrics_on_success", required_resource_keys={PUSHGATEWAY_KEY})
def push_step_metrics_on_success(context: dg.HookContext) -> None:
    """Push the step's metrics after it succeeded."""
    push_step_metrics(context, success=True)


@dg.failure_hook(name="push_step_metrics_on_failure", required_resource_keys={PUSHGATEWAY_KEY})
def push_step_metrics_on_failure(context: dg.HookContext) -> None:
    """Push the step's metrics after it failed (state ``error``, partial counts)."""
    push_step_metrics(context, success=False)


#: Pass as ``define_asset_job(..., hooks=PIPELINE_METRICS_HOOKS)``.
PIPELINE_METRICS_HOOKS: set[dg.HookDefinition] = {
    push_step_metrics_on_success,
    push_step_metrics_on_failure,
}
