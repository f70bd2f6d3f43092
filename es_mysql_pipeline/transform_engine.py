"""Runs the field mapping over a whole staged file: in this process, or in worker processes.

The transform is pure per-record Python, so one process uses one core however many the
machine has. A big staged file is cut into runs of frames; each worker process maps its run into
a part file and a part dead letter, and the parts are joined in order, so the output is
the same file, rows and dead letter, in the same order, as a serial run would write.

Workers come from :mod:`es_mysql_pipeline.worker_processes` (spawned, deaf to Ctrl+C, gone
with their parent) and import only this module's light dependencies: nothing here imports
Dagster.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from es_mysql_pipeline.dead_letter import DeadLetterWriter
from es_mysql_pipeline.errors import RejectedRecordsError
from es_mysql_pipeline.identifiers import column_name
from es_mysql_pipeline.mapping import (
    Analyzer,
    FieldMapping,
    RecordRejected,
    load_analyzer,
)
from es_mysql_pipeline.records import Frame, Record, as_rows
from es_mysql_pipeline.staging import StagedFileWriter, StagedRecords, scratch_dir
from es_mysql_pipeline.value_types import as_json_values
from es_mysql_pipeline.worker_processes import (
    discard_files,
    may_spawn,
    ordered_map,
    process_count,
    spawn_pool,
)

#: Below this many records a staged file is mapped in-process: starting workers costs more.
PARALLEL_MIN_ROWS = 50_000
#: Runs of frames per worker: small enough for progress and a prompt stop, big enough
#: that handing a run over costs nothing next to mapping it.
_RUNS_PER_WORKER = 4
#: Records to see before one reason may stop the run: a few bad rows at the top of a file
#: are not a pattern.
REJECT_SAMPLE_MIN = 1000
#: Quoted values and numbers: what differs between two records rejected for the same reason.
_VARYING_RE = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|\d+")


def reason_kind(reason: str) -> str:
    """A dead-letter reason with its values blanked: ``line 7: expected 3 fields, found 4``
    and ``line 9: expected 3 fields, found 5`` are one kind."""
    return _VARYING_RE.sub("…", reason)[:160]


@dataclass
class RejectTally:
    """Rejected records by kind of reason, with the first reason of each kind as example."""

    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def add(self, reason: str) -> None:
        kind = reason_kind(reason)
        self.counts[kind] += 1
        if kind not in self.examples:
            self.examples[kind] = reason

    def merge(self, other: RejectTally) -> None:
        self.counts.update(other.counts)
        for kind, example in other.examples.items():
            self.examples.setdefault(kind, example)

    def top(self) -> tuple[str, int] | None:
        """The most frequent reason (an example of it) and how many records had it."""
        if not self.counts:
            return None
        kind, n = self.counts.most_common(1)[0]
        return self.examples[kind], n

    def check(self, seen: int, max_ratio: float | None) -> None:
        """Stop the run when more than ``max_ratio`` of ``seen`` records failed alike: the
        rest would fail the same way, and the dead letter would grow as large as the input."""
        top = self.top()
        if max_ratio is None or top is None or seen < REJECT_SAMPLE_MIN:
            return
        example, n = top
        if n / seen > max_ratio:
            raise RejectedRecordsError(
                f"stopped after {seen:,} records: {n:,} of them failed with the same reason "
                f"(more than max_failed_ratio {max_ratio}): {example}{reject_hint(example)}"
            )


def reject_hint(reason: str) -> str:
    """``; <the setting to fix>`` for a reason every record of a misconfigured run shares."""
    if reason.startswith("missing or empty id field"):
        return "; set the id field (--id_column) to the field holding each record's key"
    if reason.startswith("timestamp field"):
        return (
            "; set the time field (--timestamp_column / --es_timestamp_field) to the right "
            "field, or to none for a full run"
        )
    return ""


@dataclass
class Outcome:
    """What one run of frames (or the whole staged file) produced."""

    staged: StagedRecords
    rejected: int = 0
    analysis_ok: int = 0
    analysis_failed: int = 0
    #: Named columns (``select``/``casts``/``rename``) that never showed up in a row.
    unseen: dict[str, str] = field(default_factory=dict)
    #: The dead-letter part a worker wrote (joined into the step's file by the caller).
    dead_letter_part: str | None = None
    rejects: RejectTally = field(default_factory=RejectTally)


class BatchMapper:
    """Maps batches: rows out, rejects into ``dead``, analyzer outcomes counted."""

    def __init__(
        self,
        mapping: FieldMapping,
        analyzer: Analyzer | None,
        dead: DeadLetterWriter,
        rejects: RejectTally | None = None,
    ) -> None:
        self.mapping = mapping
        self.analyzer = analyzer
        self.dead = dead
        self.analysis_ok = 0
        self.analysis_failed = 0
        self.unseen = mapping.named_columns()  # emptied as the named columns show up
        self.rejects = rejects if rejects is not None else RejectTally()

    def map(self, frame: Frame) -> Frame:
        """The rows of ``frame``: as columns when mapped column by column (the common
        batch, see :meth:`FieldMapping.apply_columns`), else as records."""
        analyzer = self.analyzer
        if analyzer is None:
            columns = self.mapping.apply_columns(frame)
            if columns is not None:
                _mark_seen(self.unseen, [columns])
                return columns
        apply = self.mapping.apply
        rows: list[Record] = []
        for raw in as_rows(frame):
            try:
                row = apply(raw)
            except RecordRejected as exc:
                reason = str(exc)
                self.dead.write(raw, reason)
                self.rejects.add(reason)
                continue
            if analyzer is not None:
                try:
                    extra = analyzer(row)
                    if extra:
                        for key, value in as_json_values(extra).items():
                            row.setdefault(column_name(key), value)
                    self.analysis_ok += 1
                except Exception:  # a user callable: count and go on
                    self.analysis_failed += 1
            rows.append(row)
        _mark_seen(self.unseen, rows)
        return rows


def new_staged_file(mapping: FieldMapping) -> StagedFileWriter:
    return StagedFileWriter(
        mapping.id_name,
        mapping.ts_name,
        track_schema=True,
        declared=mapping.declared_types,
    )


def worker_count(setting: int, rows: int) -> int:
    """Processes to use: ``setting`` (0 = one per core, at most 4), 1 for small stages
    or where this process may not have children (see :func:`may_spawn`)."""
    if rows < PARALLEL_MIN_ROWS or not may_spawn():
        return 1
    return process_count(setting)


def frame_runs(staged: StagedRecords, workers: int) -> list[tuple[int, int | None]]:
    """Byte ranges ``[start, stop)`` of consecutive frames, about ``workers * 4`` of them."""
    offsets = staged.frame_offsets()
    if not offsets:
        return []
    per_run = max(1, -(-len(offsets) // (workers * _RUNS_PER_WORKER)))
    starts = offsets[::per_run]
    return [(s, e) for s, e in zip(starts, [*starts[1:], None], strict=True)]


def _map_run(
    staged: StagedRecords,
    mapping: FieldMapping,
    analyzer: str | None,
    scratch: str,
    run: tuple[int, int | None],
) -> Outcome:
    """Worker side: map one run of frames into a part file and a part dead letter."""
    os.environ["ES_MYSQL_PIPELINE_SCRATCH"] = scratch
    start, stop = run
    parts = os.path.join(scratch, "transform-parts")
    dead = DeadLetterWriter(parts, "transform", f"part-{os.getpid()}-{start}")
    mapper = BatchMapper(mapping, load_analyzer(analyzer) if analyzer else None, dead)
    with dead, new_staged_file(mapping) as out:
        for frame in staged.raw_frames(start, stop):
            out.write(mapper.map(frame))
        part = out.finish()
        dead_path = dead.close()
    return Outcome(
        part,
        dead.count,
        mapper.analysis_ok,
        mapper.analysis_failed,
        mapper.unseen,
        dead_path,
        mapper.rejects,
    )


def map_parallel(
    staged: StagedRecords,
    mapping: FieldMapping,
    analyzer: str | None,
    workers: int,
    out: StagedFileWriter,
    dead: DeadLetterWriter,
    after_run: Callable[[int, int], None],
    rejects: RejectTally | None = None,
) -> tuple[int, int, dict[str, str]]:
    """Map ``staged`` in ``workers`` processes into ``out`` and ``dead``, in order.

    ``after_run(rows_done, rejected)`` is called as each run is joined (``rejects`` then
    holds the reasons so far); it may raise (a stop request, too many alike rejects) to
    cancel the rest. Returns the analyzer's (ok, failed) counts and the named columns that
    never appeared.
    """
    runs = frame_runs(staged, workers)
    map_run = functools.partial(_map_run, staged, mapping, analyzer, scratch_dir())
    ok = failed = 0
    unseen = mapping.named_columns()
    done = 0
    with (
        spawn_pool(workers) as pool,
        contextlib.closing(
            ordered_map(pool, map_run, runs, len(runs), discard=_discard)
        ) as results,
    ):
        for result in results:
            try:
                out.append(result.staged)
                if result.dead_letter_part:
                    dead.append_file(result.dead_letter_part, result.rejected)
            except BaseException:
                _discard(result)
                raise
            ok += result.analysis_ok
            failed += result.analysis_failed
            if rejects is not None:
                rejects.merge(result.rejects)
            unseen = {k: v for k, v in unseen.items() if k in result.unseen}
            done += result.staged.rows + result.rejected
            after_run(done, result.rejected)
    return ok, failed, unseen


def _discard(outcome: Outcome) -> None:
    discard_files(outcome.staged.path, outcome.dead_letter_part)


def _mark_seen(unseen: dict[str, str], rows: Sequence[Mapping[str, object]]) -> None:
    """Drop from ``unseen`` the columns present in ``rows`` (stops at once when all seen)."""
    for row in rows:
        if not unseen:
            return
        for name in [n for n in unseen if n in row]:
            del unseen[name]
