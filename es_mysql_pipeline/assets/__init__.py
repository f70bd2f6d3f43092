"""The three software-defined assets: raw_records → clean_records → loaded_records.

One pipeline's chain. ``build_assets`` binds the asset bodies (``fetch.py``,
``transform.py``, ``load.py``) to resource keys and asset keys of its pipeline, so that
several pipelines live in one code location: ``orders/raw`` reads ``orders__source``,
``clicks/raw`` reads ``clicks__source``, and Dagster's implicit all-assets job sees no
two objects under one resource key.
"""

# No `from __future__ import annotations` here: Dagster reads the wrappers' signatures at
# definition time to find their config and inputs.

from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from es_mysql_pipeline.assets.failures import RETRY, fail_fast_unless_transient
from es_mysql_pipeline.assets.fetch import fetch_records
from es_mysql_pipeline.assets.load import RECONCILE_CHECK, RECONCILE_DESCRIPTION, load_records
from es_mysql_pipeline.assets.partitions import WindowConfig
from es_mysql_pipeline.assets.transform import transform_records
from es_mysql_pipeline.assets.unplaced import PLACED_CHECK, PLACED_DESCRIPTION, unplaced_records
from es_mysql_pipeline.staging import StagedRecords

GROUP = "records_pipeline"
OWNERS = ["team:data-engineering"]
__all__ = [
    "GROUP",
    "OWNERS",
    "RETRY",
    "AssetNames",
    "ResourceKeys",
    "build_assets",
    "build_unplaced_asset",
]


@dataclass(frozen=True)
class ResourceKeys:
    """The resource keys one pipeline's assets read (``source``, ``sink``, ``settings``)."""

    source: str = "source"
    sink: str = "sink"
    settings: str = "settings"
    io_manager: str = "io_manager"

    @classmethod
    def of_pipeline(cls, name: str) -> "ResourceKeys":
        """``<name>__source`` …: keys no other pipeline of the code location uses."""
        return cls(f"{name}__source", f"{name}__sink", f"{name}__settings", f"{name}__io_manager")

    def values(self) -> set[str]:
        return {self.source, self.sink, self.settings}


@dataclass(frozen=True)
class AssetNames:
    """The asset keys of one chain; the defaults are the single pipeline's names."""

    raw: dg.AssetKey = field(default_factory=lambda: dg.AssetKey("raw_records"))
    clean: dg.AssetKey = field(default_factory=lambda: dg.AssetKey("clean_records"))
    loaded: dg.AssetKey = field(default_factory=lambda: dg.AssetKey("loaded_records"))
    unplaced: dg.AssetKey = field(default_factory=lambda: dg.AssetKey("unplaced_records"))
    group: str = GROUP
    owners: tuple[str, ...] = tuple(OWNERS)
    tags: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of_pipeline(
        cls,
        name: str,
        group: str | None = None,
        owners: tuple[str, ...] = tuple(OWNERS),
        tags: Mapping[str, str] | None = None,
    ) -> "AssetNames":
        """``<name>/raw`` → ``<name>/clean`` → ``<name>/loaded`` in group ``<name>``."""
        return cls(
            dg.AssetKey([name, "raw"]),
            dg.AssetKey([name, "clean"]),
            dg.AssetKey([name, "loaded"]),
            dg.AssetKey([name, "unplaced"]),
            group or name,
            owners,
            dict(tags or {}),
        )


