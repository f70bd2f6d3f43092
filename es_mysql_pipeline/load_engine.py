"""The threaded load: staged records through a bounded queue to ``sink.workers`` writers.

Plain Python, no Dagster: the load asset and the tests call it directly. Bad records go to
the load dead letter; a writer's error stops the others and is raised; a stop request (Ctrl+C)
ends after the batches in flight and publishes nothing.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from itertools import repeat
from typing import Any

from es_mysql_pipeline import lifecycle
from es_mysql_pipeline.dead_letter import DeadLetterWriter
from es_mysql_pipeline.metrics.recorder import get_recorder
from es_mysql_pipeline.records import Batch, parse_timestamp
from es_mysql_pipeline.resources.sinks.base import (
    RecordSink,
    SchemaReport,
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
    work: queue.Queue[Any] = queue.Queue(maxsize=max(2, sink.workers * 2))
    lock = threading.Lock()
    errors: list[BaseException] = []
    newest: list[float] = []

    def worker() -> None:
        metrics.worker_delta(+1)
        writer = session.writer()
        try:
            while True:
                batch = work.get()
                if batch is _DONE:
                    return
                if errors:
                    continue  # drain so the reader never blocks
                t0 = time.perf_counter()
                try:
                    counts = writer.write(batch)
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
    try:
        for batch in staged.batches(sink.batch_size):
            if errors or lifecycle.stop_requested():
                break
            if shape.timestamp_column is not None:
                newest.append(_newest(batch, shape.timestamp_column))
            work.put(batch)
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


def _newest(batch: Batch, ts_column: str) -> float:
    """Epoch seconds of the newest row (staged timestamps are UTC ISO strings, so max works)."""
    values: list[Any] = list(map(dict.get, batch, repeat(ts_column)))
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
