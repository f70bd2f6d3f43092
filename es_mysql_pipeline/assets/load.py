"""Load: write clean rows to the sink with N workers, then reconcile the partition."""

from __future__ import annotations

from typing import Any

import dagster as dg

from es_mysql_pipeline import metadata_keys as keys
from es_mysql_pipeline.assets.failures import step
from es_mysql_pipeline.assets.partitions import (
    WindowConfig,
    days_label,
    partition_keys,
    partition_window,
    path_value,
    put_counts,
    run_label,
    run_window,
    timing,
)
from es_mysql_pipeline.errors import ConfigError
from es_mysql_pipeline.load_engine import load_staged
from es_mysql_pipeline.metrics.recorder import get_recorder
from es_mysql_pipeline.resources.settings import PipelineSettings
from es_mysql_pipeline.resources.sinks.base import RecordSink
from es_mysql_pipeline.resources.sources.base import RecordSource
from es_mysql_pipeline.staging import StagedRecords
from es_mysql_pipeline.targets import SINK_TAG, verify_target
from es_mysql_pipeline.writers.base import SchemaReport, TableShape, WriteCounts

RECONCILE_CHECK = "rows_reconciled"


@step("load")
def load_records(
    context: dg.AssetExecutionContext,
    config: WindowConfig,
    clean_records: StagedRecords,
    sink: RecordSink,
    settings: PipelineSettings,
    source: RecordSource,
) -> dg.MaterializeResult:
    """Rows in the sink for the partition; counts of inserted, updated, skipped and failed."""
    label = run_label(context, config)
    verify_target(context, SINK_TAG, sink)
    shape = TableShape(
        clean_records.id_key,
        clean_records.timestamp_key,
        clean_records.columns,
        delete_marker=settings.delete_marker,
        soft_delete=settings.deletes == "soft",
    )
    missing = 0
    sink.check()
    if sink.write_mode == "refresh" and partition_keys(context):
        raise ConfigError(
            "write_mode refresh replaces the whole table: run it unpartitioned "
            "(the CLI, or a pipeline with partitions: none), not per partition"
        )
    outcome = load_staged(clean_records, sink, shape, label, settings.dead_letter_dir)
    if settings.deletes != "ignore" and sink.write_mode != "refresh":
        # the source's ids of the window, read completely (or it raises: nothing is deleted)
        window = run_window(context, config)
        missing = sink.delete_missing(shape, window, source.read_ids(window))
        get_recorder().deleted("soft" if shape.soft_delete else "hard", missing)
    counts = outcome.counts
    processed = clean_records.source_rows
    failed = counts.failed + clean_records.rejected
    metadata: dict[str, Any] = {
        **timing(clean_records.rows, outcome.elapsed),
        keys.DEAD_LETTER_PATH: path_value(outcome.dead_letter),
        keys.TRANSFORM_DEAD_LETTER_PATH: path_value(clean_records.dead_letter),
        "sink": sink.describe()["type"],
        "sink_target": sink.describe()["target"],
        "write_mode": sink.write_mode,
        "deletes": settings.deletes,
        **_schema_metadata(outcome.schema, getattr(sink, "schema_contract", None)),
    }
    put_counts(
        context,
        metadata,
        {
            keys.PROCESSED: processed,
            keys.INSERTED: counts.inserted,
            keys.UPDATED: counts.updated,
            keys.SKIPPED: counts.skipped,
            keys.FAILED: failed,
            keys.DELETED: counts.deleted + missing,
            "deleted_missing_from_source": missing,
            "deleted_by_marker": counts.deleted,
            "failed_in_load": counts.failed,
            "rejected_in_transform": clean_records.rejected,
            "retries": counts.retries,
        },
    )
    for change in outcome.schema.changes:
        context.log.info(f"schema change: {change}")
    if outcome.schema.discarded:
        context.log.warning(
            f"schema contract discard: fields not loaded: {', '.join(outcome.schema.discarded)}"
        )
    check_results = []
    days = partition_keys(context)
    if days:
        by_day = {
            day: sink.count_rows(shape, partition_window(context, day), label) for day in days
        }
        for day, rows in by_day.items():
            # each partition's own rows, so the asset's row count adds up over partitions
            context.add_asset_metadata({"dagster/row_count": rows}, partition_key=day)
        check_results.append(_reconcile(days, by_day, clean_records, counts, missing))
    context.log.info(
        f"loaded {label}: processed={processed} inserted={counts.inserted} "
        f"updated={counts.updated} skipped={counts.skipped} failed={failed} "
        f"deleted={counts.deleted + missing}"
    )
    return dg.MaterializeResult(metadata=metadata, check_results=check_results)


