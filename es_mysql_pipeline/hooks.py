"""Step hooks: when a step of our assets ends, leave what it recorded in the run's event log.

The hooks push nothing. Each writes one engine event at its step (public
``DagsterInstance.report_engine_event``): a line for people ("step loaded_records recorded
for the metrics sensor: inserted 590 (load), failed 10 (transform)") and a
:class:`~es_mysql_pipeline.metrics.run_totals.StepRecord` (the step's counter increments
and last-run values) that the metrics sensor folds once the run has ended. The event log
is the one store every step process reaches, whatever the executor, and one writer per
group (the sensor) keeps concurrent runs of a step from overwriting each other's group.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import dagster as dg

from es_mysql_pipeline.metrics.catalog import (
    OUTCOMES,
    STEP_FAMILIES,
    active_prometheus_recorder,
    parse_sample_key,
    sample_key,
)
from es_mysql_pipeline.metrics.pushgateway import PushgatewayResource
from es_mysql_pipeline.metrics.run_totals import StepRecord, StepSnapshot

PUSHGATEWAY_KEY = "pushgateway"
_OUTCOME_OF = {f"pipeline_records_{o}_total": o for o in OUTCOMES}


def _record_counts(delta: Mapping[str, float]) -> list[tuple[str, str, float]]:
    """``(outcome, stage, n)`` of the ``pipeline_records_*_total`` increments, in outcome order."""
    counts = []
    for key, n in delta.items():
        name, labels = parse_sample_key(key)
        if name in _OUTCOME_OF:
            counts.append((_OUTCOME_OF[name], labels.get("stage", "load"), n))
    return sorted(counts, key=lambda c: (OUTCOMES.index(c[0]), c[1]))


def record_step_metrics(context: dg.HookContext, *, success: bool) -> bool:
    """Write this step's increments and last-run values for the sensor; never raises."""
    recorder = active_prometheus_recorder()
    pushgateway: PushgatewayResource = getattr(context.resources, PUSHGATEWAY_KEY)
    if recorder is None or not pushgateway.enabled:
        return False
    try:
        instance = context.instance
    except Exception:  # build_hook_context() without instance=
        return False
    try:
        if not success:
            recorder.state("error")
        delta = recorder.take_delta()
        end = time.time()
        try:
            step_key = context.step_key
        except Exception:  # an unbound test context has no step
            step_key = context.op.name
        # from the step's STEP_START event: the recorder may have lived through earlier steps
        starts = [
            e.timestamp
            for e in instance.all_logs(context.run_id, of_type=dg.DagsterEventType.STEP_START)
            if e.step_key == step_key
        ]
        duration = max(0.0, time.time() - max(starts)) if starts else None
        # the group shows the recorder's last-run values and the step's own
        families = recorder.samples(STEP_FAMILIES)
        pid = {"pipeline_id": recorder.pipeline_id}
        counts = _record_counts(delta)
        families["pipeline_step_records"] = {
            sample_key("pipeline_step_records", {**pid, "result": outcome, "stage": stage}): n
            for outcome, stage, n in counts
        }
        own = {
            "pipeline_step_success": 1.0 if success else 0.0,
            "pipeline_step_end_timestamp_seconds": end,
            "pipeline_step_duration_seconds": duration,
        }
        for name, value in own.items():
            if value is not None:
                families[name] = {sample_key(name, pid): value}
        said = ", ".join(f"{o} {n:,.0f} ({s})" for o, s, n in counts) or "no records"
        record = StepRecord(StepSnapshot(context.op.name, end, families), dict(delta))
        instance.report_engine_event(
            record.to_message(f"step {step_key} recorded for the metrics sensor: {said}"),
            step_key=step_key,
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
