"""The run-status sensor that turns finished Dagster runs into monotonic Prometheus totals.

Why a plain ``@sensor`` and not ``@run_status_sensor``: a run-status sensor's cursor
belongs to Dagster (it refuses a user cursor), and one such sensor watches one status.
This sensor reads the same run-status events (success, failure, cancel: a run whose
process crashed before any hook ran still gets its failure event) with
``fetch_run_status_changes``, and keeps in its own cursor both the event watermarks and
the totals. Watermarks and totals change in one cursor write, so each run is counted
exactly once, and the totals survive daemon restarts; a lost Pushgateway is refilled by
the next push.

Per run it adds: ``pipeline_runs_total{result}``, the run's duration to
``pipeline_run_duration_seconds``, and the increments each step hook left in the event
log to the ``_total`` counters and histograms. Then it pushes them all as the group
``{job, pipeline_id}``, with ``pipeline_last_success_timestamp_seconds``,
``pipeline_last_run_duration_seconds`` and ``pipeline_last_run_success``.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
from dagster._core.events import DagsterEventType
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from es_mysql_pipeline.hooks import SNAPSHOT_METADATA_KEY
from es_mysql_pipeline.metrics.definitions import (
    AI_ANALYSIS,
    CUMULATIVE_FAMILIES,
    DURATION_SPECS,
    LAST_RUN_DURATION,
    LAST_RUN_SUCCESS,
    LAST_SUCCESS,
    OUTCOMES,
    PUSH_FAILURES,
    RECORD_SPECS,
    RUN_DURATION,
    RUNS,
    SPECS,
    STAGES,
    parse_sample_key,
    sample_key,
)
from es_mysql_pipeline.metrics.pushgateway import PushgatewayResource

CURSOR_VERSION = 1
RUN_END_EVENTS: tuple[DagsterEventType, ...] = (
    DagsterEventType.RUN_SUCCESS,
    DagsterEventType.RUN_FAILURE,
    DagsterEventType.RUN_CANCELED,
)
RESULT_OF_EVENT = {
    DagsterEventType.RUN_SUCCESS.value: "success",
    DagsterEventType.RUN_FAILURE.value: "failure",
    DagsterEventType.RUN_CANCELED.value: "canceled",
}
DEFAULT_FETCH_LIMIT = 200


@dataclass
class MetricsCursor:
    """Everything the sensor must remember: event watermarks and the running totals."""

    after: dict[str, int] = field(default_factory=dict)
    totals: dict[str, float] = field(default_factory=dict)
    last_success: float | None = None
    last_run_duration: float | None = None
    last_run_success: int | None = None
    push_failures: int = 0
    runs_counted: int = 0

    def to_json(self) -> str:
        return json.dumps({"v": CURSOR_VERSION, **self.__dict__}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | None) -> MetricsCursor:
        """A fresh cursor for ``None`` or a cursor of another version."""
        if not text:
            return cls()
        data = json.loads(text)
        if data.pop("v", None) != CURSOR_VERSION:
            return cls()
        return cls(**data)


def _zero_totals(pipeline_id: str) -> dict[str, float]:
    """Known series at zero, so the first run's increase is visible to ``rate()``."""
    zeros: dict[str, float] = {}
    for outcome in OUTCOMES:
        for stage in STAGES:
            zeros[
                sample_key(RECORD_SPECS[outcome].name, {"pipeline_id": pipeline_id, "stage": stage})
            ] = 0.0
    for spec in DURATION_SPECS.values():
        for le in (*spec.buckets, math.inf):
            zeros[
                sample_key(f"{spec.name}_bucket", {"pipeline_id": pipeline_id, "le": _le(le)})
            ] = 0.0
        zeros[sample_key(f"{spec.name}_count", {"pipeline_id": pipeline_id})] = 0.0
        zeros[sample_key(f"{spec.name}_sum", {"pipeline_id": pipeline_id})] = 0.0
    for result in RESULT_OF_EVENT.values():
        zeros[sample_key(RUNS.name, {"pipeline_id": pipeline_id, "result": result})] = 0.0
    for result in ("success", "failure"):
        zeros[sample_key(AI_ANALYSIS.name, {"pipeline_id": pipeline_id, "result": result})] = 0.0
    return zeros


def _le(bound: float) -> str:
    """prometheus_client's spelling of a bucket bound (``0.5``, ``10.0``, ``+Inf``)."""
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def _add(totals: dict[str, float], key: str, value: float) -> None:
    totals[key] = totals.get(key, 0.0) + value


def _observe_run_duration(totals: dict[str, float], pipeline_id: str, seconds: float) -> None:
    base = {"pipeline_id": pipeline_id}
    for le in (*RUN_DURATION.buckets, math.inf):
        if seconds <= le:
            _add(totals, sample_key(f"{RUN_DURATION.name}_bucket", {**base, "le": _le(le)}), 1.0)
    _add(totals, sample_key(f"{RUN_DURATION.name}_count", base), 1.0)
    _add(totals, sample_key(f"{RUN_DURATION.name}_sum", base), seconds)


def _family_of(sample_name: str) -> str | None:
    for suffix in ("_bucket", "_count", "_sum", "_total"):
        if sample_name.endswith(suffix) and sample_name.removesuffix(suffix) in SPECS:
            return sample_name.removesuffix(suffix)
    return sample_name if sample_name in SPECS else None


def step_deltas(instance: dg.DagsterInstance, run_id: str) -> list[dict[str, float]]:
    """The increments the step hooks of ``run_id`` wrote into its event log."""
    out: list[dict[str, float]] = []
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        event = entry.dagster_event
        data = getattr(event, "engine_event_data", None) if event else None
        value = data.metadata.get(SNAPSHOT_METADATA_KEY) if data is not None else None
        if isinstance(value, dg.JsonMetadataValue) and isinstance(value.data, dict):
            out.append({str(k): float(v) for k, v in value.data.items()})
    return out


