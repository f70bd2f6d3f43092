"""Every Prometheus metric of the pipeline (one table, :data:`SPECS`) and the recorder.

One table, so that a step's registry, the step groups and the sensor's totals expose the
same HELP and TYPE: the Pushgateway rejects a push whose family differs from another
group's. Metrics are built per registry, as each step, test and the CLI has its own.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram, Info

from es_mysql_pipeline import __version__
from es_mysql_pipeline.metrics.recorder import (
    DeleteMode,
    Recorder,
    RecordOutcome,
    Stage,
    State,
    get_recorder,
)

MetricKind = Literal["counter", "gauge", "histogram", "enum", "info"]

STAGES: tuple[Stage, ...] = ("fetch", "transform", "load")
OUTCOMES: tuple[RecordOutcome, ...] = ("processed", "inserted", "updated", "skipped", "failed")
STATES: tuple[State, ...] = ("stopped", "running", "error")
DURATION_KINDS = ("fetch", "insert", "batch", "run")


@dataclass(frozen=True)
class MetricSpec:
    """One metric family: ``name`` as exposed (counters with ``_total``)."""

    name: str
    kind: MetricKind
    help: str
    labels: tuple[str, ...] = ("pipeline_id",)
    buckets: tuple[float, ...] = ()

    @property
    def family(self) -> str:
        """The family name prometheus_client uses (counters without ``_total``)."""
        suffix = {"counter": "_total", "info": "_info"}.get(self.kind, "")
        return self.name.removesuffix(suffix) if suffix else self.name


def _spec(name: str, kind: MetricKind, help: str, *labels: str, buckets: Any = ()) -> MetricSpec:
    return MetricSpec(name, kind, help, ("pipeline_id", *labels), tuple(map(float, buckets)))


_RECORDS = {
    "processed": "Records read and handled by a stage.",
    "inserted": "Records newly written to the sink.",
    "updated": "Records that replaced an existing row.",
    "skipped": "Records skipped as duplicates.",
    "failed": "Records that could not be handled.",
}
#: What the recorder writes. Buckets are sized for batch work (a batch takes milliseconds to
#: minutes, a run seconds to hours); web-latency defaults would put all of it in +Inf.
RECORDER_SPECS: tuple[MetricSpec, ...] = (
    *(_spec(f"pipeline_records_{o}_total", "counter", h, "stage") for o, h in _RECORDS.items()),
    _spec("pipeline_fetch_duration_seconds", "histogram",
          "Time to fetch one batch from the source.",
          buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)),
    _spec("pipeline_insert_duration_seconds", "histogram", "Time to write one batch to the sink.",
          buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)),
    _spec("pipeline_batch_duration_seconds", "histogram", "Time to handle one batch end to end.",
          buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)),
    _spec("pipeline_run_duration_seconds", "histogram", "Time of one whole run.",
          buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)),
    _spec("pipeline_active_workers", "gauge", "Load workers running now."),
    _spec("pipeline_queue_depth", "gauge",
          "Batches waiting between the reader and the load workers."),
    _spec("pipeline_state", "enum", "Pipeline state (stopped, running, error)."),
    _spec("pipeline_errors_total", "counter",
          "Errors by class (exception class name or short code) and stage.", "error_type", "stage"),
    _spec("pipeline_ai_analysis_total", "counter", "Per-record analyzer outcomes.", "result"),
    _spec("pipeline_retries_total", "counter", "Transient failures that were retried.", "stage"),
    _spec("pipeline_dead_letter_records_total", "counter",
          "Records written to a dead-letter file.", "stage"),
    _spec("pipeline_schema_changes_total", "counter",
          "Table columns added or widened, data fields discarded by the schema contract, fields "
          "given a distinct column name (renamed) or stored in the overflow column (overflowed).",
          "change"),
    _spec("pipeline_records_deleted_total", "counter",
          "Sink rows deleted (hard) or stamped deleted (soft): their id was missing from the "
          "source's re-read window, or their record carried the delete marker.", "mode"),
    _spec("pipeline_last_success_timestamp_seconds", "gauge",
          "Unix time the last run finished successfully."),
    _spec("pipeline_last_record_timestamp_seconds", "gauge",
          "Event time of the newest record loaded (data freshness)."),
    _spec("pipeline_info", "info", "Pipeline version and source and sink types.",
          "version", "source_type", "sink_type"),
    _spec("pipeline_pushgateway_failures_total", "counter",
          "Pushes to the Pushgateway that failed or timed out (the run went on)."),
)  # fmt: skip
#: Every family by name: the recorder's, and those only the metrics sensor pushes.
SPECS: dict[str, MetricSpec] = {
    s.family: s
    for s in (
        *RECORDER_SPECS,
        _spec("pipeline_runs_total", "counter",
              "Finished Dagster runs by result (success, failure, canceled).", "result"),
        _spec("pipeline_last_run_duration_seconds", "gauge", "Duration of the last finished run."),
        _spec("pipeline_last_run_success", "gauge",
              "1 if the last finished run succeeded, else 0."),
        _spec("pipeline_step_records", "gauge",
              "Records counted by the last execution of this Dagster step, by outcome and stage.",
              "result", "stage"),
        _spec("pipeline_step_duration_seconds", "gauge",
              "Duration of the last execution of this step."),
        _spec("pipeline_step_success", "gauge",
              "1 if the last execution of this step succeeded, else 0."),
        _spec("pipeline_step_end_timestamp_seconds", "gauge", "Unix time this step last ended."),
    )
}  # fmt: skip
RUN_DURATION = SPECS["pipeline_run_duration_seconds"]
#: Families that only grow within a process and that the sensor sums over runs (it
#: observes run durations itself, and push failures are its own count).
CUMULATIVE_FAMILIES: frozenset[str] = frozenset(
    s.family for s in RECORDER_SPECS if s.kind in ("counter", "histogram")
) - {RUN_DURATION.family, "pipeline_pushgateway_failures"}
#: Last-run values, as a step group shows them; not the gauges that mean something only
#: while a run is in progress (always 0 when a step ends).
STEP_FAMILIES: frozenset[str] = frozenset(
    f for f, s in SPECS.items() if s.kind in ("gauge", "enum", "info")
) - {"pipeline_active_workers", "pipeline_queue_depth"}

_ERROR_TYPE_RE = re.compile(r"[^A-Za-z0-9_.:-]")


def bounded_error_type(error_type: str) -> str:
    """Keep ``error_type`` a short class name so a message can never explode cardinality."""
    return _ERROR_TYPE_RE.sub("_", str(error_type))[:64] or "unknown"


def build_metric(spec: MetricSpec, registry: CollectorRegistry) -> Any:
    """Create the prometheus_client object for ``spec`` on ``registry``."""
    if spec.kind == "info":
        return Info(spec.family, spec.help, registry=registry)
    kind: Any = {"counter": Counter, "gauge": Gauge, "histogram": Histogram, "enum": Enum}
    extra: dict[str, Any] = {"buckets": spec.buckets} if spec.buckets else {}
    if spec.kind == "enum":
        extra["states"] = list(STATES)
    return kind[spec.kind](spec.name, spec.help, list(spec.labels), registry=registry, **extra)


def sample_key(name: str, labels: Mapping[str, str]) -> str:
    """A stable text key for one sample (JSON of name and sorted labels)."""
    return json.dumps([name, dict(sorted(labels.items()))], separators=(",", ":"))


def parse_sample_key(key: str) -> tuple[str, dict[str, str]]:
    name, labels = json.loads(key)
    return str(name), {str(k): str(v) for k, v in labels.items()}


class PrometheusRecorder(Recorder):
    """Writes the recording API into Prometheus metrics on its own registry (thread safe;
    a few dictionary look-ups per call, and the pipeline calls per batch)."""

    def __init__(
        self,
        pipeline_id: str = "default",
        registry: CollectorRegistry | None = None,
        *,
        source_type: str = "unknown",
        sink_type: str = "unknown",
    ) -> None:
        self.pipeline_id = pipeline_id
        self.registry = registry if registry is not None else CollectorRegistry()
        self._lock = threading.Lock()
        self._last_snapshot: dict[str, float] = {}
        self.current_state: State = "stopped"  # /health answers 503 while it is "error"
        self._m = {s.family: build_metric(s, self.registry) for s in RECORDER_SPECS}
        # Known label sets start at zero, so the first increase after a scrape is visible
        # to rate() (prometheus.io, "Avoid missing metrics"). The last success is created
        # on the first one only: a 0 would read as "last success in 1970".
        known: dict[str, Collection[tuple[str, ...]]] = {
            **{f"pipeline_records_{o}": [(s,) for s in STAGES] for o in OUTCOMES},
            **{f"pipeline_{k}_duration_seconds": [()] for k in DURATION_KINDS},
            "pipeline_ai_analysis": [("success",), ("failure",)],
            "pipeline_records_deleted": [("hard",), ("soft",)],
            "pipeline_active_workers": [()],
            "pipeline_queue_depth": [()],
            "pipeline_state": [()],
            "pipeline_pushgateway_failures": [()],
        }
        for family, label_sets in known.items():
            for labels in label_sets:
                self._m[family].labels(pipeline_id, *labels)
        self._m["pipeline"].info(
            {"pipeline_id": pipeline_id, "version": __version__}
            | {"source_type": source_type, "sink_type": sink_type}
        )

    def _of(self, family: str, *labels: str) -> Any:
        return self._m[family].labels(self.pipeline_id, *labels)

    def _inc(self, family: str, n: int, *labels: str) -> None:
        if n > 0:  # counters never go down
            self._of(family, *labels).inc(n)

    # -- the recording API -------------------------------------------------------------
    def records(self, outcome: RecordOutcome, n: int, stage: Stage = "load") -> None:
        self._inc(f"pipeline_records_{outcome}", n, stage)

    def duration(self, kind: Literal["fetch", "insert", "batch", "run"], seconds: float) -> None:
        self._of(f"pipeline_{kind}_duration_seconds").observe(max(0.0, seconds))

    def worker_delta(self, delta: int) -> None:
        self._of("pipeline_active_workers").inc(delta)

    def queue_depth(self, depth: int) -> None:
        self._of("pipeline_queue_depth").set(depth)

    def state(self, state: State) -> None:
        self.current_state = state
        self._of("pipeline_state").state(state)

    def error(self, error_type: str, stage: Stage) -> None:
        self._inc("pipeline_errors", 1, bounded_error_type(error_type), stage)

    def analysis(self, result: Literal["success", "failure"], n: int = 1) -> None:
        self._inc("pipeline_ai_analysis", n, result)

    def retry(self, stage: Stage, n: int = 1) -> None:
        self._inc("pipeline_retries", n, stage)

    def dead_letter(self, stage: Stage, n: int) -> None:
        self._inc("pipeline_dead_letter_records", n, stage)

    def schema_change(
        self, change: Literal["added", "widened", "discarded", "renamed", "overflowed"], n: int
    ) -> None:
        self._inc("pipeline_schema_changes", n, change)

    def deleted(self, mode: DeleteMode, n: int) -> None:
        self._inc("pipeline_records_deleted", n, mode)

    def last_record_timestamp(self, epoch_seconds: float) -> None:
        self._of("pipeline_last_record_timestamp_seconds").set(epoch_seconds)

    def success(self) -> None:
        self._of("pipeline_last_success_timestamp_seconds").set(time.time())

    # -- for the pusher and the step hooks ----------------------------------------------
    def push_failed(self) -> None:
        self._of("pipeline_pushgateway_failures").inc()

    def samples(self, families: Collection[str]) -> dict[str, dict[str, float]]:
        """The samples of ``families``, per family (sample key -> value)."""
        return {
            family.name: {
                sample_key(s.name, s.labels): float(s.value)
                for s in family.samples
                if not s.name.endswith("_created")
            }
            for family in self.registry.collect()
            if family.name in families
        }

    def take_delta(self) -> dict[str, float]:
        """What the cumulative samples grew by since the previous call (non-zero only): with
        the in-process executor all steps share one recorder, and each reports its own."""
        with self._lock:
            now = {k: v for f in self.samples(CUMULATIVE_FAMILIES).values() for k, v in f.items()}
            old, self._last_snapshot = self._last_snapshot, now
        return {k: v - old.get(k, 0.0) for k, v in now.items() if v - old.get(k, 0.0) > 0}


def active_prometheus_recorder() -> PrometheusRecorder | None:
    """The installed recorder if it is a Prometheus one (metrics on), else ``None``."""
    recorder = get_recorder()
    return recorder if isinstance(recorder, PrometheusRecorder) else None
