"""The sensor that turns finished Dagster runs into monotonic Prometheus totals and pushes them.

Why a plain ``@sensor`` and not ``@run_status_sensor``: a run-status sensor's cursor
belongs to Dagster (it refuses a user cursor), and one such sensor watches one status.
This sensor reads the same run-status events (success, failure, cancel: a run whose
process crashed before any hook ran still gets its failure event) with
``fetch_run_status_changes``.

It counts every finished run, of any job, that was to materialize one of our assets
(:data:`WATCHED_ASSETS`, or the assets it is built for): our jobs, Dagster's implicit asset
job (asset-graph launches, backfills), a celery executor job or a user's job. Each run is
folded into the totals of its own pipeline, exactly once. The pipeline of an asset is its
asset tag :data:`PIPELINE_ID_TAG` (``asset_pipelines``; a YAML pipeline's assets carry it),
else the run's tag of that name, else the Pushgateway resource's ``pipeline_id``: so a run
launched from the asset graph or as a backfill, which carries no pipeline run tag, is
attributed by what it materializes. A run spanning several pipelines (the implicit
all-assets job) counts once for each, and each step's records go to the pipeline of the
asset that step materializes (:func:`split_run`). A sensor pushes the pipelines it is given
(``pipeline_ids``; by default every tagged pipeline) and leaves runs of other pipelines to
their own sensor. Per run it adds ``pipeline_runs_total{result}``, the run's duration to
``pipeline_run_duration_seconds`` and the increments each step hook left in the event log
to the ``_total`` counters and histograms; per pipeline it pushes them as the group
``{job, pipeline_id}`` with ``pipeline_last_success_timestamp_seconds``,
``pipeline_last_run_duration_seconds`` and ``pipeline_last_run_success`` (of the run that
ended last), and each step's last-run values as ``{job, pipeline_id, step}``.

**Where the totals live.** They are a function of the event log up to the sensor's
watermarks, so the cursor holds only the watermarks and two counts (a few hundred
characters in the UI). The totals stay in this process between ticks, and a process that
has none for the cursor it is given (a restart, another code server) recomputes them
from the event log before it pushes: each run counted once, the totals survive restarts
and a Pushgateway that lost its state, and a failed push is redone by the next tick.

**Runs that were not measured.** A run some of whose steps ended without leaving a step
record ran with pushing off (before ``PUSHGATEWAY_URL`` was set): it is not counted, and
the tick says so. A run that ended before any step did (a crash) counts with no records.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

import dagster as dg

from es_mysql_pipeline.metrics.pushgateway import PushgatewayResource, Warn
from es_mysql_pipeline.metrics.run_totals import (
    MetricsCursor,
    PipelineTotals,
    StepRecord,
    fold_run,
    step_registry_of,
    totals_registry,
    zero_totals,
)
from es_mysql_pipeline.targets import PIPELINE_TAG

#: The run tag naming the pipeline a run belongs to (several pipelines in one location).
PIPELINE_ID_TAG = PIPELINE_TAG

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
_STEP_ENDS = {dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE}
DEFAULT_FETCH_LIMIT = 200
#: Page size when totals are recomputed from the event log.
_REBUILD_PAGE = 1000


def step_records(
    instance: dg.DagsterInstance, run_id: str
) -> tuple[list[tuple[str | None, StepRecord]], int]:
    """The records the step hooks of ``run_id`` left in its log, each with its step key,
    and how many steps ended."""
    records: list[tuple[str | None, StepRecord]] = []
    ended = 0
    events = instance.get_records_for_run(
        run_id, of_type={dg.DagsterEventType.ENGINE_EVENT, *_STEP_ENDS}
    ).records
    for event in events:
        entry = event.event_log_entry
        if entry.dagster_event_type in _STEP_ENDS:
            ended += 1
            continue
        record = StepRecord.from_message(entry.message)
        if record is not None:
            records.append((entry.step_key, record))
    return records, ended


def planned_assets(
    instance: dg.DagsterInstance, run: dg.DagsterRun
) -> dict[dg.AssetKey, str | None]:
    """The assets ``run`` was to materialize, each with the step that materializes it
    (``None`` when known only from the run's asset selection). Written when the run is
    created, so a run that crashed before its first step has them too."""
    planned: dict[dg.AssetKey, str | None] = dict.fromkeys(run.asset_selection or ())
    for entry in instance.all_logs(
        run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED
    ):
        event = entry.dagster_event
        if event is not None and event.asset_key is not None:
            planned[event.asset_key] = entry.step_key
    return planned


def is_run_of(
    instance: dg.DagsterInstance, run: dg.DagsterRun, asset_keys: AbstractSet[dg.AssetKey]
) -> bool:
    """Whether ``run`` (of any job: ours, a user's, a celery job, a backfill) was to
    materialize one of ``asset_keys``."""
    return not planned_assets(instance, run).keys().isdisjoint(asset_keys)


def run_pipeline_id(run: dg.DagsterRun, default: str) -> str:
    """The pipeline a run was launched for: its :data:`PIPELINE_ID_TAG`, else ``default``."""
    return run.tags.get(PIPELINE_ID_TAG) or default


def asset_pipeline_ids(defs: dg.Definitions) -> dict[dg.AssetKey, str]:
    """Each asset of ``defs`` that carries the asset tag :data:`PIPELINE_ID_TAG`, with its
    pipeline: what attributes a run launched from the asset graph or as a backfill (which
    carries no pipeline run tag) and each step of a run spanning several pipelines."""
    return {
        spec.key: spec.tags[PIPELINE_ID_TAG]
        for spec in defs.resolve_all_asset_specs()
        if spec.tags.get(PIPELINE_ID_TAG)
    }


@dataclass(frozen=True)
class RunShare:
    """What one pipeline gets of a run: the run itself, and the records of its steps."""

    pipeline_id: str
    records: list[StepRecord]


def split_run(
    planned: Mapping[dg.AssetKey, str | None],
    records: Iterable[tuple[str | None, StepRecord]],
    pipeline_of_asset: Mapping[dg.AssetKey, str],
    fallback: str,
) -> list[RunShare]:
    """The pipelines a run belongs to, each with its steps' records (pure).

    ``planned``: the watched assets the run was to materialize, with their steps. An asset's
    pipeline is its :data:`PIPELINE_ID_TAG` asset tag (``pipeline_of_asset``), else
    ``fallback`` (the run tag, else the resource's ``pipeline_id``). A step record goes to
    the pipeline of the asset its step materializes; a step with no planned asset goes to
    the run's one pipeline, or to ``fallback`` when the run spans several.
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
        pid = pipeline_of_step.get(step or "", only)
        shares.setdefault(pid, []).append(record)
    return [RunShare(pid, shares[pid]) for pid in sorted(shares)]


@dataclass
class _Totals:
    """Everything folded up to ``after``: the totals per pipeline and what the tick saw."""

    after: dict[str, int] = field(default_factory=dict)
    pipelines: dict[str, PipelineTotals] = field(default_factory=dict)
    runs_counted: int = 0
    new: Counter[str] = field(default_factory=Counter)
    unmeasured: int = 0
    elsewhere: int = 0


@dataclass(frozen=True)
class _Scope:
    """What a sensor counts: runs of ``asset_keys`` of the pipelines ``pipeline_ids``."""

    asset_keys: frozenset[dg.AssetKey]
    pipeline_ids: tuple[str, ...]
    default_pipeline_id: str
    #: ``(asset key, pipeline)`` of the assets that carry a pipeline asset tag.
    asset_pipelines: frozenset[tuple[dg.AssetKey, str]] = frozenset()


#: Totals kept between ticks, per instance and sensor scope (a code server evaluates every
#: tick of a sensor in one process); recomputed from the event log when missing or stale.
_KEPT: dict[tuple[str, str, _Scope], _Totals] = {}


def forget_kept_totals() -> None:
    """Drop the totals kept in this process, as a restart does (tests)."""
    _KEPT.clear()


def _instance_key(instance: dg.DagsterInstance) -> str:
    try:
        return str(instance.root_directory)
    except Exception:  # an instance without a directory
        return f"object:{id(instance)}"


def _fold_events(
    state: _Totals,
    instance: dg.DagsterInstance,
    scope: _Scope,
    upto: dict[str, int] | None,
    limit: int,
) -> None:
    """Fold run-end events after ``state.after``: up to ``upto`` (all pages), or one page."""
    for event_type in RUN_END_EVENTS:
        name = event_type.value
        while True:
            after = state.after.get(name, -1)
            if upto is not None and after >= upto.get(name, -1):
                break
            records = instance.fetch_run_status_changes(
                dg.RunStatusChangeRecordsFilter(
                    event_type=event_type,  # type: ignore[arg-type]
                    after_storage_id=after,
                ),
                limit=limit if upto is None else _REBUILD_PAGE,
                ascending=True,
            ).records
            past = [r for r in records if upto is None or r.storage_id <= upto.get(name, -1)]
            for record in past:
                state.after[name] = record.storage_id
                _fold_one(state, instance, scope, RESULT_OF_EVENT[name], record)
            if upto is None or len(past) < len(records) or not records:
                break


def _fold_one(
    state: _Totals,
    instance: dg.DagsterInstance,
    scope: _Scope,
    result: str,
    record: dg.EventLogRecord,
) -> None:
    run_record = instance.get_run_record_by_id(record.event_log_entry.run_id)
    if run_record is None:
        return
    run = run_record.dagster_run
    planned = {
        key: step for key, step in planned_assets(instance, run).items() if key in scope.asset_keys
    }
    if not planned:
        return
    records, steps_ended = step_records(instance, run.run_id)
    shares = split_run(
        planned,
        records,
        dict(scope.asset_pipelines),
        run_pipeline_id(run, scope.default_pipeline_id),
    )
    mine = [share for share in shares if share.pipeline_id in scope.pipeline_ids]
    if not mine:
        state.elsewhere += 1
        return
    if steps_ended and not records:
        state.unmeasured += 1
        return
    start, end = run_record.start_time, run_record.end_time or record.timestamp
    for share in mine:
        fold_run(
            state.pipelines.setdefault(share.pipeline_id, PipelineTotals()),
            share.pipeline_id,
            result,
            (end - start) if start is not None and end is not None else None,
            end,
            [r.delta for r in share.records],
            [r.snapshot for r in share.records],
        )
        state.new[share.pipeline_id] += 1
    state.runs_counted += 1


def _totals_for(
    instance: dg.DagsterInstance, cursor: MetricsCursor, scope: _Scope, sensor_name: str
) -> _Totals:
    """The kept totals if they are those of ``cursor``, else recomputed up to it."""
    key = (_instance_key(instance), sensor_name, scope)
    state = _KEPT.pop(key, None)
    if state is None or state.after != cursor.after:
        state = _Totals()
        _fold_events(state, instance, scope, cursor.after, _REBUILD_PAGE)
        state.after = dict(cursor.after)
    state.new, state.unmeasured, state.elsewhere = Counter(), 0, 0
    for pid in scope.pipeline_ids:
        totals = state.pipelines.setdefault(pid, PipelineTotals())
        for sample, zero in zero_totals(pid).items():
            totals.totals.setdefault(sample, zero)
    _KEPT[key] = state
    return state


def evaluate_metrics_sensor(
    context: dg.SensorEvaluationContext,
    pushgateway: PushgatewayResource,
    asset_keys: AbstractSet[dg.AssetKey],
    fetch_limit: int = DEFAULT_FETCH_LIMIT,
    pipeline_ids: Collection[str] | None = None,
    sensor_name: str = "pipeline_metrics_sensor",
    asset_pipelines: Mapping[dg.AssetKey, str] | None = None,
) -> dg.SkipReason:
    """One tick: fold newly finished runs into their pipelines' totals, push, say what."""
    if not pushgateway.enabled:
        return _said(
            context,
            [
                "nothing pushed: pushgateway.url is empty (set PUSHGATEWAY_URL); runs whose "
                "steps ran without it are not counted"
            ],
        )
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
    _fold_events(state, context.instance, scope, None, fetch_limit)
    said = [
        _push_pipeline(pushgateway, state, cursor, pid, context.log.warning)
        for pid in scope.pipeline_ids
    ]
    if state.unmeasured:
        said.append(
            f"{state.unmeasured} finished run(s) not counted: their steps recorded no "
            "metrics (pushing was off: PUSHGATEWAY_URL was not set)"
        )
    if state.elsewhere:
        said.append(f"{state.elsewhere} run(s) of other pipelines left to their sensors")
    cursor.after = dict(state.after)
    cursor.runs_counted = state.runs_counted
    context.update_cursor(cursor.to_json())
    return _said(context, said)


def _said(context: dg.SensorEvaluationContext, said: list[str]) -> dg.SkipReason:
    """The tick's outcome as its skip reason (the tick's dialog), and one log line per
    sentence: the UI's "View logs" of a tick otherwise shows "No logs to display"."""
    for sentence in said:
        context.log.info(sentence)
    return dg.SkipReason("; ".join(said))


def _push_pipeline(
    pushgateway: PushgatewayResource,
    state: _Totals,
    cursor: MetricsCursor,
    pid: str,
    warn: Warn,
) -> str:
    """Push one pipeline's groups; one sentence saying what was pushed or why not."""
    totals = state.pipelines[pid]
    problems: list[str] = []
    failed = push_groups(pushgateway, totals, pid, cursor.push_failures.get(pid, 0), problems)
    for problem in problems:
        warn(problem)
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


def push_groups(
    pushgateway: PushgatewayResource,
    totals: PipelineTotals,
    pid: str,
    push_failures: int,
    problems: list[str],
) -> int:
    """Push the totals group, then every step group; how many pushes failed.

    Every tick pushes every group, so a Pushgateway that lost its state is refilled. When
    the totals push fails the step groups wait for the next tick: a down Pushgateway
    holds a tick up for one timeout, not one per group.
    """
    then = "the sensor's next tick pushes them again"
    if not pushgateway.push(
        totals_registry(totals, pid, push_failures),
        pushgateway.grouping_key(pipeline_id=pid),
        warn=problems.append,
        then=then,
    ):
        return 1
    failures = 0
    for step, snapshot in sorted(totals.steps.items()):
        if not pushgateway.push(
            step_registry_of(snapshot, pid),
            pushgateway.grouping_key(pipeline_id=pid, step=step),
            warn=problems.append,
            then=then,
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
    pipeline_ids: Collection[str] | None = None,
    asset_pipelines: Mapping[dg.AssetKey, str] | None = None,
) -> dg.SensorDefinition:
    """The sensor for runs of ``asset_keys`` (whatever their job); needs ``pushgateway``.

    ``asset_pipelines``: the pipeline of each asset (:func:`asset_pipeline_ids`), which
    attributes every run and step whatever launched it. ``pipeline_ids``: the pipelines it
    counts and pushes (default: those of ``asset_pipelines``, plus the resource's
    ``pipeline_id`` for untagged assets); give one sensor every pipeline, or each pipeline
    its own sensor.
    """
    keys = frozenset(asset_keys)
    pids = tuple(pipeline_ids) if pipeline_ids else None
    tagged = {key: pid for key, pid in (asset_pipelines or {}).items() if key in keys}

    @dg.sensor(
        name=name,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description=(
            "Pushes run outcomes, durations and monotonic record totals of every run of "
            f"{_names(keys)} to the Pushgateway, per pipeline; each tick says what it pushed."
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
        )

    return _sensor


pipeline_metrics_sensor = build_pipeline_metrics_sensor()
