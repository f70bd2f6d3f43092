"""Load: write clean rows to the sink with N workers, then reconcile the partition."""

# No `from __future__ import annotations` here: Dagster reads these signatures' types at
# definition time to inject config and resources.

from typing import Any

import dagster as dg

from es_mysql_pipeline import metadata_keys as keys
from es_mysql_pipeline.assets.failures import step_failed
from es_mysql_pipeline.assets.partitions import (
    WindowConfig,
    is_partitioned,
    run_label,
    run_window,
)
from es_mysql_pipeline.errors import PipelineError
from es_mysql_pipeline.load_engine import load_staged
from es_mysql_pipeline.resources.settings import PipelineSettings
from es_mysql_pipeline.resources.sinks.base import (
    RecordSink,
    SchemaReport,
    TableShape,
)
from es_mysql_pipeline.staging import StagedRecords
from es_mysql_pipeline.targets import SINK_TAG, verify_target
from es_mysql_pipeline.worker_processes import tune_gc

RECONCILE_CHECK = "rows_reconciled"


def load_records(
    context: dg.AssetExecutionContext,
    config: WindowConfig,
    clean_records: StagedRecords,
    sink: RecordSink,
    settings: PipelineSettings,
) -> dg.MaterializeResult:
    """Rows in the sink for the partition; counts of inserted, updated, skipped and failed."""
    tune_gc()
    label = run_label(context, config)
    verify_target(context, SINK_TAG, sink)
    shape = TableShape(clean_records.id_key, clean_records.timestamp_key, clean_records.columns)
    try:
        sink.check()
        outcome = load_staged(clean_records, sink, shape, label, settings.dead_letter_dir)
    except PipelineError as exc:
        raise step_failed(exc, "load") from None
    counts = outcome.counts
    processed = clean_records.source_rows
    failed = counts.failed + clean_records.rejected
    metadata: dict[str, Any] = {
        keys.PROCESSED: processed,
        keys.INSERTED: counts.inserted,
        keys.UPDATED: counts.updated,
        keys.SKIPPED: counts.skipped,
        keys.FAILED: failed,
        "failed_in_load": counts.failed,
        "rejected_in_transform": clean_records.rejected,
        "retries": counts.retries,
        keys.DURATION_SECONDS: round(outcome.elapsed, 3),
        "rows_per_second": round(clean_records.rows / outcome.elapsed, 1)
        if outcome.elapsed > 0
        else 0.0,
        keys.DEAD_LETTER_PATH: dg.MetadataValue.path(outcome.dead_letter or keys.NOTHING),
        keys.TRANSFORM_DEAD_LETTER_PATH: dg.MetadataValue.path(
            clean_records.dead_letter or keys.NOTHING
        ),
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


def _schema_metadata(schema: SchemaReport, contract: str | None) -> dict[str, Any]:
    """The table's columns as Dagster's ``dagster/column_schema``, and what this load did."""
    metadata: dict[str, Any] = {
        "schema_changes": dg.MetadataValue.md(
            "\n".join(f"- `{c}`" for c in schema.changes) if schema.changes else keys.NOTHING
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
