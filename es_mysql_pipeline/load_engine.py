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
from es_mysql_pipeline.resources.sinks.base import (
    RecordSink,
    SchemaReport,
    SinkWriter,
    TableShape,
    WriteCounts,
)
from es_mysql_pipeline.staging import StagedRecords

_DONE = object()


@dataclass
class LoadOutcome:
    counts: WriteCounts
    elapsed: float
    dead_letter: str | None
    newest_timestamp: float | None
    schema: SchemaReport


def load_staged(
    staged: StagedRecords, sink: RecordSink, shape: TableShape, label: str, dead_letter_dir: str
) -> LoadOutcome:
    """Stream ``staged`` into ``sink``; the counts, the dead letter and what the table became."""
    metrics = get_recorder()
    started = time.perf_counter()
    totals = WriteCounts()
    if staged.rows == 0:
        return LoadOutcome(totals, 0.0, None, None, SchemaReport())
    dead = DeadLetterWriter(dead_letter_dir, "load", label)
    session = sink.open_session(shape, label)
    schema = session.schema_report()
    metrics.schema_change("added", len(schema.added))
    metrics.schema_change("widened", len(schema.widened))
    metrics.schema_change("discarded", len(schema.discarded))
    metrics.schema_change("renamed", len(schema.renamed))
    metrics.schema_change("overflowed", len(schema.overflowed))
    work: queue.Queue[Any] = queue.Queue(maxsize=max(2, sink.workers * 2))
    lock = threading.Lock()
    errors: list[BaseException] = []
    newest: list[float] = []

    encoder = session.encoder() if encode_ahead(staged.rows) else None

    def write(writer: SinkWriter, item: Batch | EncodedChunk) -> WriteCounts:
        if not isinstance(item, EncodedChunk):
            return writer.write(item)
        try:
            records = partial(item.records, staged)
            if item.path is None:
                return writer.write(records())
            return writer.write_encoded(item.path, item.rows, records)
        finally:
            item.discard()

    def worker() -> None:
        metrics.worker_delta(+1)
        writer = session.writer()
        try:
            while True:
                item = work.get()
                if item is _DONE:
                    return
                if errors:
                    if isinstance(item, EncodedChunk):
                        item.discard()
                    continue  # drain so the reader never blocks
                t0 = time.perf_counter()
                try:
                    counts = write(writer, item)
                except BaseException as exc:
                    with lock:
                        errors.append(exc)
                    continue
                spent = time.perf_counter() - t0
                metrics.duration("insert", spent)
                metrics.duration("batch", spent)
                for record, reason in counts.failures:
                    dead.write(record, reason)
                with lock:
                    totals.add(counts)
                    done = totals.processed
                _count(counts)
                lifecycle.progress("load", done, staged.rows)
        finally:
            writer.close()
            metrics.worker_delta(-1)

    threads = [
        threading.Thread(target=worker, name=f"load-worker-{i}", daemon=True)
        for i in range(sink.workers)
    ]
    for t in threads:
        t.start()
    ts_column = shape.timestamp_column
    items: Iterator[Batch | EncodedChunk] = (
        encoded_chunks(staged, encoder, sink.batch_size, ts_column)
        if encoder is not None
        else iter(staged.batches(sink.batch_size))
    )
    try:
        with contextlib.closing(items):  # type: ignore[type-var]
            for item in items:
                if errors or lifecycle.stop_requested():
                    if isinstance(item, EncodedChunk):
                        item.discard()
                    break
                if isinstance(item, EncodedChunk):
                    if item.newest is not None:
                        newest.append(item.newest)
                elif ts_column is not None:
                    newest.append(newest_timestamp(item, ts_column))
                work.put(item)
                metrics.queue_depth(work.qsize())
    finally:
        for _ in threads:
            work.put(_DONE)
        for t in threads:
            t.join()
        metrics.queue_depth(0)
    if errors or lifecycle.stop_requested():
        session.abort()
        dead.discard()
        if errors:
            raise errors[0]
        lifecycle.raise_if_stopped("load")
    session.commit()
    dead_path = dead.close()
    ts = max(newest) if newest else None
    if ts:
        metrics.last_record_timestamp(ts)
    return LoadOutcome(totals, time.perf_counter() - started, dead_path, ts, schema)


def _count(counts: WriteCounts) -> None:
    metrics = get_recorder()
    for outcome in ("inserted", "updated", "skipped", "failed"):
        n = getattr(counts, outcome)
        if n:
            metrics.records(outcome, n, "load")
    if counts.failed:
        metrics.dead_letter("load", counts.failed)
