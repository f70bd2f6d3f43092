"""The one small API the pipeline records metrics through, per batch (never per record).

With metrics off the recorder is the :class:`Recorder` base, whose methods do nothing.
"""

from __future__ import annotations

from typing import Literal

Stage = Literal["fetch", "transform", "load"]
RecordOutcome = Literal["processed", "inserted", "updated", "skipped", "failed"]
State = Literal["stopped", "running", "error"]
#: How a sink row went: removed (``hard``) or stamped in its ``_deleted_at`` column (``soft``).
DeleteMode = Literal["hard", "soft"]


class Recorder:
    """What the pipeline records through; this base records nothing (``PrometheusRecorder``
    overrides every method)."""

    def records(self, outcome: RecordOutcome, n: int, stage: Stage = "load") -> None:
        """Count ``n`` records with ``outcome``."""

    def duration(self, kind: Literal["fetch", "insert", "batch", "run"], seconds: float) -> None:
        """Observe one fetch, insert, batch or run duration."""

    def worker_delta(self, delta: int) -> None:
        """A load worker started (+1) or stopped (-1)."""

    def queue_depth(self, depth: int) -> None:
        """Batches waiting between the reader and the load workers."""

    def state(self, state: State) -> None:
        """The pipeline's state."""

    def error(self, error_type: str, stage: Stage) -> None:
        """An error of a bounded class (an exception class name or a short code)."""

    def analysis(self, result: Literal["success", "failure"], n: int = 1) -> None:
        """Per-record analyzer outcomes."""

    def retry(self, stage: Stage, n: int = 1) -> None:
        """A transient failure was retried."""

    def dead_letter(self, stage: Stage, n: int) -> None:
        """Records written to a dead-letter file."""

    def schema_change(
        self, change: Literal["added", "widened", "discarded", "renamed", "overflowed"], n: int
    ) -> None:
        """Table columns added or widened, fields discarded, renamed or overflowed."""

    def deleted(self, mode: DeleteMode, n: int) -> None:
        """Sink rows deleted or stamped deleted."""

    def last_record_timestamp(self, epoch_seconds: float) -> None:
        """Event time of the newest record loaded (data freshness)."""

    def success(self) -> None:
        """The run finished successfully now."""


#: The recorder while metrics are off.
NullRecorder = Recorder
_recorder: Recorder = NullRecorder()


def get_recorder() -> Recorder:
    return _recorder


def set_recorder(recorder: Recorder | None) -> Recorder:
    """Install ``recorder`` (``None`` turns metrics off); returns the previous one."""
    global _recorder
    previous, _recorder = _recorder, recorder if recorder is not None else NullRecorder()
    return previous
