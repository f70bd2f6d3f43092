"""Run the pipeline on one input and check the invariant.

Two ways to run: :func:`run_direct` calls the three asset functions in-process (fast, no
Dagster retries, used by the property tests) and :func:`run_materialize` materializes the
unpartitioned assets as the CLI does. Both return a :class:`RunOutcome` that
:func:`assert_invariant` checks: ``processed = inserted + updated + skipped + failed`` and
every failed record is in a dead-letter file with a reason.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from es_mysql_pipeline.assets.fetch import fetch_records
from es_mysql_pipeline.assets.load import load_records
from es_mysql_pipeline.assets.partitions import WindowConfig
from es_mysql_pipeline.assets.transform import transform_records
from es_mysql_pipeline.dead_letter import read_dead_letters
from es_mysql_pipeline.resources.settings import PipelineSettings
from es_mysql_pipeline.resources.sinks.base import RecordSink
from es_mysql_pipeline.resources.sources.base import RecordSource
from es_mysql_pipeline_tests.helpers import make_resources, metadata, run_unpartitioned
from es_mysql_pipeline_tests.support.failures import step_failure_message

COUNTS = ("processed", "inserted", "updated", "skipped", "failed")


@dataclass
class RunOutcome:
    """What one run did: its counts, its dead letters, or the one-line failure message."""

    counts: dict[str, int] = field(default_factory=dict)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    failure: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.failure is None


def dead_letters(dead_letter_dir: str | Path, label: str = "all") -> list[dict[str, Any]]:
    """Every entry of the transform and load dead-letter files for ``label``."""
    out: list[dict[str, Any]] = []
    for stage in ("transform", "load"):
        path = os.path.join(str(dead_letter_dir), stage, f"{label}.jsonl")
        if os.path.exists(path):
            out.extend(read_dead_letters(path))
    return out


def run_direct(
    source: RecordSource, sink: RecordSink, tmp: str | Path, **settings: Any
) -> RunOutcome:
    """fetch → transform → load by calling the asset functions; ``dg.Failure`` is an outcome,
    any other exception propagates (that is a crash, and fails the test)."""
    dl_dir = os.path.join(str(tmp), "dead_letter")
    cfg = PipelineSettings(dead_letter_dir=dl_dir, **settings)
    window = WindowConfig()
    # closed at the end: its ephemeral instance's SQLite goes with it, not at interpreter exit
    with dg.build_asset_context() as ctx:
        try:
            raw = fetch_records(ctx, window, source, cfg).value
            assert raw is not None
            clean = transform_records(ctx, window, raw, cfg).value
            assert clean is not None
            result = load_records(ctx, window, clean, sink, cfg, source)
        except dg.Failure as exc:
            return RunOutcome(failure=str(exc.description))
    md: dict[str, Any] = {k: getattr(v, "value", v) for k, v in (result.metadata or {}).items()}
    return RunOutcome({k: int(md[k]) for k in COUNTS}, dead_letters(dl_dir), None, md)


def run_materialize(
    source: RecordSource, sink: RecordSink, tmp: str | Path, **settings: Any
) -> RunOutcome:
    """Materialize the unpartitioned assets (the CLI's path) and read the outcome back."""
    resources = make_resources(str(tmp), sink=sink, source=source, **settings)
    result = run_unpartitioned(resources)
    if not result.success:
        return RunOutcome(failure=step_failure_message(result))
    md = metadata(result, "loaded_records")
    dl_dir = os.path.join(str(tmp), "dead_letter")
    return RunOutcome({k: int(md[k]) for k in COUNTS}, dead_letters(dl_dir), None, md)


def assert_invariant(outcome: RunOutcome, expected_processed: int | None = None) -> None:
    """processed = inserted + updated + skipped + failed; each failure dead-lettered with a
    reason; and ``processed`` is what the source really held, when the test knows it."""
    assert outcome.ok, outcome.failure
    c = outcome.counts
    assert c["processed"] == c["inserted"] + c["updated"] + c["skipped"] + c["failed"], c
    assert len(outcome.dead_letters) == c["failed"], (c, outcome.dead_letters[:3])
    for entry in outcome.dead_letters:
        assert entry["stage"] in ("transform", "load"), entry
        assert isinstance(entry["reason"], str) and entry["reason"].strip(), entry
        assert isinstance(entry["record"], dict), entry
    if expected_processed is not None:
        assert c["processed"] == expected_processed, c


def assert_clear_failure(message: str | None, *must_contain: str) -> None:
    """A failure users can act on: one line, no traceback, naming what it must name."""
    assert message is not None, "the run was expected to fail"
    assert "Traceback" not in message and "\n" not in message.strip(), message
    for text in must_contain:
        assert text.lower() in message.lower(), (text, message)


def reasons(outcome: RunOutcome) -> list[str]:
    return [str(e["reason"]) for e in outcome.dead_letters]


class Hung(Exception):
    """A run took longer than its time limit."""


@contextlib.contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """Fail (instead of hanging the suite) when the body runs longer than ``seconds``."""

    def on_alarm(signum: int, frame: object) -> None:
        raise Hung(f"no result after {seconds}s: the pipeline hangs")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
