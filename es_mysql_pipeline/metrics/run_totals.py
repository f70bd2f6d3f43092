"""Run totals: what the metrics sensor folds finished runs into, and how it exposes them.

The totals live in the sensor's cursor (:class:`MetricsCursor`) as flat sample keys, so one
cursor write both advances the event watermarks and adds a run: each run counted once, the
totals survive daemon restarts. :func:`cursor_registry` turns them into prometheus_client
metric families (counters, histograms, gauges) with the catalog's HELP/TYPE, for the push.
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

CURSOR_VERSION = 1


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
) -> None:
    """Add one finished run to the totals (pure: tested without Dagster)."""
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
        cursor.last_run_duration = duration_seconds
    cursor.last_run_success = 1 if result == "success" else 0
    if result == "success" and end_time is not None:
        cursor.last_success = max(cursor.last_success or 0.0, end_time)
    cursor.runs_counted += 1


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


def cursor_registry(cursor: MetricsCursor, pipeline_id: str) -> CollectorRegistry:
    """A registry exposing the cursor's totals, ready to push."""
    registry = CollectorRegistry()
    registry.register(_CursorCollector(cursor, pipeline_id))
    return registry
