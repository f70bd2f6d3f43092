"""Run totals: what the metrics sensor folds finished runs into, and how it exposes them.

A step hook leaves one :class:`StepRecord` per step in its run's event log (increments and
last-run values). The sensor folds each finished run into the :class:`PipelineTotals` of
the run's pipeline: flat sample keys, plus, per step, the last-run values
(:class:`StepSnapshot`) of the execution that *ended* last. Picking by end time, not by
arrival, keeps concurrent runs of a step from overwriting each other with older values.

The totals are a pure function of the event log up to the sensor's watermarks, so the
sensor's cursor (:class:`MetricsCursor`) holds only those watermarks and a few counts:
the totals are recomputed from the event log when a process has none for that cursor.
:func:`totals_registry` and :func:`step_registry_of` turn them into prometheus_client
metric families with the catalog's HELP/TYPE, for the push. Pure: tested without Dagster.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from es_mysql_pipeline.metrics.catalog import (
    ACTIVE_WORKERS,
    AI_ANALYSIS,
    CUMULATIVE_FAMILIES,
    DURATION_SPECS,
    LAST_RUN_DURATION,
    LAST_RUN_SUCCESS,
    LAST_SUCCESS,
    OUTCOMES,
    PUSH_FAILURES,
    QUEUE_DEPTH,
    RECORD_SPECS,
    RUN_DURATION,
    RUNS,
    SPECS,
    STAGES,
    MetricSpec,
    parse_sample_key,
    sample_key,
)

#: The results a finished run can have (the run-end events the sensor reads).
RESULTS = ("success", "failure", "canceled")

#: Version 2 cursors hold watermarks and counts only; a version 1 cursor (which carried
#: the totals themselves) gives its watermarks, and the totals are recomputed.
CURSOR_VERSION = 2

#: How each kind of last-run family is exposed (the type prometheus_client gives it).
_SNAPSHOT_TYPES = {"gauge": "gauge", "enum": "stateset", "info": "info"}

#: Gauges that mean something only while a run is in progress (the CLI's live /metrics):
#: at the end of a step they are always 0, so step groups never carry them.
LIVE_ONLY_FAMILIES: frozenset[str] = frozenset({ACTIVE_WORKERS.family, QUEUE_DEPTH.family})

#: Where a step record starts in its engine event's message (after a line for people).
RECORD_MARKER = "es_mysql_pipeline step record v1: "


@dataclass(frozen=True)
class StepSnapshot:
    """The last-run values of one step execution: what its step group shows.

    ``families`` maps a family name of :data:`SPECS` to its samples (sample key -> value).
    The step hook writes it into the run's event log; the sensor keeps the newest per step.
    """

    step: str
    end: float
    families: dict[str, dict[str, float]]

    @classmethod
    def of_registry(cls, step: str, end: float, registry: CollectorRegistry) -> StepSnapshot:
        """The last-run families of ``registry`` (gauges, state, info; never counters)."""
        families: dict[str, dict[str, float]] = {}
        for family in registry.collect():
            if not _is_step_family(family.name):
                continue
            families[family.name] = {
                sample_key(s.name, s.labels): float(s.value) for s in family.samples
            }
        return cls(step, end, families)

    def to_data(self) -> dict[str, Any]:
        return {"step": self.step, "end": self.end, "families": self.families}

    @classmethod
    def from_data(cls, data: Any) -> StepSnapshot | None:
        """``None`` for anything that is not a snapshot (another writer's metadata)."""
        try:
            families = {
                str(family): {str(k): float(v) for k, v in samples.items()}
                for family, samples in data["families"].items()
            }
            return cls(str(data["step"]), float(data["end"]), families)
        except (KeyError, TypeError, ValueError, AttributeError):
            return None


def _is_step_family(name: str) -> bool:
    spec = SPECS.get(name)
    return spec is not None and spec.kind in _SNAPSHOT_TYPES and name not in LIVE_ONLY_FAMILIES


@dataclass(frozen=True)
class StepRecord:
    """What a step hook leaves in its run's event log: its increments and last-run values."""

    snapshot: StepSnapshot
    #: Counter and histogram increments of the step (sample key -> value, > 0 only).
    delta: dict[str, float]

    def to_message(self, summary: str) -> str:
        """``summary`` for people, then the marker and the record as one JSON line."""
        data = {**self.snapshot.to_data(), "delta": self.delta}
        return f"{summary}\n{RECORD_MARKER}{json.dumps(data, separators=(',', ':'))}"

    @classmethod
    def from_message(cls, message: str | None) -> StepRecord | None:
        """``None`` for any message that does not carry a record (every other event)."""
        at = (message or "").rfind(RECORD_MARKER)
        if at < 0:
            return None
        try:
            data = json.loads(message[at + len(RECORD_MARKER) :])  # type: ignore[index]
            delta = {str(k): float(v) for k, v in data["delta"].items()}
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        snapshot = StepSnapshot.from_data(data)
        return None if snapshot is None else cls(snapshot, delta)


@dataclass
class PipelineTotals:
    """One pipeline's running totals, last-run values and step snapshots (recomputable)."""

    totals: dict[str, float] = field(default_factory=dict)
    last_success: float | None = None
    last_run_duration: float | None = None
    last_run_success: int | None = None
    #: End time of the run the ``last_run_*`` values are from.
    last_run_end: float | None = None
    #: Per step name, the snapshot of the execution that ended last (bounded: our steps).
    steps: dict[str, StepSnapshot] = field(default_factory=dict)
    runs_counted: int = 0


@dataclass
class MetricsCursor:
    """What the sensor's cursor holds: event watermarks and counts, a few hundred bytes.

    ``push_failures`` (per pipeline) is the one count the event log cannot give back.
    """

    after: dict[str, int] = field(default_factory=dict)
    runs_counted: int = 0
    push_failures: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        data = {"v": CURSOR_VERSION, **self.__dict__}
        return json.dumps(data, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None, pipeline_id: str = "default") -> MetricsCursor:
        """A fresh cursor for ``None`` or an unknown version; a version 1 cursor's
        watermarks and counts (its failures counted for ``pipeline_id``)."""
        if not text:
            return cls()
        data = json.loads(text)
        version = data.get("v")
        after = {str(k): int(v) for k, v in (data.get("after") or {}).items()}
        runs = int(data.get("runs_counted") or 0)
        if version == 1:
            failures = int(data.get("push_failures") or 0)
            return cls(after, runs, {pipeline_id: failures} if failures else {})
        if version != CURSOR_VERSION:
            return cls()
        failures_by = {str(k): int(v) for k, v in (data.get("push_failures") or {}).items()}
        return cls(after, runs, failures_by)


def zero_totals(pipeline_id: str) -> dict[str, float]:
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
    for result in RESULTS:
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


def family_of(sample_name: str) -> str | None:
    for suffix in ("_bucket", "_count", "_sum", "_total"):
        if sample_name.endswith(suffix) and sample_name.removesuffix(suffix) in SPECS:
            return sample_name.removesuffix(suffix)
    return sample_name if sample_name in SPECS else None


def fold_run(
    totals: PipelineTotals,
    pipeline_id: str,
    result: str,
    duration_seconds: float | None,
    end_time: float | None,
    deltas: Iterable[Mapping[str, float]],
    steps: Iterable[StepSnapshot] = (),
) -> None:
    """Add one finished run to the totals (pure: tested without Dagster).

    Runs are folded in the order the sensor reads their end events (all successes of a tick
    before its failures), not the order they ended: the ``last_run_*`` values and each
    step's snapshot change only for a run or step that ended later than the one they show.
    """
    _add(totals.totals, sample_key(RUNS.name, {"pipeline_id": pipeline_id, "result": result}), 1.0)
    for delta in deltas:
        for key, value in delta.items():
            name, labels = parse_sample_key(key)
            family = family_of(name)
            if family not in CUMULATIVE_FAMILIES or family == RUN_DURATION.family or value <= 0:
                continue
            labels["pipeline_id"] = pipeline_id  # must match the push's grouping key
            _add(totals.totals, sample_key(name, labels), value)
    if duration_seconds is not None:
        _observe_run_duration(totals.totals, pipeline_id, duration_seconds)
    if _not_older(end_time, totals.last_run_end):
        if end_time is not None:
            totals.last_run_end = end_time
        totals.last_run_success = 1 if result == "success" else 0
        if duration_seconds is not None:
            totals.last_run_duration = duration_seconds
    if result == "success" and end_time is not None:
        totals.last_success = max(totals.last_success or 0.0, end_time)
    for snapshot in steps:
        shown = totals.steps.get(snapshot.step)
        if _not_older(snapshot.end, shown.end if shown is not None else None):
            totals.steps[snapshot.step] = snapshot
    totals.runs_counted += 1


def _not_older(end: float | None, shown: float | None) -> bool:
    """Whether something that ended at ``end`` may replace what ended at ``shown``."""
    return shown is None or end is None or end >= shown


class _TotalsCollector(Collector):
    """Exposes a pipeline's totals as prometheus_client metric families (HELP/TYPE from SPECS)."""

    def __init__(self, totals: PipelineTotals, pipeline_id: str, push_failures: int) -> None:
        self._totals = totals
        self._pipeline_id = pipeline_id
        self._push_failures = push_failures

    def collect(self) -> Iterator[Metric]:
        by_family: dict[str, list[tuple[str, dict[str, str], float]]] = defaultdict(list)
        for key, value in self._totals.totals.items():
            name, labels = parse_sample_key(key)
            family = family_of(name)
            if family is not None:
                by_family[family].append((name, labels, value))
        for family, samples in sorted(by_family.items()):
            spec = SPECS[family]
            if spec.kind == "histogram":
                yield _histogram(spec, samples)
            else:
                yield _counter(spec, samples)
        pid = {"pipeline_id": self._pipeline_id}
        gauges: Sequence[tuple[MetricSpec, float | int | None]] = (
            (LAST_SUCCESS, self._totals.last_success),
            (LAST_RUN_DURATION, self._totals.last_run_duration),
            (LAST_RUN_SUCCESS, self._totals.last_run_success),
        )
        for spec, gauge_value in gauges:
            if gauge_value is not None:
                gauge = GaugeMetricFamily(spec.name, spec.help, labels=list(pid))
                gauge.add_metric(list(pid.values()), float(gauge_value))
                yield gauge
        failures = CounterMetricFamily(PUSH_FAILURES.family, PUSH_FAILURES.help, labels=list(pid))
        failures.add_metric(list(pid.values()), float(self._push_failures))
        yield failures


def _label_names(samples: Iterable[tuple[str, dict[str, str], float]]) -> list[str]:
    return sorted({k for _, labels, _ in samples for k in labels if k != "le"})


def _counter(spec: MetricSpec, samples: list[tuple[str, dict[str, str], float]]) -> Metric:
    names = _label_names(samples)
    metric = CounterMetricFamily(spec.family, spec.help, labels=names)
    for _, labels, value in sorted(samples, key=lambda s: sorted(s[1].items())):
        metric.add_metric([labels.get(n, "") for n in names], value)
    return metric


def _histogram(spec: MetricSpec, samples: list[tuple[str, dict[str, str], float]]) -> Metric:
    """One HistogramMetricFamily; buckets, sum (and count = the +Inf bucket) per label set."""
    names = _label_names(samples)
    series: dict[tuple[str, ...], dict[str, Any]] = defaultdict(lambda: {"buckets": {}, "sum": 0.0})
    for name, labels, value in samples:
        one = series[tuple(labels.get(n, "") for n in names)]
        if name.endswith("_bucket"):
            one["buckets"][labels["le"]] = value
        elif name.endswith("_sum"):
            one["sum"] = value
    metric = HistogramMetricFamily(spec.family, spec.help, labels=names)
    for values, one in sorted(series.items()):
        buckets = sorted(one["buckets"].items(), key=lambda b: float(b[0]))
        if buckets:
            metric.add_metric(list(values), buckets, one["sum"])
    return metric


class _StepCollector(Collector):
    """One step snapshot as metric families, ``pipeline_id`` set to the sensor's."""

    def __init__(self, snapshot: StepSnapshot, pipeline_id: str) -> None:
        self._snapshot = snapshot
        self._pipeline_id = pipeline_id

    def collect(self) -> Iterator[Metric]:
        for family, samples in sorted(self._snapshot.families.items()):
            if not _is_step_family(family):
                continue
            spec = SPECS[family]
            metric = Metric(family, spec.help, _SNAPSHOT_TYPES[spec.kind])
            for key, value in sorted(samples.items()):
                name, labels = parse_sample_key(key)
                labels["pipeline_id"] = self._pipeline_id  # must match the grouping key
                metric.add_sample(name, labels, value)
            yield metric


def step_registry_of(snapshot: StepSnapshot, pipeline_id: str) -> CollectorRegistry:
    """A registry exposing one step's last-run values, ready to push as its group."""
    registry = CollectorRegistry()
    registry.register(_StepCollector(snapshot, pipeline_id))
    return registry


def totals_registry(
    totals: PipelineTotals, pipeline_id: str, push_failures: int = 0
) -> CollectorRegistry:
    """A registry exposing one pipeline's totals, ready to push as its group."""
    registry = CollectorRegistry()
    registry.register(_TotalsCollector(totals, pipeline_id, push_failures))
    return registry
