"""A big CSV or JSON Lines file read by worker processes, one part of the file each.

Parsing text into records is pure Python, one core per process. So a big file is cut, after
line breaks, into about four parts per worker; each worker stages its part, and the parts are
appended in order: the staged file holds the same records in the same order, with the same
dead-letter reasons and line numbers, as one process reading the whole file writes.

Where to cut: a JSON Lines record never spans lines, so after any line break. A CSV record
may (a quoted value holding newlines): the cut goes after a line break with an even number of
quote characters before it, which lies between two records in any well-formed file, and the
worker reading the part before the cut proves it (see
:attr:`~es_mysql_pipeline.readers.file_reading.Span.check_end`). Where the proof
fails (a stray quote inside an unquoted value), the parts from there on are thrown away and
the rest of the file is read in this process, from the last proven cut, as a serial read would.

Workers come from :mod:`es_mysql_pipeline.worker_processes` and import nothing of Dagster.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Generator, Iterable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from itertools import chain

from es_mysql_pipeline.readers.file_reading import Span, TextFile
from es_mysql_pipeline.records import TimeWindow
from es_mysql_pipeline.staging import StagedFileWriter, StagedPart, scratch_dir
from es_mysql_pipeline.worker_processes import (
    discard_files,
    may_spawn,
    ordered_map,
    process_count,
    spawn_pool,
)

#: Files smaller than this are read in the step's own process: starting workers costs more.
PARALLEL_MIN_BYTES = 16 << 20
#: Parts per worker: small enough for progress and a prompt stop, big enough that handing
#: a part over costs nothing next to reading it.
_PARTS_PER_WORKER = 4
_SCAN_BLOCK = 1 << 20


@dataclass(frozen=True)
class Cut:
    """A byte offset right after a line break, and the number of lines before it."""

    offset: int
    lines: int


def read_parts(
    file: TextFile,
    batch_size: int,
    window: TimeWindow | None,
    ts_key: str | None,
    processes: int,
) -> Generator[StagedPart, None, None] | None:
    """The file's records as staged parts, in order; ``None`` when one process should read
    it (a small file, one process asked for, an encoding that cannot be cut as bytes, or a
    process that may not have children)."""
    workers = process_count(processes)
    if workers < 2 or not may_spawn() or not file.splittable():
        return None
    size = os.path.getsize(file.path)
    if size < PARALLEL_MIN_BYTES:
        return None
    header = file.header() if file.kind == "csv" else None
    if file.kind == "csv" and header is None:
        return None
    return _staged_parts(file, size, batch_size, window, ts_key, workers, header)


def find_cuts(file: TextFile, size: int, parts: int) -> Iterator[Cut]:
    """Cuts near ``size * j / parts`` (j = 1 … parts - 1), in order; fewer where the file
    has no suitable line break after a target. One pass over the bytes up to the last cut."""
    targets = [size * j // parts for j in range(1, parts)]
    quoted = file.kind == "csv"
    pos = lines = quotes = 0
    after_cr = False  # the previous block ended with \r: a \n starting this one ends no line
    t = 0
    with open(file.path, "rb") as fh:
        while t < len(targets):
            block = fh.read(_SCAN_BLOCK)
            if not block:
                return
            end = pos + len(block)
            at = 0
            while t < len(targets) and targets[t] < end:
                i = block.find(b"\n", max(targets[t] - pos, at))
                if i < 0:
                    break
                at = i + 1
                if quoted and (quotes + block.count(b'"', 0, i)) % 2:
                    continue  # inside a quoted value
                cut = pos + i + 1
                if cut >= size:
                    return  # nothing after it to read
                yield Cut(cut, lines + _line_breaks(block, i + 1, after_cr))
                while t < len(targets) and targets[t] < cut:
                    t += 1
            quotes += block.count(b'"')
            lines += _line_breaks(block, len(block), after_cr)
            after_cr = block.endswith(b"\r")
            pos = end


def _line_breaks(block: bytes, n: int, after_cr: bool) -> int:
    """Lines ended in ``block[:n]`` as Python's text files end them (``\\n``, ``\\r``,
    ``\\r\\n``)."""
    breaks = block.count(b"\n", 0, n) + block.count(b"\r", 0, n) - block.count(b"\r\n", 0, n)
    return breaks - 1 if after_cr and block[:1] == b"\n" else breaks


@dataclass(frozen=True)
class _Job:
    file: TextFile
    span: Span
    batch_size: int
    window: TimeWindow | None
    ts_key: str | None
    scratch: str


@dataclass(frozen=True)
class _Done:
    #: ``None`` when the part's end proved not to be a record boundary.
    part: StagedPart | None
    job: _Job

    def discard(self) -> None:
        discard_files(self.part.staged.path if self.part is not None else None)


def _read_part(job: _Job) -> _Done:
    """Worker side (also the fallback in the step's process): stage one span."""
    os.environ["ES_MYSQL_PIPELINE_SCRATCH"] = job.scratch
    reader = job.file.reader(job.batch_size, job.window, job.ts_key, job.span)
    seconds: list[float] = []
    with StagedFileWriter("", job.ts_key) as out:
        batches = reader.frames()
        while True:
            started = time.perf_counter()
            batch = next(batches, None)
            if batch is None:
                break
            seconds.append(time.perf_counter() - started)
            out.write(batch)
        staged = out.finish()
    if not reader.end_ok:
        os.unlink(staged.path)
        return _Done(None, job)
    return _Done(StagedPart(staged, seconds), job)


def _staged_parts(
    file: TextFile,
    size: int,
    batch_size: int,
    window: TimeWindow | None,
    ts_key: str | None,
    workers: int,
    header: tuple[str, ...] | None,
) -> Generator[StagedPart, None, None]:
    scratch = scratch_dir()
    spans = plan_spans(file, size, workers * _PARTS_PER_WORKER, header)
    jobs = (_Job(file, span, batch_size, window, ts_key, scratch) for span in spans)
    with spawn_pool(workers) as pool:
        yield from join_in_order(jobs, pool, workers * _PARTS_PER_WORKER)


def plan_spans(
    file: TextFile, size: int, parts: int, header: tuple[str, ...] | None
) -> Iterator[Span]:
    """The spans between the cuts, each as soon as its end is found; all but the last have
    their end checked, all but the first start with the CSV header given."""
    start = Cut(0, 0)
    for cut in chain(find_cuts(file, size, parts), [None]):
        yield Span(
            start=start.offset,
            stop=cut.offset if cut else None,
            lines_before=start.lines,
            lines_at_stop=cut.lines if cut else 0,
            header=header if start.offset else None,
            check_end=cut is not None,
        )
        if cut is not None:
            start = cut


def join_in_order(
    jobs: Iterable[_Job], pool: Executor, ahead: int
) -> Generator[StagedPart, None, None]:
    """The jobs' parts in order, ``ahead`` jobs submitted at a time.

    A part whose end proves not to be a record boundary ends the parallel read: the parts
    after it are dropped and the rest of the file, from that part's start, is read here."""
    results = ordered_map(pool, _read_part, jobs, ahead, discard=_Done.discard)
    with contextlib.closing(results):
        for done in results:
            if done.part is None:
                results.close()  # the parts after it are dropped
                span = done.job.span
                rest = Span(span.start, None, span.lines_before, 0, span.header)
                done = _read_part(replace(done.job, span=rest))
                if done.part is None:
                    return
            try:
                yield done.part
            except BaseException:  # a stop or a failure while the part is in the caller's hands
                done.discard()
                raise
