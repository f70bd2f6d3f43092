"""Every Prometheus metric of the pipeline, and the recorder that writes them.

The metric names, types, help texts, labels and buckets live in one table (:data:`SPECS`)
so that the in-process registry, the step groups and the run totals the sensor pushes
all expose identical families: the Pushgateway rejects a push
whose HELP or TYPE differs from a family another group already has.

Metric objects are built per :class:`~prometheus_client.CollectorRegistry` (not on the
global default registry at import time) because each Dagster step, each test and the CLI
need their own registry, and a metric can be registered only once per registry.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Mapping
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
    set_recorder,
)

MetricKind = Literal["counter", "gauge", "histogram", "enum", "info"]

STAGES: tuple[Stage, ...] = ("fetch", "transform", "load")
OUTCOMES: tuple[RecordOutcome, ...] = ("processed", "inserted", "updated", "skipped", "failed")
STATES: tuple[State, ...] = ("stopped", "running", "error")
DURATION_KINDS = ("fetch", "insert", "batch", "run")

# Buckets sized for batch work: a fetch or insert of a batch takes milliseconds to
# minutes, a whole run seconds to hours; web-latency defaults would put all of it in +Inf.
FETCH_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
INSERT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
RUN_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0)


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
        if self.kind == "counter":
            return self.name.removesuffix("_total")
        if self.kind == "info":
            return self.name.removesuffix("_info")
        return self.name


_PS = ("pipeline_id", "stage")

RECORDS_PROCESSED = MetricSpec(
    "pipeline_records_processed_total", "counter", "Records read and handled by a stage.", _PS
)
RECORDS_INSERTED = MetricSpec(
    "pipeline_records_inserted_total", "counter", "Records newly written to the sink.", _PS
)
RECORDS_UPDATED = MetricSpec(
    "pipeline_records_updated_total", "counter", "Records that replaced an existing row.", _PS
)
RECORDS_SKIPPED = MetricSpec(
    "pipeline_records_skipped_total", "counter", "Records skipped as duplicates.", _PS
)
RECORDS_FAILED = MetricSpec(
    "pipeline_records_failed_total", "counter", "Records that could not be handled.", _PS
)
FETCH_DURATION = MetricSpec(
    "pipeline_fetch_duration_seconds",
    "histogram",
    "Time to fetch one batch from the source.",
    buckets=FETCH_BUCKETS,
)
INSERT_DURATION = MetricSpec(
    "pipeline_insert_duration_seconds",
    "histogram",
    "Time to write one batch to the sink.",
    buckets=INSERT_BUCKETS,
)
BATCH_DURATION = MetricSpec(
    "pipeline_batch_duration_seconds",
    "histogram",
    "Time to handle one batch end to end.",
    buckets=BATCH_BUCKETS,
)
RUN_DURATION = MetricSpec(
    "pipeline_run_duration_seconds", "histogram", "Time of one whole run.", buckets=RUN_BUCKETS
)
ACTIVE_WORKERS = MetricSpec("pipeline_active_workers", "gauge", "Load workers running now.")
QUEUE_DEPTH = MetricSpec(
    "pipeline_queue_depth", "gauge", "Batches waiting between the reader and the load workers."
)
STATE = MetricSpec("pipeline_state", "enum", "Pipeline state (stopped, running, error).")
ERRORS = MetricSpec(
    "pipeline_errors_total",
    "counter",
    "Errors by class (exception class name or short code) and stage.",
    ("pipeline_id", "error_type", "stage"),
)
AI_ANALYSIS = MetricSpec(
    "pipeline_ai_analysis_total",
    "counter",
    "Per-record analyzer outcomes.",
    ("pipeline_id", "result"),
)
RETRIES = MetricSpec(
    "pipeline_retries_total", "counter", "Transient failures that were retried.", _PS
)
DEAD_LETTER = MetricSpec(
    "pipeline_dead_letter_records_total", "counter", "Records written to a dead-letter file.", _PS
)
SCHEMA_CHANGES = MetricSpec(
    "pipeline_schema_changes_total",
    "counter",
    "Table columns added or widened, data fields discarded by the schema contract, fields "
    "given a distinct column name (renamed) or stored in the overflow column (overflowed).",
    ("pipeline_id", "change"),
)
RECORDS_DELETED = MetricSpec(
    "pipeline_records_deleted_total",
    "counter",
    "Sink rows deleted (hard) or stamped deleted (soft): their id was missing from the "
    "source's re-read window, or their record carried the delete marker.",
    ("pipeline_id", "mode"),
)
LAST_SUCCESS = MetricSpec(
    "pipeline_last_success_timestamp_seconds",
    "gauge",
    "Unix time the last run finished successfully.",
)
LAST_RECORD = MetricSpec(
    "pipeline_last_record_timestamp_seconds",
    "gauge",
    "Event time of the newest record loaded (data freshness).",
)
INFO = MetricSpec(
    "pipeline_info",
    "info",
    "Pipeline version and source and sink types.",
    ("pipeline_id", "version", "source_type", "sink_type"),
)
PUSH_FAILURES = MetricSpec(
    "pipeline_pushgateway_failures_total",
    "counter",
    "Pushes to the Pushgateway that failed or timed out (the run went on).",
)
# Pushed by the run-status sensor (one value per Dagster run outcome).
RUNS = MetricSpec(
    "pipeline_runs_total",
    "counter",
    "Finished Dagster runs by result (success, failure, canceled).",
    ("pipeline_id", "result"),
)
LAST_RUN_DURATION = MetricSpec(
    "pipeline_last_run_duration_seconds", "gauge", "Duration of the last finished run."
)
LAST_RUN_SUCCESS = MetricSpec(
    "pipeline_last_run_success", "gauge", "1 if the last finished run succeeded, else 0."
)
STEP_RECORDS = MetricSpec(
    "pipeline_step_records",
    "gauge",
    "Records counted by the last execution of this Dagster step, by outcome and stage.",
    ("pipeline_id", "result", "stage"),
)
STEP_DURATION = MetricSpec(
    "pipeline_step_duration_seconds", "gauge", "Duration of the last execution of this step."
)
STEP_SUCCESS = MetricSpec(
    "pipeline_step_success", "gauge", "1 if the last execution of this step succeeded, else 0."
)
STEP_END = MetricSpec(
    "pipeline_step_end_timestamp_seconds", "gauge", "Unix time this step last ended."
)

RECORD_SPECS: dict[str, MetricSpec] = {
    "processed": RECORDS_PROCESSED,
    "inserted": RECORDS_INSERTED,
    "updated": RECORDS_UPDATED,
    "skipped": RECORDS_SKIPPED,
    "failed": RECORDS_FAILED,
}
DURATION_SPECS: dict[str, MetricSpec] = {
    "fetch": FETCH_DURATION,
    "insert": INSERT_DURATION,
    "batch": BATCH_DURATION,
    "run": RUN_DURATION,
}
#: The metrics the recorder writes (the issue's list) plus the push-failure counter.
RECORDER_SPECS: tuple[MetricSpec, ...] = (
    *RECORD_SPECS.values(),
    *DURATION_SPECS.values(),
    ACTIVE_WORKERS,
    QUEUE_DEPTH,
    STATE,
    ERRORS,
    AI_ANALYSIS,
    RETRIES,
    DEAD_LETTER,
    SCHEMA_CHANGES,
    RECORDS_DELETED,
    LAST_SUCCESS,
    LAST_RECORD,
    INFO,
    PUSH_FAILURES,
)
SPECS: dict[str, MetricSpec] = {
    s.family: s
    for s in (
        *RECORDER_SPECS,
        RUNS,
        LAST_RUN_DURATION,
        LAST_RUN_SUCCESS,
        STEP_RECORDS,
        STEP_DURATION,
        STEP_SUCCESS,
        STEP_END,
    )
}
#: Families that only grow within a process and are summed across runs by the sensor.
CUMULATIVE_FAMILIES: frozenset[str] = frozenset(
    s.family
    for s in RECORDER_SPECS
    if s.kind in ("counter", "histogram") and s is not PUSH_FAILURES
)

_ERROR_TYPE_RE = re.compile(r"[^A-Za-z0-9_.:-]")


def bounded_error_type(error_type: str) -> str:
    """Keep ``error_type`` a short class name so a message can never explode cardinality."""
    cleaned = _ERROR_TYPE_RE.sub("_", str(error_type))[:64]
    return cleaned or "unknown"


def build_metric(spec: MetricSpec, registry: CollectorRegistry) -> Any:
    """Create the prometheus_client object for ``spec`` on ``registry``."""
    labels = list(spec.labels)
    if spec.kind == "counter":
        return Counter(spec.name, spec.help, labels, registry=registry)
    if spec.kind == "gauge":
        return Gauge(spec.name, spec.help, labels, registry=registry)
    if spec.kind == "histogram":
        return Histogram(spec.name, spec.help, labels, registry=registry, buckets=spec.buckets)
    if spec.kind == "enum":
        return Enum(spec.name, spec.help, labels, registry=registry, states=list(STATES))
    return Info(spec.family, spec.help, registry=registry)


def sample_key(name: str, labels: Mapping[str, str]) -> str:
    """A stable text key for one sample (JSON of name and sorted labels)."""
    return json.dumps([name, dict(sorted(labels.items()))], separators=(",", ":"))


def parse_sample_key(key: str) -> tuple[str, dict[str, str]]:
    name, labels = json.loads(key)
    return str(name), {str(k): str(v) for k, v in labels.items()}


class PrometheusRecorder(Recorder):
    """Writes the recording API into Prometheus metrics on its own registry.

    Thread safe (prometheus_client metrics are); every method costs a few dictionary
    look-ups, and the pipeline calls them per batch, not per record.

    Args:
        pipeline_id: Value of the ``pipeline_id`` label on every sample.
        registry: Where the metrics live; a fresh one when omitted (tests pass theirs).
        source_type: For ``pipeline_info``.
        sink_type: For ``pipeline_info``.
    """

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
        self.started_at = time.time()
        self._lock = threading.Lock()
        self._last_snapshot: dict[str, float] = {}
        self._current_state: State = "stopped"
        m = {spec.family: build_metric(spec, self.registry) for spec in RECORDER_SPECS}
        self._records = {o: m[RECORD_SPECS[o].family] for o in OUTCOMES}
        self._durations = {k: m[DURATION_SPECS[k].family] for k in DURATION_KINDS}
        self._workers = m[ACTIVE_WORKERS.family].labels(pipeline_id)
        self._queue = m[QUEUE_DEPTH.family].labels(pipeline_id)
        self._state = m[STATE.family].labels(pipeline_id)
        self._errors = m[ERRORS.family]
        self._analysis = m[AI_ANALYSIS.family]
        self._retries = m[RETRIES.family]
        self._dead_letter = m[DEAD_LETTER.family]
        self._schema_changes = m[SCHEMA_CHANGES.family]
        self._deleted = m[RECORDS_DELETED.family]
        # Created on first success only: a 0 here would read as "last success in 1970".
        self._last_success = m[LAST_SUCCESS.family]
        self._last_record = m[LAST_RECORD.family]
        self._push_failures = m[PUSH_FAILURES.family].labels(pipeline_id)
        # Known label sets start at zero so that the first increase after a scrape is
        # visible to rate() (prometheus.io, "Avoid missing metrics").
        for outcome in OUTCOMES:
            for stage in STAGES:
                self._records[outcome].labels(pipeline_id, stage)
        for kind in DURATION_KINDS:
            self._durations[kind].labels(pipeline_id)
        for result in ("success", "failure"):
            self._analysis.labels(pipeline_id, result)
        for mode in ("hard", "soft"):
            self._deleted.labels(pipeline_id, mode)
        self._workers.set(0)
        self._queue.set(0)
        self._state.state("stopped")
        m[INFO.family].info(
            {
                "pipeline_id": pipeline_id,
                "version": __version__,
                "source_type": source_type,
                "sink_type": sink_type,
            }
        )

    # -- the recording API -------------------------------------------------------------
    def records(self, outcome: RecordOutcome, n: int, stage: Stage = "load") -> None:
        if n > 0:
            self._records[outcome].labels(self.pipeline_id, stage).inc(n)

    def duration(self, kind: Literal["fetch", "insert", "batch", "run"], seconds: float) -> None:
        self._durations[kind].labels(self.pipeline_id).observe(max(0.0, seconds))

    def worker_delta(self, delta: int) -> None:
        self._workers.inc(delta)

    def queue_depth(self, depth: int) -> None:
        self._queue.set(depth)

    def state(self, state: State) -> None:
        self._current_state = state
        self._state.state(state)

    def error(self, error_type: str, stage: Stage) -> None:
        self._errors.labels(self.pipeline_id, bounded_error_type(error_type), stage).inc()

    def analysis(self, result: Literal["success", "failure"], n: int = 1) -> None:
        if n > 0:
            self._analysis.labels(self.pipeline_id, result).inc(n)

    def retry(self, stage: Stage, n: int = 1) -> None:
        if n > 0:
            self._retries.labels(self.pipeline_id, stage).inc(n)

    def dead_letter(self, stage: Stage, n: int) -> None:
        if n > 0:
            self._dead_letter.labels(self.pipeline_id, stage).inc(n)

    def schema_change(
        self, change: Literal["added", "widened", "discarded", "renamed", "overflowed"], n: int
    ) -> None:
        if n > 0:
            self._schema_changes.labels(self.pipeline_id, change).inc(n)

    def deleted(self, mode: DeleteMode, n: int) -> None:
        if n > 0:
            self._deleted.labels(self.pipeline_id, mode).inc(n)

    def last_record_timestamp(self, epoch_seconds: float) -> None:
        self._last_record.labels(self.pipeline_id).set(epoch_seconds)

    def success(self) -> None:
        self._last_success.labels(self.pipeline_id).set(time.time())

    # -- for the server, the hooks and the pusher ---------------------------------------
    @property
    def current_state(self) -> State:
        """The last state set; ``/health`` answers 503 while it is ``error``."""
        return self._current_state

    def push_failed(self) -> None:
        """Count one failed Pushgateway push."""
        self._push_failures.inc()

    def cumulative_samples(self) -> dict[str, float]:
        """Current value of every counter and histogram sample the sensor sums over runs."""
        out: dict[str, float] = {}
        for family in self.registry.collect():
            if family.name not in CUMULATIVE_FAMILIES or family.name == RUN_DURATION.family:
                continue
            for s in family.samples:
                if s.name.endswith("_created"):
                    continue
                out[sample_key(s.name, s.labels)] = float(s.value)
        return out

    def take_delta(self) -> dict[str, float]:
        """What :meth:`cumulative_samples` grew by since the previous call (non-zero only).

        With the in-process executor all steps share one recorder; the delta makes each
        step hook report only its own step's counts.
        """
        with self._lock:
            now = self.cumulative_samples()
            delta = {
                k: v - self._last_snapshot.get(k, 0.0)
                for k, v in now.items()
                if v - self._last_snapshot.get(k, 0.0) > 0
            }
            self._last_snapshot = now
        return delta


def enable_process_metrics(
    pipeline_id: str = "default",
    info: Mapping[str, Any] | None = None,
    registry: CollectorRegistry | None = None,
) -> PrometheusRecorder:
    """Install a :class:`PrometheusRecorder` for this whole process and return it.

    The CLI calls this once before it runs the pipeline when ``--metrics-port`` is given,
    then serves ``recorder.registry``. ``info`` is the same dict ``/info`` shows; its
    ``source``/``sink`` ``type`` fill ``pipeline_info``.
    """
    info = info or {}
    recorder = PrometheusRecorder(
        pipeline_id,
        registry,
        source_type=str((info.get("source") or {}).get("type", "unknown")),
        sink_type=str((info.get("sink") or {}).get("type", "unknown")),
    )
    set_recorder(recorder)
    return recorder


def active_prometheus_recorder() -> PrometheusRecorder | None:
    """The installed recorder if it is a Prometheus one (metrics on), else ``None``."""
    recorder = get_recorder()
    return recorder if isinstance(recorder, PrometheusRecorder) else None