def fold_run(
    cursor: MetricsCursor,
    pipeline_id: str,
    result: str,
    duration_seconds: float | None,
    end_time: float | None,
    deltas: Iterable[Mapping[str, float]],
) -> None:
    """Add one finished run to the totals (pure: tested without Dagster)."""
    _add(cursor.totals, sample_key(RUNS.name, {"pipeline_id": pipeline_id, "result": result}), 1.0)
    for delta in deltas:
        for key, value in delta.items():
            name, labels = parse_sample_key(key)
            family = _family_of(name)
            if family not in CUMULATIVE_FAMILIES or family == RUN_DURATION.family or value <= 0:
                continue
            labels["pipeline_id"] = pipeline_id  # must match the push's grouping key
            _add(cursor.totals, sample_key(name, labels), value)
    if duration_seconds is not None:
        _observe_run_duration(cursor.totals, pipeline_id, duration_seconds)
        cursor.last_run_duration = duration_seconds
    cursor.last_run_success = 1 if result == "success" else 0
    if result == "success" and end_time is not None:
        cursor.last_success = max(cursor.last_success or 0.0, end_time)
    cursor.runs_counted += 1


class _CursorCollector(Collector):
    """Exposes the cursor's totals as families with the same HELP/TYPE as everywhere else."""

    def __init__(self, cursor: MetricsCursor, pipeline_id: str) -> None:
        self._cursor = cursor
        self._pipeline_id = pipeline_id

    def collect(self) -> Any:
        by_family: dict[str, list[tuple[str, dict[str, str], float]]] = defaultdict(list)
        for key, value in self._cursor.totals.items():
            name, labels = parse_sample_key(key)
            family = _family_of(name)
            if family is not None:
                by_family[family].append((name, labels, value))
        pid = {"pipeline_id": self._pipeline_id}
        gauges: Sequence[tuple[Any, float | int | None]] = (
            (LAST_SUCCESS, self._cursor.last_success),
            (LAST_RUN_DURATION, self._cursor.last_run_duration),
            (LAST_RUN_SUCCESS, self._cursor.last_run_success),
        )
        for spec, gauge_value in gauges:
            if gauge_value is not None:
                by_family[spec.family].append((spec.name, pid, float(gauge_value)))
        by_family[PUSH_FAILURES.family].append(
            (PUSH_FAILURES.name, pid, float(self._cursor.push_failures))
        )
        for family, samples in sorted(by_family.items()):
            spec = SPECS[family]
            metric = Metric(family, spec.help, spec.kind)
            for name, labels, value in sorted(samples, key=_sample_order):
                metric.add_sample(name, labels, value)
            yield metric


def _sample_order(sample: tuple[str, dict[str, str], float]) -> tuple[Any, ...]:
    name, labels, _ = sample
    rest = sorted((k, v) for k, v in labels.items() if k != "le")
    le = labels.get("le")
    return (rest, not name.endswith("_bucket"), float(le) if le else 0.0, name)


def cursor_registry(cursor: MetricsCursor, pipeline_id: str) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(_CursorCollector(cursor, pipeline_id))
    return registry


def evaluate_metrics_sensor(
    context: dg.SensorEvaluationContext,
    pushgateway: PushgatewayResource,
    job_names: Sequence[str],
    fetch_limit: int = DEFAULT_FETCH_LIMIT,
) -> dg.SkipReason:
    """One tick: fold newly finished runs of ``job_names`` into the cursor, then push."""
    if not pushgateway.enabled:
        return dg.SkipReason("pushgateway.url is empty: run metrics are not pushed")
    pid = pushgateway.pipeline_id
    cursor = MetricsCursor.from_json(context.cursor)
    for key, zero in _zero_totals(pid).items():
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
            if run_record is None or run_record.dagster_run.job_name not in job_names:
                continue
            start, end = run_record.start_time, run_record.end_time or record.timestamp
            fold_run(
                cursor,
                pid,
                RESULT_OF_EVENT[event_type.value],
                (end - start) if start is not None and end is not None else None,
                end,
                step_deltas(instance, run_record.dagster_run.run_id),
            )
            counted += 1
    if not pushgateway.push(
        cursor_registry(cursor, pid),
        pushgateway.grouping_key(pipeline_id=pid),
        warn=context.log.warning,
    ):
        cursor.push_failures += 1
    context.update_cursor(cursor.to_json())
    return dg.SkipReason(
        f"counted {counted} finished run(s) of {', '.join(job_names)}; "
        f"{cursor.runs_counted} counted in all"
    )


#: The job and Dagster's implicit asset job, which runs launches from the asset graph and
#: asset backfills.
WATCHED_JOBS = ("records_job", "__ASSET_JOB")


def build_pipeline_metrics_sensor(
    job_names: Sequence[str] = WATCHED_JOBS,
    name: str = "pipeline_metrics_sensor",
    minimum_interval_seconds: int = 30,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
) -> dg.SensorDefinition:
    """The sensor for ``job_names``; it needs the ``pushgateway`` resource."""
    names = tuple(job_names)

    @dg.sensor(
        name=name,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description=(
            "Pushes run outcomes, durations and monotonic record totals of "
            f"{', '.join(names)} to the Pushgateway (totals live in the cursor)."
        ),
    )
    def _sensor(
        context: dg.SensorEvaluationContext, pushgateway: PushgatewayResource
    ) -> dg.SkipReason:
        return evaluate_metrics_sensor(context, pushgateway, names)

    return _sensor


pipeline_metrics_sensor = build_pipeline_metrics_sensor()
