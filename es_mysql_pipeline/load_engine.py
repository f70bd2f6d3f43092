"""The threaded load: staged records through a bounded queue to ``sink.workers`` writers.

Plain Python, no Dagster: the load asset and the tests call it directly. A big load into a
sink with a whole-file format (LOAD DATA) has its files encoded ahead in a worker process
(:mod:`es_mysql_pipeline.load_encoding`). Bad records go to the load dead letter; a
writer's error stops the others and is raised; a stop request (Ctrl+C) ends after the
batches in flight and publishes nothing.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from es_mysql_pipeline import lifecycle
from es_mysql_pipeline.dead_letter import DeadLetterWriter
from es_mysql_pipeline.load_encoding import (
    EncodedChunk,
    encode_ahead,
    encoded_chunks,
    newest_timestamp,
)
from es_mysql_pipeline.metrics.recorder import get_recorder
from es_mysql_pipeline.records import Batch
from es_mysql_pipeline.staging import StagedRecords
from es_mysql_pipeline.writers.base import (
    SchemaReport,
    Sink,
    SinkSession,
    SinkWriter,
    TableShape,
    WriteCounts,
)

_DONE = object()


@dataclass
class LoadOutcome:
    counts: WriteCounts
    elapsed: float
    dead_letter: str | None
    schema: SchemaReport


def load_staged(
    staged: StagedRecords, sink: Sink, shape: TableShape, label: str, dead_letter_dir: str
) -> LoadOutcome:
    """Stream ``staged`` into ``sink``; the counts, the dead letter and what the table became."""
    started = time.perf_counter()
    if staged.rows == 0:
        return LoadOutcome(WriteCounts(), 0.0, None, SchemaReport())
    dead = DeadLetterWriter(dead_letter_dir, "load", label)
    session = sink.open_session(shape, label)
    schema = session.schema_report()
    _count_schema(schema)
    load = _Load(staged, sink.workers, session, dead)
    encoder = session.encoder() if encode_ahead(staged.rows) else None
    ts_column = shape.timestamp_column
    items: Iterator[Batch | EncodedChunk] = (
        encoded_chunks(staged, encoder, sink.batch_size, ts_column)
        if encoder is not None
        else iter(staged.batches(sink.batch_size))
    )
    load.run(items, ts_column)
    if load.errors or lifecycle.stop_requested():
        session.abort()
        dead.discard()
        if load.errors:
            raise load.errors[0]
        lifecycle.raise_if_stopped("load")
    session.commit()
    dead_path = dead.close()
    ts = max(load.newest) if load.newest else None
    if ts:
        get_recorder().last_record_timestamp(ts)
    return LoadOutcome(load.totals, time.perf_counter() - started, dead_path, schema)


class _Load:
    """Writer threads fed through a bounded queue; the first error stops them all."""

    def __init__(
        self, staged: StagedRecords, workers: int, session: SinkSession, dead: DeadLetterWriter
    ) -> None:
        self.staged = staged
        self.workers = workers
        self.session = session
        self.dead = dead
        self.work: queue.Queue[Any] = queue.Queue(maxsize=max(2, workers * 2))
        self.lock = threading.Lock()
        self.errors: list[BaseException] = []
        self.newest: list[float] = []
        self.totals = WriteCounts()

    def run(self, items: Iterator[Batch | EncodedChunk], ts_column: str | None) -> None:
        metrics = get_recorder()
        threads = [
            threading.Thread(target=self.worker, name=f"load-worker-{i}", daemon=True)
            for i in range(self.workers)
        ]
        for t in threads:
            t.start()
        try:
            with contextlib.closing(items):  # type: ignore[type-var]
                for item in items:
                    if self.errors or lifecycle.stop_requested():
                        _discard(item)
                        break
                    if isinstance(item, EncodedChunk):
                        if item.newest is not None:
                            self.newest.append(item.newest)
                    elif ts_column is not None:
                        self.newest.append(newest_timestamp(item, ts_column))
                    self.work.put(item)
                    metrics.queue_depth(self.work.qsize())
        finally:
            for _ in threads:
                self.work.put(_DONE)
            for t in threads:
                t.join()
            metrics.queue_depth(0)

    def worker(self) -> None:
        metrics = get_recorder()
        metrics.worker_delta(+1)
        writer = self.session.writer()
        try:
            while True:
                item = self.work.get()
                if item is _DONE:
                    return
                if self.errors:
                    _discard(item)
                    continue  # drain so the reader never blocks
                t0 = time.perf_counter()
                try:
                    counts = self.write(writer, item)
                except BaseException as exc:
                    with self.lock:
                        self.errors.append(exc)
                    continue
                spent = time.perf_counter() - t0
                metrics.duration("insert", spent)
                metrics.duration("batch", spent)
                self.done(counts)
        finally:
            writer.close()
            metrics.worker_delta(-1)

    def write(self, writer: SinkWriter, item: Batch | EncodedChunk) -> WriteCounts:
        if not isinstance(item, EncodedChunk):
            return writer.write(item)
        try:
            records = partial(item.records, self.staged)
            if item.path is None:
                return writer.write(records())
            return writer.write_encoded(item.path, item.rows, records)
        finally:
            item.discard()

    def done(self, counts: WriteCounts) -> None:
        for record, reason in counts.failures:
            self.dead.write(record, reason)
        with self.lock:
            self.totals.add(counts)
            done = self.totals.processed
        _count(counts)
        lifecycle.progress("load", done, self.staged.rows)


def _discard(item: Any) -> None:
    if isinstance(item, EncodedChunk):
        item.discard()


def _count_schema(schema: SchemaReport) -> None:
    metrics = get_recorder()
    for change in ("added", "widened", "discarded", "renamed", "overflowed"):
        metrics.schema_change(change, len(getattr(schema, change)))


def _count(counts: WriteCounts) -> None:
    metrics = get_recorder()
    for outcome in ("inserted", "updated", "skipped", "failed"):
        n = getattr(counts, outcome)
        if n:
            metrics.records(outcome, n, "load")
    if counts.failed:
        metrics.dead_letter("load", counts.failed)
