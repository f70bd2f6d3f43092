"""The sensor that folds finished Dagster runs into monotonic Prometheus totals and pushes them.

A plain ``@sensor``, not a ``@run_status_sensor``: the latter's cursor belongs to Dagster
and it watches one status. This one reads the run-end events (success, failure, canceled)
of every job whose run was to materialize one of our assets (a user's job, a backfill, the
asset graph) and folds each run once into the totals of the pipeline of each asset it
materializes (its asset tag :data:`PIPELINE_ID_TAG`, else the run tag, else the resource's
``pipeline_id``). The totals are a function of the event log up to the cursor's
watermarks: kept in this process between ticks, recomputed after a restart. A run whose
steps ended without a step record ran with pushing off: not counted, and the tick says so.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from es_mysql_pipeline.assets import Chain
from es_mysql_pipeline.metrics.pushgateway import PushgatewayResource, Warn
from es_mysql_pipeline.metrics.run_totals import (
    RESULTS,
    MetricsCursor,
    PipelineTotals,
    StepRecord,
    fold_run,
    pushed_groups,
    zero_totals,
)
from es_mysql_pipeline.targets import PIPELINE_TAG

#: The run tag naming the pipeline a run belongs to (several pipelines in one location).
PIPELINE_ID_TAG = PIPELINE_TAG
_RUN_ENDS = (
    dg.DagsterEventType.RUN_SUCCESS,
    dg.DagsterEventType.RUN_FAILURE,
    dg.DagsterEventType.RUN_CANCELED,
)
_STEP_ENDS = {dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE}
_PLANNED = dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED
#: Run-end events folded per tick and event type, and per page when totals are recomputed.
_TICK_PAGE, _REBUILD_PAGE = 200, 1000
_OFF = "nothing pushed: pushgateway.url is empty (set PUSHGATEWAY_URL); runs whose steps ran "
_OFF += "without it are not counted"
#: Our assets: a finished run of any job that was to materialize one of them is counted.
WATCHED_ASSETS: frozenset[dg.AssetKey] = frozenset(
    dg.AssetKey(name) for name in ("raw_records", "clean_records", "loaded_records")
)


def read_run(
    instance: dg.DagsterInstance, run: dg.DagsterRun
) -> tuple[dict[dg.AssetKey, str | None], list[tuple[str | None, StepRecord]], int]:
    """What the log of ``run`` says: the assets it was to materialize, each with its step
    (``None``: known from the run's asset selection only; planned when the run is created,
    so a crash has them too), its step records with their step keys, how many steps ended."""
    planned: dict[dg.AssetKey, str | None] = dict.fromkeys(run.asset_selection or ())
    records: list[tuple[str | None, StepRecord]] = []
    ended = 0
    of_type = {_PLANNED, dg.DagsterEventType.ENGINE_EVENT, *_STEP_ENDS}
    for entry in instance.all_logs(run.run_id, of_type=of_type):
        event = entry.dagster_event
        if event is not None and event.event_type == _PLANNED and event.asset_key is not None:
            planned[event.asset_key] = entry.step_key
        ended += entry.dagster_event_type in _STEP_ENDS
        record = StepRecord.from_message(entry.message)
        if record is not None:
            records.append((entry.step_key, record))
    return planned, records, ended


def asset_pipeline_ids(defs: dg.Definitions) -> dict[dg.AssetKey, str]:
    """Each asset of ``defs`` with its :data:`PIPELINE_ID_TAG` asset tag: what attributes a
    run without the run tag (asset graph, backfill) and each step of a run of several."""
    return {
        spec.key: spec.tags[PIPELINE_ID_TAG]
        for spec in defs.resolve_all_asset_specs()
        if spec.tags.get(PIPELINE_ID_TAG)
    }


def pipeline_types(defs: dg.Definitions, pipeline_ids: Iterable[str]) -> dict[str, dict[str, str]]:
    """Each pipeline's ``source_type`` and ``sink_type`` for ``pipeline_info``: the ``type``
    its ``<id>__source`` and ``<id>__sink`` resources describe (as the environment-variable
    deployment's resource and the CLI report them; never a target or credential)."""
    resources: Mapping[str, Any] = defs.resources or {}
    types = {}
    for pid in pipeline_ids:
        source, sink = (resources.get(Chain(pid).resource(kind)) for kind in ("source", "sink"))
        if source is not None and sink is not None:
            types[pid] = {
                "source_type": source.describe()["type"],
                "sink_type": sink.describe()["type"],
            }
    return types


def split_run(
    planned: Mapping[dg.AssetKey, str | None],
    records: Iterable[tuple[str | None, StepRecord]],
    pipeline_of_asset: Mapping[dg.AssetKey, str],
    fallback: str,
) -> dict[str, list[StepRecord]]:
    """The pipelines a run belongs to, each with its steps' records (pure).

    An asset's pipeline is its asset tag (``pipeline_of_asset``), else ``fallback``; a step
    record goes to the pipeline of the asset its step materializes, else to the run's one
    pipeline, or to ``fallback`` when the run spans several.
    """
    pipeline_of_step: dict[str, str] = {}
    shares: dict[str, list[StepRecord]] = {}
    for key, step in sorted(planned.items(), key=lambda item: item[0].to_user_string()):
        pid = pipeline_of_asset.get(key) or fallback
        shares.setdefault(pid, [])
        if step is not None:
            pipeline_of_step.setdefault(step, pid)
    only = next(iter(shares)) if len(shares) == 1 else fallback
    for step, record in records:
        shares.setdefault(pipeline_of_step.get(step or "", only), []).append(record)
    return dict(sorted(shares.items()))


@dataclass(frozen=True)
class _Scope:
    """What a sensor counts: runs of ``asset_keys`` of the pipelines ``pipeline_ids``."""

    asset_keys: frozenset[dg.AssetKey]
    pipeline_ids: tuple[str, ...]
    default_pipeline_id: str
    #: ``(asset key, pipeline)`` of the assets that carry a pipeline asset tag.
    asset_pipelines: frozenset[tuple[dg.AssetKey, str]] = frozenset()


@dataclass
class _Totals:
    """Everything folded up to ``after``: the totals per pipeline and what the tick saw."""

    scope: _Scope
    after: dict[str, int] = field(default_factory=dict)
    pipelines: dict[str, PipelineTotals] = field(default_factory=dict)
    runs_counted: int = 0
    new: Counter[str] = field(default_factory=Counter)
    unmeasured: int = 0
    elsewhere: int = 0

    def of(self, pipeline_id: str) -> PipelineTotals:
        """A pipeline's totals, its known series at zero until it has its first run."""
        if pipeline_id not in self.pipelines:
            self.pipelines[pipeline_id] = PipelineTotals(zero_totals(pipeline_id))
        return self.pipelines[pipeline_id]

    def fold(self, instance: dg.DagsterInstance, upto: Mapping[str, int] | None) -> None:
        """Fold run-end events after :attr:`after`: up to ``upto`` (all pages), or one page."""
        for event_type, result in zip(_RUN_ENDS, RESULTS, strict=True):
            name = event_type.value
            last = math.inf if upto is None else upto.get(name, -1)
            while self.after.get(name, -1) < last:
                records = instance.fetch_run_status_changes(
                    dg.RunStatusChangeRecordsFilter(
                        event_type=event_type,  # type: ignore[arg-type]
                        after_storage_id=self.after.get(name, -1),
                    ),
                    limit=_TICK_PAGE if upto is None else _REBUILD_PAGE,
                    ascending=True,
                ).records
                past = [r for r in records if r.storage_id <= last]
                for record in past:
                    self.after[name] = record.storage_id
                    self._fold_run(instance, result, record)
                if upto is None or len(past) < len(records) or not records:
                    break

    def _fold_run(
        self, instance: dg.DagsterInstance, result: str, record: dg.EventLogRecord
    ) -> None:
        run_record = instance.get_run_record_by_id(record.event_log_entry.run_id)
        if run_record is None:
            return
        run, scope = run_record.dagster_run, self.scope
        planned, records, steps_ended = read_run(instance, run)
        planned = {k: s for k, s in planned.items() if k in scope.asset_keys}
        if not planned:
            return
        fallback = run.tags.get(PIPELINE_ID_TAG) or scope.default_pipeline_id
        shares = split_run(planned, records, dict(scope.asset_pipelines), fallback)
        mine = {pid: share for pid, share in shares.items() if pid in scope.pipeline_ids}
        if not mine:
            self.elsewhere += 1
            return
        if steps_ended and not records:
            self.unmeasured += 1
            return
        start, end = run_record.start_time, run_record.end_time or record.timestamp
        duration = (end - start) if start is not None and end is not None else None
        for pid, share in mine.items():
            deltas, snapshots = [r.delta for r in share], [r.snapshot for r in share]
            fold_run(self.of(pid), pid, result, duration, end, deltas, snapshots)
            self.new[pid] += 1
        self.runs_counted += 1


#: Totals kept between ticks, per instance and sensor scope (a code server evaluates every
#: tick of a sensor in one process); recomputed from the event log when missing or stale.
_KEPT: dict[tuple[str, str, _Scope], _Totals] = {}


def forget_kept_totals() -> None:
    """Drop the totals kept in this process, as a restart does (tests)."""
    _KEPT.clear()


def _totals_for(
    instance: dg.DagsterInstance, cursor: MetricsCursor, scope: _Scope, sensor_name: str
) -> _Totals:
    """The kept totals if they are those of ``cursor``, else recomputed up to it."""
    key = (str(instance.root_directory), sensor_name, scope)
    state = _KEPT.get(key)
    if state is None or state.after != cursor.after:
        state = _KEPT[key] = _Totals(scope)
        state.fold(instance, cursor.after)
        state.after = dict(cursor.after)
    state.new, state.unmeasured, state.elsewhere = Counter(), 0, 0
    return state


def evaluate_metrics_sensor(
    context: dg.SensorEvaluationContext,
    pushgateway: PushgatewayResource,
    asset_keys: AbstractSet[dg.AssetKey],
    pipeline_ids: Collection[str] | None = None,
    sensor_name: str = "pipeline_metrics_sensor",
    asset_pipelines: Mapping[dg.AssetKey, str] | None = None,
    types: Mapping[str, Mapping[str, str]] | None = None,
) -> dg.SkipReason:
    """One tick: fold newly finished runs into their pipelines' totals, push, say what."""
    if not pushgateway.enabled:
        return _said(context, [_OFF])
    tagged = dict(asset_pipelines or {})
    if pipeline_ids is None:
        # the tagged assets' pipelines, and the resource's for assets without the tag
        pipeline_ids = set(tagged.values())
        if not pipeline_ids or not set(asset_keys) <= tagged.keys():
            pipeline_ids.add(pushgateway.pipeline_id)
    scope = _Scope(
        frozenset(asset_keys),
        tuple(sorted(set(pipeline_ids))),
        pushgateway.pipeline_id,
        frozenset(tagged.items()),
    )
    cursor = MetricsCursor.from_json(context.cursor, pushgateway.pipeline_id)
    state = _totals_for(context.instance, cursor, scope, sensor_name)
    state.fold(context.instance, None)
    said = [
        _push(pushgateway, state, cursor, pid, context.log.warning, (types or {}).get(pid))
        for pid in scope.pipeline_ids
    ]
    if state.unmeasured:
        said.append(
            f"{state.unmeasured} finished run(s) not counted: their steps recorded no "
            "metrics (pushing was off: PUSHGATEWAY_URL was not set)"
        )
    if state.elsewhere:
        said.append(f"{state.elsewhere} run(s) of other pipelines left to their sensors")
    cursor.after, cursor.runs_counted = dict(state.after), state.runs_counted
    context.update_cursor(cursor.to_json())
    return _said(context, said)


def _said(context: dg.SensorEvaluationContext, said: list[str]) -> dg.SkipReason:
    """The tick's outcome as its skip reason, and one log line per sentence: the UI's "View
    logs" of a tick otherwise shows "No logs to display"."""
    for sentence in said:
        context.log.info(sentence)
    return dg.SkipReason("; ".join(said))


def _push(
    pushgateway: PushgatewayResource,
    state: _Totals,
    cursor: MetricsCursor,
    pid: str,
    warn: Warn,
    info: Mapping[str, str] | None,
) -> str:
    """Push one pipeline's totals group, then (if that worked) every step group: a down
    Pushgateway holds a tick up for one timeout, and the next tick pushes everything again
    (a Pushgateway that lost its state is refilled). One sentence saying what happened."""
    totals, failed = state.of(pid), 0
    then = "the sensor's next tick pushes them again"
    for extra, group in pushed_groups(totals, pid, cursor.push_failures.get(pid, 0), info):
        key = pushgateway.grouping_key(pipeline_id=pid, **extra)
        if not pushgateway.push(group, key, warn=warn, then=then):
            failed += 1
            if not extra:  # the totals: the step groups wait for the next tick
                break
    counted = f"totals of {totals.runs_counted} run(s) ({state.new[pid]} new this tick)"
    if failed:
        cursor.push_failures[pid] = cursor.push_failures.get(pid, 0) + failed
        return (
            f"pipeline {pid}: push to {pushgateway.url} failed ({failed} group(s)); the "
            f"{counted} stay counted and the next tick pushes them again"
        )
    return (
        f"pushed {counted} for pipeline {pid} to {pushgateway.url}, "
        f"with {len(totals.steps)} step group(s)"
    )


def build_pipeline_metrics_sensor(
    asset_keys: Iterable[dg.AssetKey] = WATCHED_ASSETS,
    name: str = "pipeline_metrics_sensor",
    pipeline_ids: Collection[str] | None = None,
    asset_pipelines: Mapping[dg.AssetKey, str] | None = None,
    types: Mapping[str, Mapping[str, str]] | None = None,
) -> dg.SensorDefinition:
    """The sensor for runs of ``asset_keys`` (whatever their job); needs ``pushgateway``.

    ``asset_pipelines``: each asset's pipeline (:func:`asset_pipeline_ids`). ``pipeline_ids``:
    the pipelines it counts and pushes (default: those of ``asset_pipelines``, plus the
    resource's ``pipeline_id`` for untagged assets): one sensor for all, or one each.
    ``types``: each pipeline's ``pipeline_info`` types (:func:`pipeline_types`); a pipeline
    without shows the resource's.
    """
    keys = frozenset(asset_keys)
    pids = tuple(pipeline_ids) if pipeline_ids else None
    tagged = {key: pid for key, pid in (asset_pipelines or {}).items() if key in keys}
    names = ", ".join(sorted(key.to_user_string() for key in keys))

    @dg.sensor(
        name=name,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Pushes run outcomes, durations and monotonic record totals of every run of "
            f"{names} to the Pushgateway, per pipeline; each tick says what it pushed."
        ),
    )
    def _sensor(
        context: dg.SensorEvaluationContext, pushgateway: PushgatewayResource
    ) -> dg.SkipReason:
        return evaluate_metrics_sensor(
            context,
            pushgateway,
            keys,
            pipeline_ids=pids,
            sensor_name=name,
            asset_pipelines=tagged,
            types=dict(types or {}),
        )

    return _sensor


pipeline_metrics_sensor = build_pipeline_metrics_sensor()
