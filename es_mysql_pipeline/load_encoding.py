"""Encoding staged records into a sink's load files in a worker process, ahead of the writers.

Turning records into a LOAD DATA file is pure Python; done by the load threads it holds the
GIL while the server waits for the next file. A spawned process encodes a few frames
ahead instead (a bounded number of files on disk), so the server and the encoding each
have a core; under the CLI the run's shared workers do, a frame each. Plain Python, no
Dagster: the worker imports only this module and the sink's file format.
"""

from __future__ import annotations

import contextlib
import itertools
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from es_mysql_pipeline.records import (
    Batch,
    Frame,
    column_values,
    frame_length,
    parse_timestamp,
)
from es_mysql_pipeline.staging import StagedRecords
from es_mysql_pipeline.worker_processes import discard_files, may_spawn, ordered_map, spawn_pool

#: Below this many rows the load encodes in its own threads: a process costs more.
ENCODE_AHEAD_MIN_ROWS = 50_000
#: Jobs encoded ahead of the writers (each a file or a few; see :func:`encoded_chunks`).
_AHEAD = 4
#: Files a load is cut into at least, however big the encoder would like them: its writers
#: share the files, and its progress (and what a kill leaves to redo) moves file by file.
_MIN_FILES = 16


def encode_ahead(rows: int) -> bool:
    """Whether a load of ``rows`` rows is worth a worker process (and may have one)."""
    return rows >= ENCODE_AHEAD_MIN_ROWS and may_spawn()


@dataclass(frozen=True)
class EncodedChunk:
    """One file, and where its records are in the staged file (to read them back when the
    sink refuses the file)."""

    #: ``None``: the encoder could not write these records; the writer's own path takes them.
    path: str | None
    rows: int
    #: Byte range of the job's frames, and how many of their records come before the file's.
    start: int
    stop: int | None
    offset: int
    #: Epoch seconds of the newest record (0.0 when none has a readable time).
    newest: float | None

    def records(self, staged: StagedRecords) -> Batch:
        every = (r for f in staged.frames(self.start, self.stop) for r in f)
        return list(itertools.islice(every, self.offset, self.offset + self.rows))

    def discard(self) -> None:
        discard_files(self.path)


@dataclass(frozen=True)
class _Job:
    staged: StagedRecords
    start: int
    stop: int | None
    encoder: Any
    batch_size: int
    #: records a file holds at least (but the job's last)
    file_rows: int
    ts_column: str | None


def _encode_frames(job: _Job) -> list[EncodedChunk]:
    """Worker side: the job's frames as files of at least ``file_rows`` records, the last one
    maybe fewer. Each file is written a batch at a time: one file's text is never held whole,
    so a worker's memory stays a batch's however big the file."""
    out: list[EncodedChunk] = []
    offset = 0
    frames = job.staged.raw_frames(job.start, job.stop)
    parts = (part for frame in frames for part in _slices(frame, job.batch_size))
    try:
        first = next(parts, None)
        while first is not None:
            file = _FileParts(itertools.chain([first], parts), job.file_rows, job.ts_column)
            try:
                path: str | None = job.encoder.encode(file)
            except (ValueError, TypeError, UnicodeError):
                path = None  # the writer's INSERT path reports these records itself
                for _ in file:  # the rest of the file's records: theirs too
                    pass
            out.append(EncodedChunk(path, file.rows, job.start, job.stop, offset, file.newest))
            offset += file.rows
            first = next(parts, None)
    except BaseException:
        for chunk in out:
            chunk.discard()
        raise
    return out


class _FileParts:
    """The batches of one file, taken from ``parts`` as the encoder writes them until the
    file holds ``size`` records; counted (and their newest time found) on the way."""

    def __init__(self, parts: Iterator[Frame], size: int, ts_column: str | None) -> None:
        self._parts = parts
        self._size = size
        self._ts_column = ts_column
        self.rows = 0
        self.newest: float | None = None

    def __iter__(self) -> Iterator[Frame]:
        while self.rows < self._size:
            part = next(self._parts, None)
            if part is None:
                return
            self.rows += frame_length(part)
            if self._ts_column is not None:
                newest = newest_timestamp(part, self._ts_column)
                self.newest = newest if self.newest is None else max(self.newest, newest)
            yield part


def encoded_chunks(
    staged: StagedRecords, encoder: Any, batch_size: int, ts_column: str | None
) -> Iterator[EncodedChunk]:
    """The staged file as encoded files, in order, encoded a few jobs ahead. A file holds
    ``batch_size`` records or, if more, the encoder's ``min_rows`` (but the load is cut in
    :data:`_MIN_FILES` files at least); a job is as many frames as make a file.

    The caller owns (and deletes) each chunk it receives; files encoded but not yet
    received are deleted when the iterator is closed early."""
    offsets = staged.frame_offsets()
    file_rows = max(batch_size, min(encoder.min_rows, staged.rows // _MIN_FILES))
    per_job = max(1, round(file_rows * len(offsets) / max(staged.rows, 1)))
    starts = offsets[::per_job]
    jobs = (
        _Job(staged, start, stop, encoder, batch_size, file_rows, ts_column)
        for start, stop in zip(starts, [*starts[1:], None], strict=True)
    )
    with (
        spawn_pool(1) as pool,
        contextlib.closing(
            ordered_map(pool, _encode_frames, jobs, _AHEAD, discard=_discard)
        ) as encoded,
    ):
        for chunks in encoded:
            unsent = deque(chunks)
            try:
                while unsent:
                    yield unsent.popleft()
            finally:
                _discard(unsent)


def _discard(chunks: Iterable[EncodedChunk]) -> None:
    for chunk in chunks:
        chunk.discard()


def _slices(frame: Frame, size: int) -> Iterator[Frame]:
    """``frame`` in pieces of at most ``size`` records."""
    n = frame_length(frame)
    if n <= size:
        yield frame
        return
    for at in range(0, n, size):
        if isinstance(frame, dict):
            yield {name: values[at : at + size] for name, values in frame.items()}
        else:
            yield frame[at : at + size]


def newest_timestamp(frame: Frame, ts_column: str) -> float:
    """Epoch seconds of the newest row (staged timestamps are UTC ISO strings, so max works)."""
    values: Sequence[Any] = column_values(frame, ts_column)
    try:
        newest = max(values)
    except TypeError:  # not all text: keep the strings
        newest = max((v for v in values if isinstance(v, str)), default=None)
    except ValueError:
        return 0.0
    try:
        return parse_timestamp(newest).timestamp() if isinstance(newest, str) else 0.0
    except ValueError:
        return 0.0
