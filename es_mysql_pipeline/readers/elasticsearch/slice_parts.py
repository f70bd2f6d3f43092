"""A sliced point-in-time read spread over worker processes, each staging what it reads.

Parsing the responses and staging the records is pure Python, one core per process: one
process is bound to one core however many slices the cluster serves. So each slice is read
by a worker process, a few pages at a time: a job reads up to :data:`RECORDS_PER_JOB`
records of one slice from where the slice stands (the PIT id and the last page's sort
values, a :class:`~.pit.SliceCursor`), stages them, and returns the part and the cursor; the
next job of that slice goes on from there. Parts come back as jobs finish, so the step shows
progress and a stop waits for one job at most.

Retries, PIT expiry and shard failures are handled in the worker exactly as in one process
(the same :class:`~.pit.SliceCursor`); its metrics (request durations, retries) travel back
with the part. Workers come from :mod:`es_mysql_pipeline.worker_processes` and import
nothing of Dagster.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from elasticsearch import Elasticsearch

from es_mysql_pipeline.metrics.recorder import NullRecorder, get_recorder, set_recorder
from es_mysql_pipeline.readers.elasticsearch import UNUSED_HTTP_STACKS
from es_mysql_pipeline.readers.elasticsearch.connection import Connection
from es_mysql_pipeline.readers.elasticsearch.errors import ErrorPolicy
from es_mysql_pipeline.readers.elasticsearch.paging import PageSettings, Paging
from es_mysql_pipeline.readers.elasticsearch.pit import (
    SliceCursor,
    close_pits,
    open_pit,
    prefetched,
)
from es_mysql_pipeline.records import Frame, frame_length, rebatch
from es_mysql_pipeline.staging import StagedFileWriter, StagedPart
from es_mysql_pipeline.worker_processes import discard_files, ordered_map, spawn_pool

log = logging.getLogger(__name__)

#: Records one job reads before handing its part back: enough that a job's start costs
#: nothing beside it, few enough for steady progress and a prompt stop.
RECORDS_PER_JOB = 100_000


@dataclass(frozen=True)
class SliceRead:
    """Everything a worker needs to read pages of a slice: plain, picklable values."""

    connection: Connection
    policy: ErrorPolicy
    settings: PageSettings
    query: dict[str, Any]
    batch_size: int
    timestamp_key: str | None
    scratch: str
    #: pages a job reads before handing its part back
    pages_per_job: int

    def paging(self, client: Elasticsearch, slices: int) -> Paging:
        return Paging.of(self.settings, client, self.policy, slices, lambda: self.query)


@dataclass(frozen=True)
class _Job:
    read: SliceRead
    cursor: SliceCursor


@dataclass(frozen=True)
class _Done:
    part: StagedPart
    #: where the slice stands after this job
    cursor: SliceCursor
    retries: int


def slice_parts(
    read: SliceRead, cursors: list[SliceCursor], workers: int
) -> Generator[StagedPart, None, None]:
    """Every slice read to its end by ``workers`` processes; parts in the order jobs finish.

    Closing the generator (a stop, a failure downstream) cancels the jobs not started, waits
    for those running and deletes their parts. The cursors are updated as jobs finish: their
    ``pit_id``\\ s are the ones to close when the read is over."""
    by_slice = {c.slice_id: i for i, c in enumerate(cursors)}

    def follow(done: _Done) -> _Job | None:
        cursors[by_slice[done.cursor.slice_id]] = done.cursor
        return None if done.cursor.done else _Job(read, done.cursor)

    jobs = [_Job(read, cursor) for cursor in cursors]
    with (
        spawn_pool(workers, unused=UNUSED_HTTP_STACKS) as pool,
        contextlib.closing(
            ordered_map(pool, read_job, jobs, len(jobs), discard=_discard, follow=follow)
        ) as done_jobs,
    ):
        for done in done_jobs:
            if done.retries:
                get_recorder().retry("fetch", done.retries)
            try:
                yield done.part
            except BaseException:  # a stop or a failure while the part is in the caller's hands
                _discard(done)
                raise


def read_job(job: _Job) -> _Done:
    """Worker side: read up to ``pages_per_job`` pages of one slice and stage them."""
    read = job.read
    os.environ["ES_MYSQL_PIPELINE_SCRATCH"] = read.scratch
    cursor = replace(job.cursor)
    collected = _Collected()
    previous = set_recorder(collected)
    try:
        paging = read.paging(_client(read.connection), cursor.nslices)
        hits = cursor.pages(paging, read.query, threading.Event(), read.pages_per_job)
        pages = map(paging.frame, hits)
        part = stage(rebatch(pages, read.batch_size), read.timestamp_key)
    finally:
        set_recorder(previous)
    return _Done(StagedPart(part.staged, collected.seconds), cursor, collected.retries)


def stage(batches: Iterable[Frame], timestamp_key: str | None) -> StagedPart:
    """``batches`` staged as one part (the step's writer holds the id key)."""
    with StagedFileWriter("", timestamp_key) as out:
        for batch in batches:
            out.write(batch)
        return StagedPart(out.finish())


def staged_in_parts(
    batches: Iterator[Frame], timestamp_key: str | None
) -> Generator[StagedPart, None, None]:
    """``batches`` staged in this process, a part every :data:`RECORDS_PER_JOB` records (a read
    that cannot be spread: one shard), so the step still shows progress."""
    while True:
        part = stage(_up_to(batches, RECORDS_PER_JOB), timestamp_key)
        if not part.staged.rows:
            os.unlink(part.staged.path)
            return
        yield part


def _up_to(batches: Iterator[Frame], rows: int) -> Iterator[Frame]:
    seen = 0
    while seen < rows:
        batch = next(batches, None)
        if batch is None:
            return
        seen += frame_length(batch)
        yield batch


_clients: dict[Connection, Elasticsearch] = {}


def _client(connection: Connection) -> Elasticsearch:
    """One client per worker process and cluster, so the next job reuses its connections."""
    client = _clients.get(connection)
    if client is None:
        client = _clients[connection] = connection.client(warn=False)
    return client


@dataclass
class _Collected(NullRecorder):
    """The fetch metrics of one job, to be recorded by the step's process."""

    seconds: list[float] = field(default_factory=list)
    retries: int = 0

    def duration(self, kind: Literal["fetch", "insert", "batch", "run"], seconds: float) -> None:
        if kind == "fetch":
            self.seconds.append(seconds)

    def retry(self, stage: Any, n: int = 1) -> None:
        self.retries += n


def _discard(done: _Done) -> None:
    discard_files(done.part.staged.path)


def pit_parts(
    paging: Paging,
    read_for: Callable[[dict[str, Any]], SliceRead],
    workers: int,
    batch_size: int,
    timestamp_key: str | None,
) -> Generator[StagedPart, None, None]:
    """The index read through a point in time, its slices in ``workers`` processes; in this
    process where there is one slice (one shard)."""
    stop = threading.Event()
    pit_id, n = open_pit(paging, stop)
    cursors = [SliceCursor(i, n, pit_id) for i in range(n)]
    try:
        query = paging.query()
        if n < 2:  # one shard: read here, the next page asked for while this one is staged
            pages = cursors[0].pages(paging, query, stop)
            frames = prefetched(map(paging.frame, pages), stop)
            with contextlib.closing(frames):
                yield from staged_in_parts(rebatch(frames, batch_size), timestamp_key)
        else:
            yield from slice_parts(read_for(query), cursors, min(workers, n))
    finally:
        stop.set()
        # The first PIT (its newest id), and each one a worker reopened after an expiry.
        first = [c.pit_id for c in cursors if c.generation == 0][-1:] or [pit_id]
        close_pits(paging, [*first, *(c.pit_id for c in cursors if c.generation)])
