"""Transform: map raw records to rows; records that cannot be loaded go to the dead letter."""

# No `from __future__ import annotations` here: Dagster reads these signatures' types at
# definition time to inject config and resources.

import time

import dagster as dg

from es_mysql_pipeline import lifecycle
from es_mysql_pipeline.assets.partitions import WindowConfig, run_label
from es_mysql_pipeline.dead_letter import DeadLetterWriter
from es_mysql_pipeline.errors import ConfigError
from es_mysql_pipeline.identifiers import column_name
from es_mysql_pipeline.mapping import RecordRejected, load_analyzer
from es_mysql_pipeline.metrics.recorder import get_recorder
from es_mysql_pipeline.records import Record
from es_mysql_pipeline.resources.settings import PipelineSettings
from es_mysql_pipeline.staging import StagedRecords, StageWriter


def transform_records(
    context: dg.AssetExecutionContext,
    config: WindowConfig,
    raw_records: StagedRecords,
    settings: PipelineSettings,
) -> dg.MaterializeResult[StagedRecords]:
    """Clean rows: flattened, renamed, cast and validated; rejects are in the dead letter."""
    rec = get_recorder()
    try:
        mapping = settings.mapping(raw_records.id_key, raw_records.timestamp_key)
        analyzer = load_analyzer(settings.analyzer) if settings.analyzer else None
    except ConfigError as exc:
        # A wrong setting fails the same way on every attempt: no retries, one clear line.
        raise dg.Failure(str(exc), allow_retries=False) from None
    started = time.perf_counter()
    analysis_ok = analysis_failed = 0
    unseen = mapping.named_columns()  # emptied as the named columns show up in rows
    dead = DeadLetterWriter(settings.dead_letter_dir, "transform", run_label(context, config))
    with (
        dead,
        StageWriter(
            mapping.id_column,
            mapping.timestamp_column,
            track_schema=True,
            declared=mapping.declared_types,
        ) as out,
    ):
        for batch in raw_records.batches(settings.fetch_batch_size):
            rows: list[Record] = []
            rejected_before = dead.count
            for raw in batch:
                try:
                    row = mapping.apply(raw)
                except RecordRejected as exc:
                    dead.write(raw, str(exc))
                    continue
                if analyzer is not None:
                    try:
                        extra = analyzer(row)
                        if extra:
                            for key, value in extra.items():
                                row.setdefault(column_name(key), value)
                        analysis_ok += 1
                    except Exception:
                        analysis_failed += 1
                rows.append(row)
            out.write(rows)
            if unseen and rows:
                _mark_seen(unseen, rows)
            n_bad = dead.count - rejected_before
            if n_bad:
                rec.records("failed", n_bad, "transform")
                rec.dead_letter("transform", n_bad)
            lifecycle.progress("transform", out.rows + dead.count, raw_records.rows)
            lifecycle.raise_if_stopped("transform")
        if unseen and out.rows:
            # Nothing is published: a typo in the mapping fails the same way on every retry.
            message = mapping.unknown_columns_message(unseen, sorted(out.columns))
            raise dg.Failure(message, allow_retries=False)
        staged = out.finish()
        dead_path = dead.close()
    if analyzer is not None:
        rec.analysis("success", analysis_ok)
        rec.analysis("failure", analysis_failed)
    elapsed = time.perf_counter() - started
    staged = StagedRecords(
        staged.path,
        staged.rows,
        staged.id_key,
        staged.timestamp_key,
        staged.columns,
        source_rows=raw_records.rows,
        rejected=dead.count,
        dead_letter=dead_path,
    )
    if dead.count:
        context.log.warning(f"{dead.count} records rejected; see {dead_path}")
    metadata: dict[str, object] = {
        "dagster/row_count": staged.rows,
        "clean_records": staged.rows,
        "rejected_records": dead.count,
        "dead_letter_path": dg.MetadataValue.path(dead_path or "(none)"),
        "columns": ", ".join(staged.columns),
        "duration_seconds": round(elapsed, 3),
        "rows_per_second": round(raw_records.rows / elapsed, 1) if elapsed > 0 else 0.0,
    }
    if analyzer is not None:
        metadata.update({"analysis_succeeded": analysis_ok, "analysis_failed": analysis_failed})
    return dg.MaterializeResult(value=staged, metadata=metadata)  # type: ignore[arg-type]


def _mark_seen(unseen: dict[str, str], rows: list[Record]) -> None:
    """Drop from ``unseen`` the columns present in ``rows`` (stops at once when all seen)."""
    for row in rows:
        for name in [n for n in unseen if n in row]:
            del unseen[name]
        if not unseen:
            return