RECONCILE_DESCRIPTION = (
    "For the run's days: the sink holds at least the rows this run inserted (less those "
    "deleted as gone from the source) and at most the clean records less those the sink "
    "refused or that deleted their row; and every record read from the source was "
    "inserted, updated, skipped as already loaded, refused by the sink, deleted its row "
    "(delete marker) or rejected by the transform."
)


def _reconcile(
    days: list[str],
    by_day: dict[str, int],
    clean: StagedRecords,
    counts: WriteCounts,
    missing: int = 0,
) -> dg.AssetCheckResult:
    """``rows_reconciled`` for the run's partitions, with its numbers in plain words."""
    in_sink = sum(by_day.values())
    at_least = max(counts.inserted - missing, 0)
    at_most = max(clean.rows - counts.failed - counts.deleted, at_least)
    read = clean.source_rows
    outcomes = counts.processed + clean.rejected
    rows_ok = at_least <= in_sink <= at_most
    balanced = read == outcomes
    span = days_label(days)
    rows_text = (
        f"the sink holds {in_sink:,} rows for {span}; this run inserted {at_least:,} and "
        f"loaded {clean.rows:,} clean records, of which the sink refused {counts.failed:,}"
    )
    outcome_text = (
        f"{read:,} records read: {counts.inserted:,} inserted, {counts.updated:,} updated, "
        f"{counts.skipped:,} skipped as already loaded, {counts.failed:,} refused by the sink, "
        f"{counts.deleted:,} deleted their row, {clean.rejected:,} rejected by the transform"
    )
    problems = []
    if not rows_ok:
        problems.append(f"expected between {at_least:,} and {at_most:,} rows in the sink")
    if not balanced:
        problems.append(f"{read - outcomes:,} records read have no outcome")
    metadata: dict[str, Any] = {
        "partitions": span,
        "rows_in_sink": in_sink,
        "rows_expected_at_least (inserted by this run)": at_least,
        "rows_expected_at_most (clean records less those refused)": at_most,
        "records_read": read,
        "records_with_an_outcome": outcomes,
    }
    if len(days) > 1:
        metadata["rows_in_sink_by_day"] = dg.MetadataValue.json(by_day)
    return dg.AssetCheckResult(
        check_name=RECONCILE_CHECK,
        passed=rows_ok and balanced,
        metadata=metadata,
        description="; ".join([*problems, rows_text, outcome_text]),
    )


def _schema_metadata(schema: SchemaReport, contract: str | None) -> dict[str, Any]:
    """The table's columns as Dagster's ``dagster/column_schema``, and what this load did."""
    metadata: dict[str, Any] = {
        "schema_changes": dg.MetadataValue.md(
            "\n".join(f"- `{c}`" for c in schema.changes) if schema.changes else "none"
        ),
        keys.COLUMNS_ADDED: len(schema.added),
        keys.COLUMNS_WIDENED: len(schema.widened),
        keys.FIELDS_DISCARDED: len(schema.discarded),
    }
    if contract is not None:
        metadata["schema_contract"] = contract
    if schema.discarded:
        metadata[keys.DISCARDED_FIELDS] = ", ".join(schema.discarded)
    metadata["fields_in_overflow"] = len(schema.overflowed)
    if schema.overflowed:
        metadata["overflow_fields"] = ", ".join(schema.overflowed[:50]) + (
            f" (and {len(schema.overflowed) - 50} more)" if len(schema.overflowed) > 50 else ""
        )
    if schema.renamed:
        metadata["column_map"] = dg.MetadataValue.md(
            "| field | column |\n|---|---|\n"
            + "\n".join(f"| `{f}` | `{c}` |" for f, c in sorted(schema.renamed.items()))
        )
    if schema.columns:
        metadata["dagster/column_schema"] = dg.TableSchema(
            columns=[dg.TableColumn(name, type_) for name, type_ in schema.columns]
        )
    return metadata
