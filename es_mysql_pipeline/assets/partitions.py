"""Daily partitions on the record timestamp, and the window a run covers."""

from __future__ import annotations

import os
from datetime import timezone

import dagster as dg

from es_mysql_pipeline.records import TimeWindow

#: First day users can materialize; set ``ES_MYSQL_PIPELINE_START_DATE`` (YYYY-MM-DD).
DEFAULT_START_DATE = "2024-01-01"


def daily_partitions() -> dg.DailyPartitionsDefinition:
    start = os.environ.get("ES_MYSQL_PIPELINE_START_DATE", DEFAULT_START_DATE)
    return dg.DailyPartitionsDefinition(start_date=start, timezone="UTC")


class WindowConfig(dg.Config):
    """For unpartitioned runs (the CLI): an optional ``[start, end)`` range of days."""

    start: str | None = None
    end: str | None = None


def run_window(context: dg.AssetExecutionContext, config: WindowConfig) -> TimeWindow | None:
    """The time window of this run: the partition (range) if partitioned, else the config."""
    if is_partitioned(context):
        tw = context.partition_time_window
        return TimeWindow(tw.start.astimezone(timezone.utc), tw.end.astimezone(timezone.utc))
    if config.start or config.end:
        if not (config.start and config.end):
            raise dg.Failure("give both start and end dates, or neither")
        return TimeWindow.from_dates(config.start, config.end)
    return None


def run_label(context: dg.AssetExecutionContext, config: WindowConfig) -> str:
    """A file-name-safe name for what this run covers: ``2024-01-03``, a range, or ``all``."""
    if is_partitioned(context):
        keys = context.partition_keys
        return keys[0] if len(keys) == 1 else f"{keys[0]}__{keys[-1]}"
    if config.start and config.end:
        return f"{config.start}__{config.end}"
    return "all"


def is_partitioned(context: dg.AssetExecutionContext) -> bool:
    """True for a single partition and for a partition range (single-run backfill)."""
    return context.has_partition_key or context.has_partition_key_range
