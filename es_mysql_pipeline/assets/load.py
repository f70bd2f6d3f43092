"""Load: write clean rows to the sink with N workers, then reconcile the partition."""

# No `from __future__ import annotations` here: Dagster reads these signatures' types at
# definition time to inject config and resources.

import queue
import threading
import time
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import dagster as dg

from es_mysql_pipeline import lifecycle
from es_mysql_pipeline.assets.partitions import (
    WindowConfig,
    is_partitioned,
    run_label,
    run_window,
)
from es_mysql_pipeline.dead_letter import DeadLetterWriter
from es_mysql_pipeline.errors import PipelineError, step_failure
from es_mysql_pipeline.metrics.recorder import get_recorder
from es_mysql_pipeline.records import Batch, parse_timestamp
from es_mysql_pipeline.resources.settings import PipelineSettings
from es_mysql_pipeline.resources.sinks.base import (
    RecordSink,
    SchemaReport,
    TableShape,
    WriteCounts,
)
from es_mysql_pipeline.staging import StagedRecords

RECONCILE_CHECK = "rows_reconciled"
_DONE = object()


@dataclass
class LoadOutcome:
    counts: WriteCounts
    elapsed: float
    dead_letter: str | None
    newest_timestamp: float | None
    schema: SchemaReport


def load_records(
    context: dg.AssetExecutionContext,
    config: WindowConfig,
    clean_records: StagedRecords,
    sink: RecordSink,
    settings: PipelineSettings,
) -> dg.MaterializeResult:
    """Rows in the sink for the partition; counts of inserted, updated, skipped and failed."""
    label = run_label(context, config)
    shape = TableShape(settings.id_column, clean_records.timestamp_key, clean_records.columns)
    try:
        sink.check()
        outcome = write_stage(clean_records, sink, shape, label, settings.dead_letter_dir)
    except PipelineError as exc:
        get_recorder().error(type(exc).__name__, "load")
        raise step_failure(exc) from None
    counts = outcome.counts
    processed = clean_records.source_rows
    failed = counts.failed + clean_records.rejected
    metadata: dict[str, Any] = {
        "processed": processed,
        "inserted": counts.inserted,
        "updated": counts.updated,
        "skipped": counts.skipped,
        "failed": failed,
        "failed_in_load": counts.failed,
        "rejected_in_transform": clean_records.rejected,
        "retries": counts.retries,
        "duration_seconds": round(outcome.elapsed, 3),
        "rows_per_second": round(clean_records.rows / outcome.elapsed, 1)
        if outcome.elapsed > 0
        else 0.0,
        "dead_letter_path": dg.MetadataValue.path(outcome.dead_letter or "(none)"),
        "transform_dead_letter_path": dg.MetadataValue.path(clean_records.dead_letter or "(none)"),
        "sink": sink.describe()["type"],
        "sink_target": sink.describe()["target"],
        "write_mode": sink.write_mode,
        **_schema_metadata(outcome.schema, getattr(sink, "schema_contract", None)),
    }
    for change in outcome.schema.changes:
        context.log.info(f"schema change: {change}")
    if outcome.schema.discarded:
        context.log.warning(
            f"schema contract discard: fields not loaded: {', '.join(outcome.schema.discarded)}"
        )
    check_results = []
    if is_partitioned(context):
        window = run_window(context, config)
        in_sink = sink.count_rows(shape, window, label)
        metadata["dagster/row_count"] = in_sink
        expected_min = counts.inserted
        expected_max = clean_records.rows - counts.failed
        balanced = processed == counts.processed + clean_records.rejected
        passed = balanced and expected_min <= in_sink <= max(expected_max, expected_min)
        check_results.append(
            dg.AssetCheckResult(
                check_name=RECONCILE_CHECK,
                passed=passed,
                metadata={
                    "rows_in_sink": in_sink,
                    "clean_records": clean_records.rows,
                    "failed_in_load": counts.failed,
                    "processed": processed,
                    "accounted": counts.processed + clean_records.rejected,
                },
                description=None
                if passed
                else (
                    f"sink has {in_sink} rows for {label}; expected between {expected_min} and "
                    f"{expected_max}, processed={processed} accounted="
                    f"{counts.processed + clean_records.rejected}"
                ),
            )
        )
    context.log.info(
        f"loaded {label}: processed={processed} inserted={counts.inserted} "
        f"updated={counts.updated} skipped={counts.skipped} failed={failed}"
    )
    return dg.MaterializeResult(metadata=metadata, check_results=check_results)


