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

Each span is a read unit of :mod:`es_mysql_pipeline.readers.engine`, which runs the workers.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from itertools import chain

from es_mysql_pipeline.readers.engine import read_units
from es_mysql_pipeline.readers.file_reading import Span, SpanReader, TextFile
from es_mysql_pipeline.records import TimeWindow
from es_mysql_pipeline.staging import StagedPart
from es_mysql_pipeline.worker_processes import may_spawn, process_count

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
    parts = workers * _PARTS_PER_WORKER
    spans = plan_spans(file, size, parts, header)
    units = (SpanReader(file, batch_size, window, ts_key, span) for span in spans)
    return read_units(units, ts_key, workers, parts)


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
