"""Transform: map raw records to rows; records that cannot be loaded go to the dead letter."""

# No `from __future__ import annotations` here: Dagster reads these signatures' types at
# definition time to inject config and resources.

import time

import dagster as dg

from es_mysql_pipeline import lifecycle
from es_mysql_pipeline.assets.partitions import WindowConfig, run_label
from es_mysql_pipeline.dead_letter import DeadLetterWriter
from es_mysql_pipeline.errors import ConfigError, PipelineError, step_failure
from es_mysql_pipeline.identifiers import column_name
from es_mysql_pipeline.mapping import Analyzer, FieldMapping, RecordRejected, load_analyzer
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
    started = time.perf_counter()
    dead = DeadLetterWriter(settings.dead_letter_dir, "transform", run_label(context, config))
    try:
        mapping = settings.mapping(raw_records.id_key, raw_records.timestamp_key)
        analyzer = load_analyzer(settings.analyzer) if settings.analyzer else None
        staged, analysis = _transform(raw_records, mapping, analyzer, dead, settings)
    except PipelineError as exc:
        rec.error(type(exc).__name__, "transform")
        raise step_failure(exc) from None
    if analyzer is not None:
        rec.analysis("success", analysis[0])
        rec.analysis("failure", analysis[1])
    elapsed = time.perf_counter() - started
    dead_path = staged.dead_letter
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
        metadata.update({"analysis_succeeded": analysis[0], "analysis_failed": analysis[1]})
    return dg.MaterializeResult(value=staged, metadata=metadata)  # type: ignore[arg-type]


def _transform(
    raw_records: StagedRecords,
    mapping: FieldMapping,
    analyzer: Analyzer | None,
    dead: DeadLetterWriter,
    settings: PipelineSettings,
) -> tuple[StagedRecords, tuple[int, int]]:
    """Map every raw record; returns the clean stage and the analyzer's (ok, failed) counts."""
    rec = get_recorder()
    analysis_ok = analysis_failed = 0
    unseen = mapping.named_columns()  # emptied as the named columns show up in rows
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
                    except Exception:  # a user callable: count and go on
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
            raise ConfigError(mapping.unknown_columns_message(unseen, sorted(out.columns)))
        staged = out.finish()
        dead_path = dead.close()
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
    return staged, (analysis_ok, analysis_failed)


def _mark_seen(unseen: dict[str, str], rows: list[Record]) -> None:
    """Drop from ``unseen`` the columns present in ``rows`` (stops at once when all seen)."""
    for row in rows:
        for name in [n for n in unseen if n in row]:
            del unseen[name]
        if not unseen:
            return
