"""Run totals: what the metrics sensor folds finished runs into, and how it pushes them.

A step hook leaves one :class:`StepRecord` per step in its run's event log: increments and
last-run values. The sensor folds each finished run into its pipeline's
:class:`PipelineTotals`; per step it keeps the values of the execution that *ended* last
(not the last to arrive), so concurrent runs of a step never overwrite each other with older
values. The totals are a function of the event log up to the sensor's watermarks, so its
cursor (:class:`MetricsCursor`) holds only those. Pure: tested without Dagster.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from es_mysql_pipeline.metrics.catalog import (
    CUMULATIVE_FAMILIES,
    RUN_DURATION,
    SPECS,
    STEP_FAMILIES,
    PrometheusRecorder,
    parse_sample_key,
    sample_key,
)

#: The results a finished run can have (the run-end events the sensor reads).
RESULTS = ("success", "failure", "canceled")
#: Version 2 cursors hold watermarks and counts only; a version 1 cursor (which carried
#: the totals themselves) gives its watermarks, and the totals are recomputed.
CURSOR_VERSION = 2
#: Where a step record starts in its engine event's message (after a line for people).
RECORD_MARKER = "es_mysql_pipeline step record v1: "
#: Families (family name -> sample key -> value), as a step record and a push carry them.
Families = dict[str, dict[str, float]]
#: The totals that start at zero: the known series of a fresh recorder (deletes excepted:
#: their zeros were never pushed) and the run results.
ZERO_FAMILIES = (CUMULATIVE_FAMILIES | {RUN_DURATION.family}) - {"pipeline_records_deleted"}


@dataclass(frozen=True)
class StepSnapshot:
    """The last-run values of one step execution (families of :data:`STEP_FAMILIES`)."""

    step: str
    end: float
    families: Families


@dataclass(frozen=True)
class StepRecord:
    """What a step hook leaves in its run's event log: its increments and last-run values."""

    snapshot: StepSnapshot
    #: Counter and histogram increments of the step (sample key -> value, > 0 only).
    delta: dict[str, float]

    def to_message(self, summary: str) -> str:
        """``summary`` for people, then the marker and the record as one JSON line."""
        s = self.snapshot
        data = {"step": s.step, "end": s.end, "families": s.families, "delta": self.delta}
        return f"{summary}\n{RECORD_MARKER}{json.dumps(data, separators=(',', ':'))}"

    @classmethod
    def from_message(cls, message: str | None) -> StepRecord | None:
        """``None`` for any message that does not carry a record (every other event). The
        families a step group no longer shows (a record of an older version) are left out."""
        _, marker, text = (message or "").rpartition(RECORD_MARKER)
        if not marker:
            return None
        try:
            data = json.loads(text)
            families = {
                str(family): {str(k): float(v) for k, v in samples.items()}
                for family, samples in data["families"].items()
                if family in STEP_FAMILIES
            }
            snapshot = StepSnapshot(str(data["step"]), float(data["end"]), families)
            return cls(snapshot, {str(k): float(v) for k, v in data["delta"].items()})
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


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
    """The sensor's cursor: event watermarks and counts, a few hundred bytes; the push
    failures per pipeline are the one count the event log cannot give back."""

    after: dict[str, int] = field(default_factory=dict)
    runs_counted: int = 0
    push_failures: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        data = {"v": CURSOR_VERSION, **self.__dict__}
        return json.dumps(data, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None, pipeline_id: str = "default") -> MetricsCursor:
        """Fresh for ``None`` or an unknown version; a version 1 cursor's failures are
        counted for ``pipeline_id``."""
        data = json.loads(text) if text else {}
        if data.get("v") not in (1, CURSOR_VERSION):
            return cls()
        after = {str(k): int(v) for k, v in (data.get("after") or {}).items()}
        failures = data.get("push_failures") or {}
        if data["v"] == 1:
            failures = {pipeline_id: failures} if failures else {}
        by = {str(k): int(v) for k, v in failures.items()}
        return cls(after, int(data.get("runs_counted") or 0), by)


def _add(totals: dict[str, float], value: float, name: str, **labels: str) -> None:
    key = sample_key(name, labels)
    totals[key] = totals.get(key, 0.0) + value


def zero_totals(pipeline_id: str) -> dict[str, float]:
    """Known series at zero, so the first run's increase is visible to ``rate()``."""
    fresh = PrometheusRecorder(pipeline_id).samples(ZERO_FAMILIES)
    zeros = {key: value for samples in fresh.values() for key, value in samples.items()}
    for result in RESULTS:
        _add(zeros, 0, "pipeline_runs_total", pipeline_id=pipeline_id, result=result)
    return zeros


