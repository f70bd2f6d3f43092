"""Every matching document exactly once, through a point in time + ``search_after``; its
slices read by worker processes, or one slice in this process.

A point in time (PIT) freezes the index for the read, and paging with ``search_after`` on
``_shard_doc`` is a full, stable scan that can resume from the last page's sort values. That
is what makes retries exact: a failed page is asked for again with the same sort values, so
nothing is read twice or skipped (Logstash's scroll-based input re-reads on retry).

Two paths. One slice (one shard, or a read in one process) is read in this process, the
next page asked for while this one is worked on (:func:`one_slice`). Several slices are
read units of :mod:`es_mysql_pipeline.readers.engine`: a worker reads up to
:data:`RECORDS_PER_JOB` records of a slice from where it stands (a :class:`SliceCursor`),
stages them, and hands the slice back for its next pages; retries, PIT expiry and shard
failures are handled there exactly as in one process.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from elasticsearch import Elasticsearch

from es_mysql_pipeline.errors import SourceError
from es_mysql_pipeline.metrics.recorder import get_recorder
from es_mysql_pipeline.readers.elasticsearch import UNUSED_HTTP_STACKS
from es_mysql_pipeline.readers.elasticsearch.connection import Connection
from es_mysql_pipeline.readers.elasticsearch.errors import (
    ContextMissing,
    ErrorPolicy,
    Retry,
    Transient,
)
from es_mysql_pipeline.readers.elasticsearch.paging import PageSettings, Paging
from es_mysql_pipeline.readers.engine import Unit, read_units, staged_here
from es_mysql_pipeline.records import Frame, rebatch
from es_mysql_pipeline.staging import StagedPart

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Records one job reads before handing its part back: enough that a job's start costs
#: nothing beside it, few enough for steady progress and a prompt stop.
RECORDS_PER_JOB = 100_000


@contextlib.contextmanager
def point_in_time(paging: Paging) -> Iterator[tuple[list[SliceCursor], threading.Event]]:
    """A point in time on the index and a cursor per slice (``paging.slices``, capped at the
    primary shard count). Leaving stops the read (a retry waiting gives up) and closes the
    PITs the cursors hold: the first (its newest id) and each one reopened after an expiry.
    """
    stop = threading.Event()
    pit_id, shards = open_pit(paging, paging.policy.retry(stop))
    n = paging.slices
    if shards and n > shards:
        log.info(
            "slices=%d capped at the %d primary shard(s) of %s", n, shards, paging.settings.index
        )
        n = shards
    cursors = [SliceCursor(i, n, pit_id) for i in range(n)]
    try:
        yield cursors, stop
    finally:
        stop.set()
        first = [c.pit_id for c in cursors if c.generation == 0][-1:]
        for pit in dict.fromkeys([*first, *(c.pit_id for c in cursors if c.generation)]):
            try:
                paging.client.close_point_in_time(id=pit)
            except Exception as exc:  # expired already, or the cluster went away: it times out
                log.info(
                    "closing the point in time failed (%s); it expires on its own",
                    type(exc).__name__,
                )


def open_pit(paging: Paging, retry: Retry) -> tuple[str, int]:
    resp = paging.policy.call(
        "open point in time",
        retry,
        lambda: paging.client.open_point_in_time(
            index=paging.settings.index, keep_alive=paging.settings.keep_alive
        ),
    )
    return str(resp["id"]), int(((resp.get("_shards") or {}).get("total")) or 0)


def one_slice(
    paging: Paging,
    cursor: SliceCursor,
    stop: threading.Event,
    page: Callable[[list[dict[str, Any]]], T],
) -> Generator[T, None, None]:
    """The slice read in this process, each page as ``page`` makes it (records or a frame),
    the next one asked for in a thread while the caller works on this one: its request
    waits on the server (without the GIL) while the page before is staged. Leaving sets
    ``stop`` (a retry waiting gives up) and waits for the request in flight."""
    items = map(page, cursor.pages(paging, paging.query(), stop))
    with ThreadPoolExecutor(1, thread_name_prefix="es-page") as ahead:
        try:
            upcoming = ahead.submit(next, items, _END)
            while (item := upcoming.result()) is not _END:
                upcoming = ahead.submit(next, items, _END)
                yield item
        finally:
            stop.set()


_END: Any = object()


@dataclass
class SliceCursor:
    """Where the read of one slice stands: it can stop after any page and go on from there,
    in this process or another (the PIT id and the last page's sort values are all it needs).
    """

    slice_id: int
    nslices: int
    pit_id: str
    generation: int = 0
    #: the last page's sort values; ``None`` before the first page
    search_after: list[Any] | None = None
    done: bool = False
    expiries: int = 0

    def pages(
        self,
        paging: Paging,
        query: dict[str, Any],
        stop: threading.Event,
        max_pages: int | None = None,
        ids: bool = False,
    ) -> Iterator[list[dict[str, Any]]]:
        """The slice's next pages (at most ``max_pages``), each as its search hits. With
        ``ids``, hits without their source, and a failed shard or an expired point in time
        fails the read instead of being retried: deletes act on a complete read only."""
        policy = paging.policy
        retry = policy.retry(stop)
        base = paging.search_body(query)
        base["sort"] = [{"_shard_doc": "asc"}]
        if ids:
            base["_source"] = False
        if self.nslices > 1:
            base["slice"] = {"id": self.slice_id, "max": self.nslices}
        pages = 0
        while not self.done and not stop.is_set():
            if max_pages is not None and pages >= max_pages:
                return
            body = {**base, "pit": {"id": self.pit_id, "keep_alive": paging.settings.keep_alive}}
            if self.search_after is not None:
                body["search_after"] = self.search_after
            failures = retry.failures  # a page with failed shards is no success: see below
            try:
                resp = policy.call(
                    "search ids" if ids else "search",
                    retry,
                    functools.partial(
                        paging.client.search, body=body, allow_partial_search_results=False
                    ),
                )
            except ContextMissing:
                if ids:
                    raise
                self._reopen(paging, stop)
                continue
            self.pit_id = str(resp.get("pit_id") or self.pit_id)  # the newest id for the next
            shards = resp.get("_shards") or {}
            if shards.get("failed"):
                retry.failures = failures  # so a shard that keeps failing runs out of retries
                _shard_failure(shards, retry, ids)
                continue
            hits = resp["hits"]["hits"]
            if not hits:
                self.done = True
                return
            pages += 1
            self.search_after = hits[-1]["sort"]
            self.done = len(hits) < paging.settings.page_size
            # The rest of the parsed response goes before the page is staged, not when the
            # next one has arrived: otherwise two pages are alive at the peak. Nor does this
            # frame keep the page while the consumer works: once taken into columns it is
            # freed, so each value has one reference and marshal stages it without tracking
            # it for back-references, which is several times faster (docs/benchmarks.md).
            del resp, shards
            handed: list[list[dict[str, Any]]] = [hits]
            del hits
            yield handed.pop()

    def _reopen(self, paging: Paging, stop: threading.Event) -> None:
        """The point in time expired: a new one, the read resumed from the same sort values."""
        self.expiries += 1
        if self.expiries > paging.policy.max_retries:
            raise SourceError(
                f"Elasticsearch point in time keeps expiring on {paging.policy.target}; "
                f"raise keep_alive (now {paging.settings.keep_alive})"
            ) from None
        log.warning("Elasticsearch point in time expired; reopening and resuming")
        get_recorder().retry("fetch")
        self.pit_id, _ = open_pit(paging, paging.policy.retry(stop))
        self.generation += 1


def _shard_failure(shards: dict[str, Any], retry: Retry, ids: bool) -> None:
    """A page with failed shards is incomplete: ask for it again rather than skip data."""
    if ids:
        raise SourceError(
            f"{retry.policy.target}: shards failed while reading ids; nothing was deleted"
        )
    failures = shards.get("failures") or [{}]
    reason = str((failures[0].get("reason") or {}).get("type", ""))
    retry.wait_or_raise(
        Transient(f"{shards.get('failed')} shard(s) failed {reason}".strip()), "search"
    )


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
        client = _clients.get(read.connection)
        if client is None:  # one per worker process and cluster: the next job reuses it
            client = _clients[read.connection] = read.connection.client(warn=False)
        paging = Paging(read.settings, client, read.policy, self.cursor.nslices, lambda: query)
        hits = self.cursor.pages(paging, query, threading.Event(), read.pages_per_job)
        return rebatch(map(paging.frame, hits), read.batch_size)

    def follow(self) -> SliceUnit | None:
        return None if self.cursor.done else self


_clients: dict[Connection, Elasticsearch] = {}


def pit_parts(
    paging: Paging,
    cursors: list[SliceCursor],
    stop: threading.Event,
    read: SliceRead,
    workers: int,
    timestamp_key: str | None,
) -> Generator[StagedPart, None, None]:
    """The slices of a point in time (:func:`point_in_time`) read in ``workers`` processes,
    parts as they finish; one slice (one shard) is read in this process, by
    :func:`one_slice` as a read in one process is: a process for one slice would only cost
    its start. The cursors are updated as slices come back: the PITs to close are theirs."""
    if len(cursors) < 2:
        with contextlib.closing(one_slice(paging, cursors[0], stop, paging.frame)) as frames:
            batches = rebatch(frames, read.batch_size)
            yield from staged_here(batches, timestamp_key, RECORDS_PER_JOB)
        return
    query = paging.query()
    units = [SliceUnit(read, query, cursor) for cursor in cursors]
    yield from read_units(
        units,
        timestamp_key,
        min(workers, len(units)),
        len(units),
        follow=SliceUnit.follow,
        unused=UNUSED_HTTP_STACKS,
        seen=lambda unit: cursors.__setitem__(unit.cursor.slice_id, unit.cursor),
    )
