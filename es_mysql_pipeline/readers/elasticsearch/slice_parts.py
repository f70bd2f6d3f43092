"""A point-in-time read: its slices read by worker processes, or one slice in this process.

Each slice is a read unit of :mod:`es_mysql_pipeline.readers.engine`: a worker reads up to
:data:`RECORDS_PER_JOB` records of it from where the slice stands (the PIT id and the last
page's sort values, a :class:`~.pit.SliceCursor`), stages them, and hands the slice back for
its next pages. Retries, PIT expiry and shard failures are handled in the worker exactly as
in one process (the same cursor). An index of one shard is read as one slice here, the next
page asked for while this one is staged.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any

from elasticsearch import Elasticsearch

from es_mysql_pipeline.readers.elasticsearch import UNUSED_HTTP_STACKS
from es_mysql_pipeline.readers.elasticsearch.connection import Connection
from es_mysql_pipeline.readers.elasticsearch.errors import ErrorPolicy
from es_mysql_pipeline.readers.elasticsearch.paging import PageSettings, Paging
from es_mysql_pipeline.readers.elasticsearch.pit import SliceCursor, point_in_time, prefetched
from es_mysql_pipeline.readers.engine import Unit, read_units, staged_here
from es_mysql_pipeline.records import Frame, rebatch
from es_mysql_pipeline.staging import StagedPart

#: Records one job reads before handing its part back: enough that a job's start costs
#: nothing beside it, few enough for steady progress and a prompt stop.
RECORDS_PER_JOB = 100_000


@dataclass(frozen=True)
class SliceRead:
    """Everything a worker needs to read pages of a slice: plain, picklable values."""

    connection: Connection
    policy: ErrorPolicy
    settings: PageSettings
    batch_size: int
    #: pages a job reads before handing its part back
    pages_per_job: int


@dataclass
class SliceUnit(Unit):
    read: SliceRead
    query: dict[str, Any]
    cursor: SliceCursor

    def batches(self) -> Iterator[Frame]:
        read, query = self.read, self.query
        client = _client(read.connection)
        paging = Paging.of(read.settings, client, read.policy, self.cursor.nslices, lambda: query)
        hits = self.cursor.pages(paging, query, threading.Event(), read.pages_per_job)
        return rebatch(map(paging.frame, hits), read.batch_size)

    def follow(self) -> SliceUnit | None:
        return None if self.cursor.done else self


def pit_parts(
    paging: Paging, read: SliceRead, workers: int, timestamp_key: str | None
) -> Generator[StagedPart, None, None]:
    """The index read through a point in time, its slices in ``workers`` processes, parts
    as they finish; in this process where there is one slice (one shard). The cursors are
    updated as slices come back: the PITs to close are theirs."""
    with point_in_time(paging) as (cursors, stop):
        query = paging.query()
        if len(cursors) < 2:
            frames = prefetched(map(paging.frame, cursors[0].pages(paging, query, stop)), stop)
            with contextlib.closing(frames):
                batches = rebatch(frames, read.batch_size)
                yield from staged_here(batches, timestamp_key, RECORDS_PER_JOB)
            return
        units = [SliceUnit(read, query, cursor) for cursor in cursors]
        yield from read_units(
            units,
            timestamp_key,
            min(workers, len(units)),
            len(units),
            goes_on=True,
            unused=UNUSED_HTTP_STACKS,
            seen=lambda unit: cursors.__setitem__(unit.cursor.slice_id, unit.cursor),
        )


_clients: dict[Connection, Elasticsearch] = {}


def _client(connection: Connection) -> Elasticsearch:
    """One client per worker process and cluster, so the next job reuses its connections."""
    client = _clients.get(connection)
    if client is None:
        client = _clients[connection] = connection.client(warn=False)
    return client
