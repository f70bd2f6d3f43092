"""Fetch: read the run's window from the source into a staged file."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Generator
from dataclasses import replace
from typing import Any

import dagster as dg

from es_mysql_pipeline import lifecycle
from es_mysql_pipeline import metadata_keys as keys
from es_mysql_pipeline.assets.failures import step
from es_mysql_pipeline.assets.partitions import (
    WindowConfig,
    put_counts,
    run_window,
    timing,
)
from es_mysql_pipeline.metrics.recorder import get_recorder
from es_mysql_pipeline.readers.engine import timed
from es_mysql_pipeline.records import Batch, TimeWindow
from es_mysql_pipeline.resources.settings import PipelineSettings
from es_mysql_pipeline.resources.sources.base import RecordSource
from es_mysql_pipeline.staging import StagedFileWriter, StagedPart, StagedRecords
from es_mysql_pipeline.targets import SOURCE_TAG, verify_target


@step("fetch")
def fetch_records(
    context: dg.AssetExecutionContext,
    config: WindowConfig,
    source: RecordSource,
    settings: PipelineSettings,
) -> dg.MaterializeResult[StagedRecords]:
    """Raw records for the partition, as read from the source."""
    window = run_window(context, config)
    verify_target(context, SOURCE_TAG, source)
    source.check()
    source.require_timestamp(window)
    started = time.perf_counter()
    staged = _drain(source, window, settings)
    elapsed = time.perf_counter() - started
    staged = replace(staged, source_rows=staged.rows)
    described = source.describe()
    time_field = described.get("timestamp_field") or (source.timestamp_key() or "none")
    context.log.info(
        f"fetched {staged.rows} records from {described} in {elapsed:.2f}s "
        f"(time field: {time_field})"
    )
    metadata: dict[str, Any] = {
        "window": window.label() if window else "all",
        "source": described["type"],
        "source_target": described["target"],
        keys.TIMESTAMP_FIELD: time_field,
        **timing(staged.rows, elapsed),
    }
    put_counts(context, metadata, {"records": staged.rows}, row_count=staged.rows)
    return dg.MaterializeResult(value=staged, metadata=metadata)


def _drain(
    source: RecordSource, window: TimeWindow | None, settings: PipelineSettings
) -> StagedRecords:
    metrics = get_recorder()
    batch_size = settings.fetch_batch_size
    with StagedFileWriter(source.id_key(), source.timestamp_key()) as staging:
        parts = source.read_parts(window, batch_size, settings.fetch_processes)
        items: Generator[StagedPart | Batch, None, None]
        items = parts or timed(source.read_batches(window, batch_size))
        # Leaving early (a stop, a full disk) closes the parts: workers stop, parts go.
        with contextlib.closing(items):
            for item in items:
                before = staging.rows
                if isinstance(item, StagedPart):
                    staging.append(item.staged)
                    for seconds in item.read_seconds:
                        metrics.duration("fetch", seconds)
                else:
                    staging.write(item)  # empties the batch (see StagedFileWriter.write)
                metrics.records("processed", staging.rows - before, "fetch")
                lifecycle.progress("fetch", staging.rows)
                lifecycle.raise_if_stopped("fetch")
        return staging.finish()