def write_stage(
    stage: StagedRecords, sink: RecordSink, shape: TableShape, label: str, dead_letter_dir: str
) -> LoadOutcome:
    """Stream ``stage`` into ``sink`` through a bounded queue and ``sink.workers`` threads."""
    rec = get_recorder()
    started = time.perf_counter()
    totals = WriteCounts()
    if stage.rows == 0:
        return LoadOutcome(totals, 0.0, None, None, SchemaReport())
    dead = DeadLetterWriter(dead_letter_dir, "load", label)
    session = sink.open_session(shape, label)
    schema = session.schema_report()
    rec.schema_change("added", len(schema.added))
    rec.schema_change("widened", len(schema.widened))
    rec.schema_change("discarded", len(schema.discarded))
    work: queue.Queue[Any] = queue.Queue(maxsize=max(2, sink.workers * 2))
    lock = threading.Lock()
    errors: list[BaseException] = []
    newest: list[float] = []

    def worker() -> None:
        rec.worker_delta(+1)
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
                rec.duration("insert", spent)
                rec.duration("batch", spent)
                for record, reason in counts.failures:
                    dead.write(record, reason)
                with lock:
                    totals.add(counts)
                    done = totals.processed
                _record_counts(counts)
                lifecycle.progress("load", done, stage.rows)
        finally:
            writer.close()
            rec.worker_delta(-1)

    threads = [
        threading.Thread(target=worker, name=f"load-worker-{i}", daemon=True)
        for i in range(sink.workers)
    ]
    for t in threads:
        t.start()
    try:
        for batch in stage.batches(sink.batch_size):
            if errors or lifecycle.stop_requested():
                break
            if shape.timestamp_column is not None:
                newest.append(_newest(batch, shape.timestamp_column))
            work.put(batch)
            rec.queue_depth(work.qsize())
    finally:
        for _ in threads:
            work.put(_DONE)
        for t in threads:
            t.join()
        rec.queue_depth(0)
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
        rec.last_record_timestamp(ts)
    return LoadOutcome(totals, time.perf_counter() - started, dead_path, ts, schema)


def _schema_metadata(schema: SchemaReport, contract: str | None) -> dict[str, Any]:
    """The table's columns as Dagster's ``dagster/column_schema``, and what this load did."""
    metadata: dict[str, Any] = {
        "schema_changes": dg.MetadataValue.md(
            "\n".join(f"- `{c}`" for c in schema.changes) if schema.changes else "(none)"
        ),
        "columns_added": len(schema.added),
        "columns_widened": len(schema.widened),
        "fields_discarded": len(schema.discarded),
    }
    if contract is not None:
        metadata["schema_contract"] = contract
    if schema.discarded:
        metadata["discarded_fields"] = ", ".join(schema.discarded)
    if schema.columns:
        metadata["dagster/column_schema"] = dg.TableSchema(
            columns=[dg.TableColumn(name, type_) for name, type_ in schema.columns]
        )
    return metadata


def _record_counts(counts: WriteCounts) -> None:
    rec = get_recorder()
    for outcome in ("inserted", "updated", "skipped", "failed"):
        n = getattr(counts, outcome)
        if n:
            rec.records(outcome, n, "load")
    if counts.failed:
        rec.dead_letter("load", counts.failed)


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
