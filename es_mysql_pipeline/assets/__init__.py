"""The three software-defined assets: raw_records → clean_records → loaded_records."""

from __future__ import annotations

from collections.abc import Set as AbstractSet

import dagster as dg

from es_mysql_pipeline.assets.failures import RETRY, fail_fast_unless_transient
from es_mysql_pipeline.assets.fetch import fetch_records
from es_mysql_pipeline.assets.load import RECONCILE_CHECK, RECONCILE_DESCRIPTION, load_records
from es_mysql_pipeline.assets.transform import transform_records

GROUP = "records_pipeline"
OWNERS = ["team:data-engineering"]
__all__ = ["GROUP", "OWNERS", "RETRY", "build_assets"]


def build_assets(
    partitions_def: dg.PartitionsDefinition[str] | None,
    hooks: AbstractSet[dg.HookDefinition] | None = None,
    backfill_policy: dg.BackfillPolicy | None = None,
) -> list[dg.AssetsDefinition]:
    """The same three assets, daily-partitioned for Dagster or unpartitioned for the CLI.

    Partitioned runs of a date range execute as one run unless ``backfill_policy`` says
    otherwise (``BackfillPolicy.multi_run(n)`` spreads a backfill over runs of n days); the
    unpartitioned variant takes an optional ``start``/``end`` window as run config.
    ``hooks`` sit on the assets, not on a job, so they also run when the assets are
    launched from the asset graph or as a backfill (Dagster's implicit asset job).
    """
    common: dict[str, object] = {
        "partitions_def": partitions_def,
        "backfill_policy": (backfill_policy or dg.BackfillPolicy.single_run())
        if partitions_def
        else None,
        "group_name": GROUP,
        "owners": OWNERS,
        "retry_policy": RETRY,
        "hooks": set(hooks) if hooks else None,
    }
    raw = dg.asset(name="raw_records", kinds={"python", "file"}, **common)(  # type: ignore[call-overload]
        fail_fast_unless_transient(fetch_records)
    )
    clean = dg.asset(name="clean_records", kinds={"python", "file"}, **common)(  # type: ignore[call-overload]
        fail_fast_unless_transient(transform_records)
    )
    checks = [
        dg.AssetCheckSpec(
            RECONCILE_CHECK,
            asset="loaded_records",
            description=RECONCILE_DESCRIPTION,
        )
    ]
    loaded = dg.asset(  # type: ignore[call-overload]
        name="loaded_records",
        kinds={"sql"},
        check_specs=checks if partitions_def else None,
        **common,
    )(fail_fast_unless_transient(load_records))
    return [raw, clean, loaded]
