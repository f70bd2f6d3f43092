"""Run totals: what the metrics sensor folds finished runs into, and how it exposes them.

The totals live in the sensor's cursor (:class:`MetricsCursor`) as flat sample keys, so one
cursor write both advances the event watermarks and adds a run: each run counted once, the
totals survive daemon restarts. :func:`cursor_registry` turns them into prometheus_client
metric families (counters, histograms, gauges) with the catalog's HELP/TYPE, for the push.

The cursor also keeps, per step, the last-run values (:class:`StepSnapshot`) of the step
execution that *ended* last among the runs folded so far; :func:`step_registry_of` turns
one into the step's group. Picking by end time, not by arrival, is what keeps concurrent
runs of a step from overwriting each other with older values.
Pure: tested without Dagster.
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
    MetricSpec,
    parse_sample_key,
    sample_key,
)

#: The results a finished run can have (the run-end events the sensor reads).
RESULTS = ("success", "failure", "canceled")

#: Version 1 cursors (before ``last_run_end`` and ``steps``) read as version 1 with those
#: fields empty: the totals carry on.
CURSOR_VERSION = 1

#: How each kind of last-run family is exposed (the type prometheus_client gives it).
_SNAPSHOT_TYPES = {"gauge": "gauge", "enum": "stateset", "info": "info"}


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
            spec = SPECS.get(family.name)
            if spec is None or spec.kind not in _SNAPSHOT_TYPES:
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


@dataclass
class MetricsCursor:
    """Everything the sensor must remember: event watermarks, running totals, last runs."""

    after: dict[str, int] = field(default_factory=dict)
    totals: dict[str, float] = field(default_factory=dict)
    last_success: float | None = None
    last_run_duration: float | None = None
    last_run_success: int | None = None
    push_failures: int = 0
    runs_counted: int = 0
    #: End time of the run the ``last_run_*`` values are from.
    last_run_end: float | None = None
    #: Per step name, the snapshot of the execution that ended last (bounded: our steps).
    steps: dict[str, StepSnapshot] = field(default_factory=dict)

    def to_json(self) -> str:
        data = {**self.__dict__, "steps": {k: v.to_data() for k, v in self.steps.items()}}
        return json.dumps({"v": CURSOR_VERSION, **data}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | None) -> MetricsCursor:
        """A fresh cursor for ``None`` or a cursor of another version."""
        if not text:
            return cls()
        data = json.loads(text)
        if data.pop("v", None) != CURSOR_VERSION:
            return cls()
        steps = {}
        for name, raw in data.pop("steps", {}).items():
            snapshot = StepSnapshot.from_data(raw)
            if snapshot is not None:
                steps[name] = snapshot
        return cls(**data, steps=steps)


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
    cursor: MetricsCursor,
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
    _add(cursor.totals, sample_key(RUNS.name, {"pipeline_id": pipeline_id, "result": result}), 1.0)
    for delta in deltas:
        for key, value in delta.items():
            name, labels = parse_sample_key(key)
            family = family_of(name)
            if family not in CUMULATIVE_FAMILIES or family == RUN_DURATION.family or value <= 0:
                continue
            labels["pipeline_id"] = pipeline_id  # must match the push's grouping key
            _add(cursor.totals, sample_key(name, labels), value)
    if duration_seconds is not None:
        _observe_run_duration(cursor.totals, pipeline_id, duration_seconds)
    if _not_older(end_time, cursor.last_run_end):
        if end_time is not None:
            cursor.last_run_end = end_time
        cursor.last_run_success = 1 if result == "success" else 0
        if duration_seconds is not None:
            cursor.last_run_duration = duration_seconds
    if result == "success" and end_time is not None:
        cursor.last_success = max(cursor.last_success or 0.0, end_time)
    for snapshot in steps:
        shown = cursor.steps.get(snapshot.step)
        if _not_older(snapshot.end, shown.end if shown is not None else None):
            cursor.steps[snapshot.step] = snapshot
    cursor.runs_counted += 1


def _not_older(end: float | None, shown: float | None) -> bool:
    """Whether something that ended at ``end`` may replace what ended at ``shown``."""
    return shown is None or end is None or end >= shown


class _CursorCollector(Collector):
    """Exposes the cursor's totals as prometheus_client metric families (HELP/TYPE from SPECS)."""

    def __init__(self, cursor: MetricsCursor, pipeline_id: str) -> None:
        self._cursor = cursor
        self._pipeline_id = pipeline_id

    def collect(self) -> Iterator[Metric]:
        by_family: dict[str, list[tuple[str, dict[str, str], float]]] = defaultdict(list)
        for key, value in self._cursor.totals.items():
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
            (LAST_SUCCESS, self._cursor.last_success),
            (LAST_RUN_DURATION, self._cursor.last_run_duration),
            (LAST_RUN_SUCCESS, self._cursor.last_run_success),
        )
        for spec, gauge_value in gauges:
            if gauge_value is not None:
                gauge = GaugeMetricFamily(spec.name, spec.help, labels=list(pid))
                gauge.add_metric(list(pid.values()), float(gauge_value))
                yield gauge
        failures = CounterMetricFamily(PUSH_FAILURES.family, PUSH_FAILURES.help, labels=list(pid))
        failures.add_metric(list(pid.values()), float(self._cursor.push_failures))
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
            spec = SPECS.get(family)
            if spec is None or spec.kind not in _SNAPSHOT_TYPES:
                continue
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


def cursor_registry(cursor: MetricsCursor, pipeline_id: str) -> CollectorRegistry:
    """A registry exposing the cursor's totals, ready to push."""
    registry = CollectorRegistry()
    registry.register(_CursorCollector(cursor, pipeline_id))
    return registry