def build_assets(
    partitions_def: dg.PartitionsDefinition[str] | None,
    hooks: AbstractSet[dg.HookDefinition] | None = None,
    backfill_policy: dg.BackfillPolicy | None = None,
    *,
    names: AssetNames | None = None,
    resource_keys: ResourceKeys | None = None,
    pool: str | None = None,
    automation_condition: dg.AutomationCondition | None = None,
) -> list[dg.AssetsDefinition]:
    """The same three assets, partitioned for Dagster or unpartitioned for the CLI.

    Partitioned runs of a date range execute as one run unless ``backfill_policy`` says
    otherwise (``BackfillPolicy.multi_run(n)`` spreads a backfill over runs of n
    partitions); the unpartitioned variant takes an optional ``start``/``end`` window as run
    config. ``hooks`` sit on the assets, not on a job, so they also run when the assets are
    launched from the asset graph or as a backfill (Dagster's implicit asset job).
    ``names`` and ``resource_keys`` place the chain (the defaults: the one pipeline of the
    environment-variable deployment); ``pool`` limits concurrent loads into one table.
    """
    names = names or AssetNames()
    keys = resource_keys or ResourceKeys()
    common: dict[str, Any] = {
        "partitions_def": partitions_def,
        "backfill_policy": (backfill_policy or dg.BackfillPolicy.single_run())
        if partitions_def
        else None,
        "group_name": names.group,
        "owners": list(names.owners),
        "tags": dict(names.tags) or None,
        "retry_policy": RETRY,
        "hooks": set(hooks) if hooks else None,
        "io_manager_key": keys.io_manager,
        "automation_condition": automation_condition,
    }
    raw = dg.asset(
        key=names.raw,
        kinds={"python", "file"},
        required_resource_keys={keys.source, keys.settings},
        **common,
    )(fail_fast_unless_transient(_fetch(keys)))
    clean = dg.asset(
        key=names.clean,
        kinds={"python", "file"},
        ins={"raw_records": dg.AssetIn(key=names.raw)},
        required_resource_keys={keys.settings},
        **common,
    )(fail_fast_unless_transient(_transform(keys)))
    checks = [
        dg.AssetCheckSpec(
            RECONCILE_CHECK,
            asset=names.loaded,
            description=RECONCILE_DESCRIPTION,
        )
    ]
    loaded = dg.asset(
        key=names.loaded,
        kinds={"sql"},
        ins={"clean_records": dg.AssetIn(key=names.clean)},
        # the source too: deletes read its ids for the window after the load
        required_resource_keys={keys.source, keys.sink, keys.settings},
        check_specs=checks if partitions_def else None,
        pool=pool,
        **common,
    )(fail_fast_unless_transient(_load(keys)))
    return [raw, clean, loaded]


def build_unplaced_asset(
    names: AssetNames | None = None, resource_keys: ResourceKeys | None = None
) -> dg.AssetsDefinition:
    """The records of a partitioned pipeline that no partition holds (no readable time):
    unpartitioned, materialized on demand, beside the chain."""
    names = names or AssetNames()
    keys = resource_keys or ResourceKeys()

    def unplaced(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        """Records whose time is missing or unreadable: they belong to no partition."""
        resources = context.resources
        return unplaced_records(
            context, getattr(resources, keys.source), getattr(resources, keys.settings)
        )

    return dg.asset(
        key=names.unplaced,
        kinds={"python", "file"},
        group_name=names.group,
        owners=list(names.owners),
        tags=dict(names.tags) or None,
        required_resource_keys={keys.source, keys.settings},
        check_specs=[
            dg.AssetCheckSpec(PLACED_CHECK, asset=names.unplaced, description=PLACED_DESCRIPTION)
        ],
    )(unplaced)


def _fetch(keys: ResourceKeys) -> Any:
    def fetch(
        context: dg.AssetExecutionContext, config: WindowConfig
    ) -> dg.MaterializeResult[StagedRecords]:
        """Raw records for the partition, as read from the source."""
        resources = context.resources
        return fetch_records(
            context, config, getattr(resources, keys.source), getattr(resources, keys.settings)
        )

    return fetch


def _transform(keys: ResourceKeys) -> Any:
    def transform(
        context: dg.AssetExecutionContext, config: WindowConfig, raw_records: StagedRecords
    ) -> dg.MaterializeResult[StagedRecords]:
        """Clean rows: flattened, renamed, cast and validated; rejects are in the dead letter."""
        settings = getattr(context.resources, keys.settings)
        return transform_records(context, config, raw_records, settings)

    return transform


def _load(keys: ResourceKeys) -> Any:
    def load(
        context: dg.AssetExecutionContext, config: WindowConfig, clean_records: StagedRecords
    ) -> dg.MaterializeResult:
        """Rows in the sink for the partition; counts of inserted, updated, skipped, failed."""
        resources = context.resources
        return load_records(
            context,
            config,
            clean_records,
            getattr(resources, keys.sink),
            getattr(resources, keys.settings),
            getattr(resources, keys.source),
        )

    return load
