"""The run-status sensor that turns finished Dagster runs into monotonic Prometheus totals.

Why a plain ``@sensor`` and not ``@run_status_sensor``: a run-status sensor's cursor
belongs to Dagster (it refuses a user cursor), and one such sensor watches one status.
This sensor reads the same run-status events (success, failure, cancel: a run whose
process crashed before any hook ran still gets its failure event) with
``fetch_run_status_changes``, and keeps in its own cursor both the event watermarks and
the totals. Watermarks and totals change in one cursor write, so each run is counted
exactly once, and the totals survive daemon restarts; a lost Pushgateway is refilled by
the next push.

It counts every finished run, of any job, that was to materialize one of our assets
(:data:`WATCHED_ASSETS`): our job, Dagster's implicit asset job (asset-graph launches,
backfills), a celery executor job or a user's job. Per run it adds:
``pipeline_runs_total{result}``, the run's duration to
``pipeline_run_duration_seconds``, and the increments each step hook left in the event
log to the ``_total`` counters and histograms. Then it pushes them all as the group
``{job, pipeline_id}``, with ``pipeline_last_success_timestamp_seconds``,
``pipeline_last_run_duration_seconds`` and ``pipeline_last_run_success`` (of the run
that ended last).

It is also the only writer of the step groups ``{job, pipeline_id, step}``: each step hook
leaves its last-run values in the event log, the cursor keeps per step those of the
execution that ended last, and every tick pushes them. Concurrent runs of a step thus
never overwrite a newer execution's values with an older one's, and no run id becomes a
label.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Set as AbstractSet

import dagster as dg

from es_mysql_pipeline.hooks import SNAPSHOT_METADATA_KEY, STEP_METADATA_KEY
from es_mysql_pipeline.metrics.pushgateway import PushgatewayResource, Warn
from es_mysql_pipeline.metrics.run_totals import (
    MetricsCursor,
    StepSnapshot,
    cursor_registry,
    fold_run,
    step_registry_of,
    zero_totals,
)

RUN_END_EVENTS: tuple[dg.DagsterEventType, ...] = (
    dg.DagsterEventType.RUN_SUCCESS,
    dg.DagsterEventType.RUN_FAILURE,
    dg.DagsterEventType.RUN_CANCELED,
)
RESULT_OF_EVENT = {
    dg.DagsterEventType.RUN_SUCCESS.value: "success",
    dg.DagsterEventType.RUN_FAILURE.value: "failure",
    dg.DagsterEventType.RUN_CANCELED.value: "canceled",
}
DEFAULT_FETCH_LIMIT = 200


def step_records(
    instance: dg.DagsterInstance, run_id: str
) -> tuple[list[dict[str, float]], list[StepSnapshot]]:
    """The increments and last-run values the step hooks of ``run_id`` left in its log."""
    deltas: list[dict[str, float]] = []
    snapshots: list[StepSnapshot] = []
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        event = entry.dagster_event
        data = getattr(event, "engine_event_data", None) if event else None
        metadata = data.metadata if data is not None else {}
        delta = metadata.get(SNAPSHOT_METADATA_KEY)
        if isinstance(delta, dg.JsonMetadataValue) and isinstance(delta.data, dict):
            deltas.append({str(k): float(v) for k, v in delta.data.items()})
        last_run = metadata.get(STEP_METADATA_KEY)
        if isinstance(last_run, dg.JsonMetadataValue):
            snapshot = StepSnapshot.from_data(last_run.data)
            if snapshot is not None:
                snapshots.append(snapshot)
    return deltas, snapshots


def is_run_of(
    instance: dg.DagsterInstance, run: dg.DagsterRun, asset_keys: AbstractSet[dg.AssetKey]
) -> bool:
    """Whether ``run`` (of any job: ours, a user's, a celery job, a backfill) was to
    materialize one of ``asset_keys``: its planned assets, written when the run is created,
    so a run that crashed before its first step counts too."""
    if run.asset_selection and run.asset_selection & asset_keys:
        return True
    for entry in instance.all_logs(
        run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED
    ):
        event = entry.dagster_event
        if event is not None and event.asset_key in asset_keys:
            return True
    return False


def evaluate_metrics_sensor(
    context: dg.SensorEvaluationContext,
    pushgateway: PushgatewayResource,
    asset_keys: AbstractSet[dg.AssetKey],
    fetch_limit: int = DEFAULT_FETCH_LIMIT,
) -> dg.SkipReason:
    """One tick: fold newly finished runs of ``asset_keys`` into the cursor, then push."""
    if not pushgateway.enabled:
        return dg.SkipReason("pushgateway.url is empty: run metrics are not pushed")
    pid = pushgateway.pipeline_id
    cursor = MetricsCursor.from_json(context.cursor)
    for key, zero in zero_totals(pid).items():
        cursor.totals.setdefault(key, zero)
    instance = context.instance
    counted = 0
    for event_type in RUN_END_EVENTS:
        records = instance.fetch_run_status_changes(
            dg.RunStatusChangeRecordsFilter(
                event_type=event_type,  # type: ignore[arg-type]
                after_storage_id=cursor.after.get(event_type.value, -1),
            ),
            limit=fetch_limit,
            ascending=True,
        ).records
        for record in records:
            cursor.after[event_type.value] = record.storage_id
            run_record = instance.get_run_record_by_id(record.event_log_entry.run_id)
            if run_record is None or not is_run_of(instance, run_record.dagster_run, asset_keys):
                continue
            start, end = run_record.start_time, run_record.end_time or record.timestamp
            deltas, steps = step_records(instance, run_record.dagster_run.run_id)
            fold_run(
                cursor,
                pid,
                RESULT_OF_EVENT[event_type.value],
                (end - start) if start is not None and end is not None else None,
                end,
                deltas,
                steps,
            )
            counted += 1
    cursor.push_failures += push_groups(pushgateway, cursor, context.log.warning)
    context.update_cursor(cursor.to_json())
    return dg.SkipReason(
        f"counted {counted} finished run(s) of {_names(asset_keys)}; "
        f"{cursor.runs_counted} counted in all"
    )


def push_groups(pushgateway: PushgatewayResource, cursor: MetricsCursor, warn: Warn) -> int:
    """Push the totals group, then every step group; how many pushes failed.

    Every tick pushes every group, so a Pushgateway that lost its state is refilled. When
    the totals push fails the step groups wait for the next tick: a down Pushgateway
    holds a tick up for one timeout, not one per group.
    """
    pid = pushgateway.pipeline_id
    if not pushgateway.push(
        cursor_registry(cursor, pid), pushgateway.grouping_key(pipeline_id=pid), warn=warn
    ):
        return 1
    failures = 0
    for step, snapshot in sorted(cursor.steps.items()):
        if not pushgateway.push(
            step_registry_of(snapshot, pid),
            pushgateway.grouping_key(pipeline_id=pid, step=step),
            warn=warn,
        ):
            failures += 1
    return failures


#: Our assets: a finished run of any job that was to materialize one of them is counted.
WATCHED_ASSETS: frozenset[dg.AssetKey] = frozenset(
    dg.AssetKey(name) for name in ("raw_records", "clean_records", "loaded_records")
)


def _names(asset_keys: AbstractSet[dg.AssetKey]) -> str:
    return ", ".join(sorted(key.to_user_string() for key in asset_keys))


def build_pipeline_metrics_sensor(
    asset_keys: Iterable[dg.AssetKey] = WATCHED_ASSETS,
    name: str = "pipeline_metrics_sensor",
    minimum_interval_seconds: int = 30,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
) -> dg.SensorDefinition:
    """The sensor for runs of ``asset_keys`` (whatever their job); needs ``pushgateway``."""
    keys = frozenset(asset_keys)

    @dg.sensor(
        name=name,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description=(
            "Pushes run outcomes, durations and monotonic record totals of every run of "
            f"{_names(keys)} to the Pushgateway (totals live in the cursor)."
        ),
    )
    def _sensor(
        context: dg.SensorEvaluationContext, pushgateway: PushgatewayResource
    ) -> dg.SkipReason:
        return evaluate_metrics_sensor(context, pushgateway, keys)

    return _sensor


pipeline_metrics_sensor = build_pipeline_metrics_sensor()
