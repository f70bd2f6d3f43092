"""The three software-defined assets: raw_records → clean_records → loaded_records.

``build_assets`` binds the asset bodies (``fetch.py``, ``transform.py``, ``load.py``) to the
asset keys and resource keys of one pipeline (a :class:`Chain`), so that several pipelines
live in one code location: ``orders/raw`` reads ``orders__source``, and Dagster's implicit
all-assets job sees no two objects under one resource key.
"""

# No `from __future__ import annotations` here: Dagster reads the wrappers' signatures at
# definition time to find their config and inputs.

from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from es_mysql_pipeline import metadata_keys as keys
from es_mysql_pipeline.assets.failures import RETRY, step
from es_mysql_pipeline.assets.fetch import fetch_records
from es_mysql_pipeline.assets.load import RECONCILE_CHECK, RECONCILE_DESCRIPTION, load_records
from es_mysql_pipeline.assets.partitions import WindowConfig
from es_mysql_pipeline.assets.transform import transform_records
from es_mysql_pipeline.dead_letter import DeadLetterWriter
from es_mysql_pipeline.resources.settings import PipelineSettings
from es_mysql_pipeline.resources.sources.base import RecordSource
from es_mysql_pipeline.staging import StagedRecords

PLACED_CHECK = "all_records_placed"
PLACED_DESCRIPTION = (
    "Every source record has a time that puts it in a partition; records without one are "
    "counted here and kept in the dead letter, not silently left out."
)
GROUP = "records_pipeline"
OWNERS = ("team:data-engineering",)
__all__ = ["GROUP", "OWNERS", "RETRY", "Chain", "build_assets", "build_unplaced_asset"]


@dataclass(frozen=True)
class Chain:
    """Where one pipeline's assets sit. Unnamed: the environment-variable deployment's
    ``raw_records`` … reading ``source`` …; named: ``<name>/raw`` … reading
    ``<name>__source`` … in group ``<name>``."""

    name: str | None = None
    group: str | None = None
    owners: Sequence[str] = OWNERS
    tags: Mapping[str, str] = field(default_factory=dict)

    def key(self, step: str) -> dg.AssetKey:
        return dg.AssetKey([self.name, step]) if self.name else dg.AssetKey(f"{step}_records")

    def resource(self, kind: str) -> str:
        return f"{self.name}__{kind}" if self.name else kind

    def attributes(self) -> dict[str, Any]:
        return {
            "group_name": self.group or self.name or GROUP,
            "owners": list(self.owners),
            "tags": dict(self.tags) or None,
        }


def build_assets(
    partitions_def: dg.PartitionsDefinition[str] | None,
    hooks: AbstractSet[dg.HookDefinition] | None = None,
    backfill_policy: dg.BackfillPolicy | None = None,
    *,
    chain: Chain = Chain(),
    pool: str | None = None,
    automation_condition: dg.AutomationCondition | None = None,
) -> list[dg.AssetsDefinition]:
    """The same three assets, partitioned for Dagster or unpartitioned for the CLI (which
    passes an optional ``start``/``end`` window as run config). A partition range runs as
    one run unless ``backfill_policy`` says otherwise. ``hooks`` sit on the assets, not on
    a job, so they also run for launches from the asset graph and asset backfills."""
    res = chain.resource
    source, sink, settings = res("source"), res("sink"), res("settings")
    common: dict[str, Any] = {
        **chain.attributes(),
        "partitions_def": partitions_def,
        "backfill_policy": (backfill_policy or dg.BackfillPolicy.single_run())
        if partitions_def
        else None,
        "retry_policy": RETRY,
        "hooks": set(hooks) if hooks else None,
        "io_manager_key": res("io_manager"),
        "automation_condition": automation_condition,
    }

    def fetch(
        context: dg.AssetExecutionContext, config: WindowConfig
    ) -> dg.MaterializeResult[StagedRecords]:
        """Raw records for the partition, as read from the source."""
        r = context.resources
        return fetch_records(context, config, getattr(r, source), getattr(r, settings))

    def transform(
        context: dg.AssetExecutionContext, config: WindowConfig, raw_records: StagedRecords
    ) -> dg.MaterializeResult[StagedRecords]:
        """Clean rows: flattened, renamed, cast and validated; rejects are in the dead letter."""
        return transform_records(context, config, raw_records, getattr(context.resources, settings))

    def load(
        context: dg.AssetExecutionContext, config: WindowConfig, clean_records: StagedRecords
    ) -> dg.MaterializeResult:
        """Rows in the sink for the partition; counts of inserted, updated, skipped, failed."""
        r = context.resources
        return load_records(
            context,
            config,
            clean_records,
            getattr(r, sink),
            getattr(r, settings),
            getattr(r, source),
        )

    raw = dg.asset(
        key=chain.key("raw"),
        kinds={"python", "file"},
        required_resource_keys={source, settings},
        **common,
    )(fetch)
    clean = dg.asset(
        key=chain.key("clean"),
        kinds={"python", "file"},
        ins={"raw_records": dg.AssetIn(key=chain.key("raw"))},
        required_resource_keys={settings},
        **common,
    )(transform)
    check = dg.AssetCheckSpec(
        RECONCILE_CHECK, asset=chain.key("loaded"), description=RECONCILE_DESCRIPTION
    )
    loaded = dg.asset(
        key=chain.key("loaded"),
        kinds={"sql"},
        ins={"clean_records": dg.AssetIn(key=chain.key("clean"))},
        # the source too: deletes read its ids for the window after the load
        required_resource_keys={source, sink, settings},
        check_specs=[check] if partitions_def else None,
        pool=pool,
        **common,
    )(load)
    return [raw, clean, loaded]


def build_unplaced_asset(chain: Chain = Chain()) -> dg.AssetsDefinition:
    """The records of a partitioned pipeline that no partition holds (their time is missing
    or unreadable), so in no partition's counts: read once, each dead-lettered with its
    reason (the file is replaced on every materialization) and counted, so that the
    partitions' records plus these add up to the source. Unpartitioned, on demand."""
    source, settings = chain.resource("source"), chain.resource("settings")

    @step("fetch")
    def unplaced(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        """Records whose time is missing or unreadable: they belong to no partition."""
        r = context.resources
        return _unplaced(context, getattr(r, source), getattr(r, settings))

    key = chain.key("unplaced")
    return dg.asset(
        key=key,
        kinds={"python", "file"},
        required_resource_keys={source, settings},
        check_specs=[dg.AssetCheckSpec(PLACED_CHECK, asset=key, description=PLACED_DESCRIPTION)],
        **chain.attributes(),
    )(unplaced)


def _unplaced(
    context: dg.AssetExecutionContext, source: RecordSource, settings: PipelineSettings
) -> dg.MaterializeResult:
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
