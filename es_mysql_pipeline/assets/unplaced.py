"""Records that belong to no partition: their time is missing or unreadable.

A partitioned run reads its window only, so such a record is in no partition's counts.
This asset reads them once, dead-letters each with its reason (the file is replaced on
every materialization, so each record is there exactly once) and says how many there are,
so the partitions' records plus these add up to the source.
"""

from __future__ import annotations

import dagster as dg

from es_mysql_pipeline import metadata_keys as keys
from es_mysql_pipeline.assets.failures import step
from es_mysql_pipeline.dead_letter import DeadLetterWriter
from es_mysql_pipeline.resources.settings import PipelineSettings
from es_mysql_pipeline.resources.sources.base import RecordSource

PLACED_CHECK = "all_records_placed"
PLACED_DESCRIPTION = (
    "Every source record has a time that puts it in a partition; records without one are "
    "counted here and kept in the dead letter, not silently left out."
)


@step("fetch")
def unplaced_records(
    context: dg.AssetExecutionContext, source: RecordSource, settings: PipelineSettings
) -> dg.MaterializeResult:
    """Source records whose time is missing or unreadable: they belong to no partition."""
    dead = DeadLetterWriter(settings.dead_letter_dir, "fetch", "unplaced")
    source.check()
    with dead:
        for batch in source.read_unplaced(settings.fetch_batch_size):
            for record, reason in batch:
                dead.write(record, reason)
        path = dead.close()
    n = dead.count
    if n:
        context.log.warning(f"{n} records belong to no partition; see {path}")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": n,
            "unplaced_records": n,
            keys.DEAD_LETTER_PATH: dg.MetadataValue.path(path)
            if path
            else dg.MetadataValue.text("none: every record has a time"),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=PLACED_CHECK,
                passed=n == 0,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"unplaced_records": n},
                description=None
                if n == 0
                else f"{n} records have no readable time and are in no partition's counts; "
                f"they are in {path}",
            )
        ],
    )
