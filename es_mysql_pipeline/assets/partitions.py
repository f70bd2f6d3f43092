"""Daily partitions on the record timestamp, the window a run covers, and the metadata the
steps share (counts that add up over partitions, paths, timing)."""

from __future__ import annotations

import os
from datetime import timezone
from typing import Any, cast

import dagster as dg

from es_mysql_pipeline import metadata_keys
from es_mysql_pipeline.errors import ConfigError
from es_mysql_pipeline.records import TimeWindow

#: The bundled sample's first day, and the day after its last (``make ui`` ends there).
DEFAULT_START_DATE = "2024-01-01"
SAMPLE_END_DATE = "2024-01-06"


def daily_partitions() -> dg.DailyPartitionsDefinition:
    """Daily UTC partitions from ``ES_MYSQL_PIPELINE_START_DATE``, up to today unless
    ``ES_MYSQL_PIPELINE_END_DATE`` (exclusive) ends them."""
    start = os.environ.get("ES_MYSQL_PIPELINE_START_DATE") or DEFAULT_START_DATE
    end = os.environ.get("ES_MYSQL_PIPELINE_END_DATE") or None
    return dg.DailyPartitionsDefinition(start_date=start, end_date=end, timezone="UTC")


class WindowConfig(dg.Config):
    """For unpartitioned runs (the CLI): an optional ``[start, end)`` range of days."""

    start: str | None = None
    end: str | None = None


def run_window(context: dg.AssetExecutionContext, config: WindowConfig) -> TimeWindow | None:
    """The time window of this run: the partition (range) if partitioned, else the config."""
    if partition_keys(context):
        tw = context.partition_time_window
        return TimeWindow(tw.start.astimezone(timezone.utc), tw.end.astimezone(timezone.utc))
    if config.start or config.end:
        if not (config.start and config.end):
            raise ConfigError("config start/end: give both (YYYY-MM-DD), or neither")
        return TimeWindow.from_dates(config.start, config.end)
    return None


def run_label(context: dg.AssetExecutionContext, config: WindowConfig) -> str:
    """A file-name-safe name for what this run covers: ``2024-01-03``, a range, or ``all``."""
    keys = partition_keys(context)
    if keys:
        return keys[0] if len(keys) == 1 else f"{keys[0]}__{keys[-1]}"
    if config.start and config.end:
        return f"{config.start}__{config.end}"
    return "all"


def partition_keys(context: dg.AssetExecutionContext) -> list[str]:
    """The days this run covers (one, or a single-run backfill's range), in order; empty
    for an unpartitioned (CLI) run."""
    if context.has_partition_key or context.has_partition_key_range:
        return list(context.partition_keys)
    return []


def partition_window(context: dg.AssetExecutionContext, key: str) -> TimeWindow:
    """The ``[start, end)`` window of one partition of this run."""
    partitions_def = cast(dg.TimeWindowPartitionsDefinition, context.assets_def.partitions_def)
    tw = partitions_def.time_window_for_partition_key(key)
    return TimeWindow(tw.start.astimezone(timezone.utc), tw.end.astimezone(timezone.utc))


def days_label(keys: list[str]) -> str:
    """``2024-01-03``, or ``2024-01-02 to 2024-01-04 (3 days in one run)``."""
    if len(keys) == 1:
        return keys[0]
    return f"{keys[0]} to {keys[-1]} ({len(keys)} days in one run)"


def put_counts(
    context: dg.AssetExecutionContext,
    metadata: dict[str, Any],
    counts: dict[str, Any],
    row_count: int | None = None,
) -> None:
    """Add a step's counts so that adding up partitions never counts a record twice: a
    single-run backfill's counts are the range's, so they go on its first partition only,
    and each other partition says where it was counted (Dagster would otherwise copy the
    run's metadata onto every partition of the range)."""
    keys = partition_keys(context)
    if len(keys) <= 1:
        metadata.update(counts)
        if row_count is not None:  # a range's total is no partition's row count
            metadata["dagster/row_count"] = row_count
        return
    span = days_label(keys)
    metadata["run_covers"] = span
    first = keys[0]
    context.add_asset_metadata(
        {**counts, "counts_cover": f"the whole run: {span}"}, partition_key=first
    )
    for key in keys[1:]:
        context.add_asset_metadata(
            {"counts_cover": f"counted on {first}, for the whole run: {span}"}, partition_key=key
        )


def path_value(path: str | None) -> dg.MetadataValue:
    """An absolute path (or the URL as given); text, never a path, when there is none.

    The steps write relative to the directory the code server runs in, which the UI does
    not show, so a relative path would not say where to look.
    """
    if not path:
        return dg.MetadataValue.text(metadata_keys.NOTHING)
    if "://" in path:
        return dg.MetadataValue.path(path)
    return dg.MetadataValue.path(os.path.abspath(path))


def timing(rows: int, elapsed: float) -> dict[str, float]:
    return {
        metadata_keys.DURATION_SECONDS: round(elapsed, 3),
        "rows_per_second": round(rows / elapsed, 1) if elapsed > 0 else 0.0,
    }
