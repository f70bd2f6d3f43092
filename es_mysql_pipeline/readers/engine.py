"""A source's read spread over worker processes: read units in, staged parts out.

Parsing records and staging them is pure Python, one core per process. So a source that can
spread its read cuts it into *read units*, plain picklable values (a byte span of a file,
:mod:`.file_reading`; pages of a point-in-time slice, :mod:`.elasticsearch.slice_parts`); a
worker process reads a unit and stages its records as one part, and the parts come back in
order, or as they finish where units go on (a slice read a few pages at a time), so the step
shows progress and a stop waits for one unit at most. A part's fetch metrics (durations,
retries) travel back with it. Closing the read (a stop, a failure downstream) cancels the
units not started and deletes the parts not handed over.

Workers come from :mod:`es_mysql_pipeline.worker_processes` and import nothing of Dagster.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from es_mysql_pipeline.metrics.recorder import NullRecorder, get_recorder, set_recorder
from es_mysql_pipeline.records import Frame
from es_mysql_pipeline.staging import StagedFileWriter, StagedPart, scratch_dir
from es_mysql_pipeline.worker_processes import discard_files, ordered_map, spawn_pool

T = TypeVar("T")


class Unit(ABC):
    """A piece of a source's read that a worker process can take: plain, picklable values."""

    @abstractmethod
    def batches(self) -> Iterator[Frame]:
        """The unit's records; reading may move the unit on (a slice's cursor)."""
        ...

    def rest(self) -> Unit | None:
        """After reading: ``None`` when what was read is the unit's records, else what to
        read instead, in this process, to the end. A unit may find out it read the wrong
        records (a file part whose end fell inside a quoted value): its part and the parts
        after it are then dropped."""
        return None


def read_units(
    units: Iterable[Unit],
    timestamp_key: str | None,
    workers: int,
    ahead: int,
    *,
    follow: Callable[[Any], Unit | None] | None = None,
    unused: Sequence[str] = (),
    seen: Callable[[Any], object] = lambda unit: None,
) -> Generator[StagedPart, None, None]:
    """``units`` read by ``workers`` processes, at most ``ahead`` submitted at a time, each
    staged as a part; parts in the units' order, or with ``follow`` as they finish (what
    ``follow`` makes of a unit after its read, its next unit or ``None``, submitted at
    once). ``seen`` gets each unit as it stands after its read."""
    read = functools.partial(_read, timestamp_key, scratch_dir())
    then = None if follow is None else functools.partial(_Done.follow, follow=follow)
    with (
        spawn_pool(workers, unused) as pool,
        contextlib.closing(
            ordered_map(pool, read, units, ahead, discard=_Done.discard, follow=then)
        ) as results,
    ):
        for done in results:
            seen(done.unit)
            rest = done.unit.rest()
            if rest is not None:
                done.discard()
                results.close()  # the parts after it are dropped
                done = read(rest)
            if done.retries:
                get_recorder().retry("fetch", done.retries)
            yield from _handed(done.part)


def staged_here(
    batches: Iterator[Frame], timestamp_key: str | None, rows: int
) -> Generator[StagedPart, None, None]:
    """``batches`` staged in this process, a part every ``rows`` records (a read that cannot
    be spread), so the step still shows progress."""
    while True:
        with StagedFileWriter("", timestamp_key) as out:
            while out.rows < rows and (batch := next(batches, None)) is not None:
                out.write(batch)
            staged = out.finish()
        if not staged.rows:
            discard_files(staged.path)
            return
        yield from _handed(StagedPart(staged))


def timed(batches: Iterator[T]) -> Generator[T, None, None]:
    """``batches``, each one's read time recorded as a fetch duration."""
    recorder = get_recorder()
    while True:
        started = time.perf_counter()
        batch = next(batches, None)
        if batch is None:
            return
        recorder.duration("fetch", time.perf_counter() - started)
        yield batch


@dataclass(frozen=True)
class _Done:
    part: StagedPart
    #: as it stands after the read
    unit: Unit
    retries: int

    def discard(self) -> None:
        discard_files(self.part.staged.path)

    def follow(self, follow: Callable[[Any], Unit | None]) -> Unit | None:
        return follow(self.unit)


def _read(timestamp_key: str | None, scratch: str, unit: Unit) -> _Done:
    """Worker side (this process's for :meth:`Unit.rest`): stage one unit, its metrics
    collected to travel back with the part."""
    os.environ["ES_MYSQL_PIPELINE_SCRATCH"] = scratch
    collected = _Collected()
    previous = set_recorder(collected)
    try:
        with StagedFileWriter("", timestamp_key) as out:
            for batch in unit.batches():
                out.write(batch)
            staged = out.finish()
    finally:
        set_recorder(previous)
    return _Done(StagedPart(staged, collected.seconds), unit, collected.retries)


def _handed(part: StagedPart) -> Generator[StagedPart, None, None]:
    try:
        yield part
    except BaseException:  # a stop or a failure while the part is in the caller's hands
        discard_files(part.staged.path)
        raise


@dataclass
class _Collected(NullRecorder):
    """The fetch metrics of one unit, to be recorded by the step's process."""

    seconds: list[float] = field(default_factory=list)
    retries: int = 0

    def duration(self, kind: Literal["fetch", "insert", "batch", "run"], seconds: float) -> None:
        self.seconds.append(seconds)  # a read records fetch times only

    def retry(self, stage: Any, n: int = 1) -> None:
        self.retries += n
