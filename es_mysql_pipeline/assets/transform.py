"""Transform: map raw records to rows; records that cannot be loaded go to the dead letter."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import replace

import dagster as dg

from es_mysql_pipeline import lifecycle
from es_mysql_pipeline import metadata_keys as keys
from es_mysql_pipeline.assets.failures import step
from es_mysql_pipeline.assets.partitions import (
    WindowConfig,
    path_value,
    put_counts,
    run_label,
    timing,
)
from es_mysql_pipeline.dead_letter import DeadLetterWriter
from es_mysql_pipeline.errors import ConfigError, RejectedRecordsError
from es_mysql_pipeline.mapping import Analyzer, FieldMapping, load_analyzer
from es_mysql_pipeline.metrics.recorder import get_recorder
from es_mysql_pipeline.resources.settings import PipelineSettings
from es_mysql_pipeline.staging import StagedRecords
from es_mysql_pipeline.transform_engine import (
    BatchMapper,
    RejectTally,
    map_parallel,
    new_staged_file,
    reject_hint,
    worker_count,
)


@step("transform")
def transform_records(
    context: dg.AssetExecutionContext,
    config: WindowConfig,
    raw_records: StagedRecords,
    settings: PipelineSettings,
) -> dg.MaterializeResult[StagedRecords]:
    """Clean rows: flattened, renamed, cast and validated; rejects are in the dead letter."""
    metrics = get_recorder()
    started = time.perf_counter()
    dead = DeadLetterWriter(settings.dead_letter_dir, "transform", run_label(context, config))
    mapping = settings.mapping(raw_records.id_key, raw_records.timestamp_key)
    analyzer = load_analyzer(settings.analyzer) if settings.analyzer else None
    rejects = RejectTally()
    staged, analysis = _transform(raw_records, mapping, analyzer, dead, rejects, settings)
    _check_ratio(staged, rejects, settings.max_failed_ratio)
    if analyzer is not None:
        metrics.analysis("success", analysis[0])
        metrics.analysis("failure", analysis[1])
    elapsed = time.perf_counter() - started
    dead_path = staged.dead_letter
    if dead.count:
        context.log.warning(f"{dead.count} records rejected; see {dead_path}")
    metadata: dict[str, object] = {
        keys.DEAD_LETTER_PATH: path_value(dead_path),
        "columns": ", ".join(staged.columns),
        **timing(raw_records.rows, elapsed),
    }
    counts: dict[str, object] = {"clean_records": staged.rows, "rejected_records": dead.count}
    top = rejects.top()
    if top is not None:
        counts[keys.TOP_REJECT_REASON] = f"{top[1]} records: {top[0]}"
    if analyzer is not None:
        counts.update({"analysis_succeeded": analysis[0], "analysis_failed": analysis[1]})
    put_counts(context, metadata, counts, row_count=staged.rows)
    return dg.MaterializeResult(value=staged, metadata=metadata)  # type: ignore[arg-type]


def _transform(
    raw_records: StagedRecords,
    mapping: FieldMapping,
    analyzer: Analyzer | None,
    dead: DeadLetterWriter,
    rejects: RejectTally,
    settings: PipelineSettings,
) -> tuple[StagedRecords, tuple[int, int]]:
    """Map every raw record; the clean staged file and the analyzer's (ok, failed) counts."""
    total = raw_records.rows
    workers = worker_count(settings.transform_processes, total)

    def after_run(done: int, rejected: int) -> None:
        if rejected:
            get_recorder().records("failed", rejected, "transform")
            get_recorder().dead_letter("transform", rejected)
        lifecycle.progress("transform", done, total)
        rejects.check(done, settings.max_failed_ratio)
        lifecycle.raise_if_stopped("transform")

    with dead, new_staged_file(mapping) as out:
        if workers > 1:
            ok, failed, unseen = map_parallel(
                raw_records, mapping, settings.analyzer, workers, out, dead, after_run, rejects
            )
        else:
            mapper = BatchMapper(mapping, analyzer, dead, rejects)
            for frame in raw_records.raw_frames():
                rejected_before = dead.count
                out.write(mapper.map(frame))
                after_run(out.rows + dead.count, dead.count - rejected_before)
            ok, failed, unseen = mapper.analysis_ok, mapper.analysis_failed, mapper.unseen
        if unseen and out.rows:
            # Nothing is published: a typo in the mapping fails the same way on every retry.
            raise ConfigError(mapping.unknown_columns_message(unseen, sorted(out.columns)))
        staged = out.finish()
        dead_path = dead.close()
    counted = replace(
        staged, source_rows=raw_records.rows, rejected=dead.count, dead_letter=dead_path
    )
    return counted, (ok, failed)


def _check_ratio(staged: StagedRecords, rejects: RejectTally, max_ratio: float | None) -> None:
    """Fail when more than ``max_ratio`` of the records were rejected, as the CLI exits 1.

    The early stop (:meth:`RejectTally.check`) waits for 1,000 records before one reason
    makes a pattern; once the whole partition is seen it is the sample, so a small day
    whose every record is rejected fails here, naming the reason, instead of loading
    nothing and succeeding. The dead letter is kept: it is the list of what to fix.
    """
    seen = staged.source_rows
    if max_ratio is None or not seen or staged.rejected / seen <= max_ratio:
        return
    with contextlib.suppress(OSError):
        os.unlink(staged.path)  # never handed on: the load must not run on it
    top = rejects.top()
    most_often = f"; most often ({top[1]:,} records): {top[0]}{reject_hint(top[0])}" if top else ""
    raise RejectedRecordsError(
        f"{staged.rejected:,} of {seen:,} records failed "
        f"(more than --max-failed-ratio {max_ratio}){most_often}; "
        f"the rejected records are in {staged.dead_letter}"
    )