def family_of(sample_name: str) -> str | None:
    for suffix in ("_bucket", "_count", "_sum", "_total", ""):
        if sample_name.endswith(suffix) and sample_name.removesuffix(suffix) in SPECS:
            return sample_name.removesuffix(suffix)
    return None


def fold_run(
    totals: PipelineTotals,
    pipeline_id: str,
    result: str,
    duration_seconds: float | None,
    end_time: float | None,
    deltas: Iterable[Mapping[str, float]],
    steps: Iterable[StepSnapshot] = (),
) -> None:
    """Add one finished run to the totals.

    Runs arrive in the order the sensor reads their end events (a tick's successes before
    its failures), not the order they ended: ``last_run_*`` and each step's snapshot change
    only for a run or step that ended later than the one they show.
    """
    t, pid = totals.totals, {"pipeline_id": pipeline_id}  # the push's grouping key
    _add(t, 1, "pipeline_runs_total", **pid, result=result)
    for delta in deltas:
        for key, value in delta.items():
            name, labels = parse_sample_key(key)
            if family_of(name) in CUMULATIVE_FAMILIES and value > 0:
                _add(t, value, name, **labels | pid)
    if duration_seconds is not None:
        for le in (*RUN_DURATION.buckets, math.inf):
            bucket = floatToGoString(le)
            _add(t, float(duration_seconds <= le), f"{RUN_DURATION.name}_bucket", **pid, le=bucket)
        _add(t, 1, f"{RUN_DURATION.name}_count", **pid)
        _add(t, duration_seconds, f"{RUN_DURATION.name}_sum", **pid)
    if _not_older(end_time, totals.last_run_end):
        totals.last_run_end = end_time if end_time is not None else totals.last_run_end
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


class FamiliesCollector(Collector):
    """Flat samples as metric families (HELP and TYPE from :data:`SPECS`), each sample's
    ``pipeline_id`` set to the group's: what :func:`push_to_gateway` renders. ``info`` (the
    pipeline's ``source_type`` and ``sink_type``) relabels ``pipeline_info``: a step records
    the shared resource's, which a YAML pipeline does not know."""

    def __init__(
        self, families: Families, pipeline_id: str, info: Mapping[str, str] | None = None
    ) -> None:
        self.families, self.pipeline_id, self.info = families, pipeline_id, info or {}

    def collect(self) -> Iterator[Metric]:
        for family, samples in sorted(self.families.items()):
            spec = SPECS[family]
            metric = Metric(family, spec.help, "stateset" if spec.kind == "enum" else spec.kind)
            own = {"pipeline_id": self.pipeline_id, **(self.info if spec.kind == "info" else {})}
            parsed = [(*parse_sample_key(key), value) for key, value in samples.items()]
            for name, labels, value in sorted(parsed, key=_exposition_order):
                metric.add_sample(name, labels | own, value)
            yield metric


def _exposition_order(sample: tuple[str, dict[str, str], float]) -> Any:
    """Per label set: buckets by bound, then ``_count`` and ``_sum``."""
    name, labels, _ = sample
    rest = sorted((k, v) for k, v in labels.items() if k != "le")
    return rest, name, float(labels.get("le", 0))


def pushed_groups(
    totals: PipelineTotals,
    pipeline_id: str,
    push_failures: int,
    info: Mapping[str, str] | None = None,
) -> Iterator[tuple[dict[str, str], FamiliesCollector]]:
    """One pipeline's groups, each with its grouping labels beyond ``pipeline_id``: first
    the totals (with the last-run gauges and the push failures), then each step's."""
    pid = {"pipeline_id": pipeline_id}
    gauges = {
        "pipeline_last_success_timestamp_seconds": totals.last_success,
        "pipeline_last_run_duration_seconds": totals.last_run_duration,
        "pipeline_last_run_success": totals.last_run_success,
        "pipeline_pushgateway_failures_total": push_failures,
    }
    samples = {sample_key(n, pid): float(v) for n, v in gauges.items() if v is not None}
    families: Families = {}
    for key, value in (totals.totals | samples).items():
        family = family_of(parse_sample_key(key)[0])
        assert family is not None, key  # totals hold the catalog's series only (fold_run)
        families.setdefault(family, {})[key] = value
    yield {}, FamiliesCollector(families, pipeline_id)
    for step, snapshot in sorted(totals.steps.items()):
        yield {"step": step}, FamiliesCollector(snapshot.families, pipeline_id, info)
