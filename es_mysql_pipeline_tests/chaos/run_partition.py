"""One Dagster run of the partitioned asset job in its own process (a killable "run worker").

``python -m es_mysql_pipeline_tests.chaos.run_partition '<json spec>'``; the spec names the
CSV, partition, table, write mode, staging and dead-letter dirs, and optionally the asset
selection (e.g. only ``loaded_records``, loading the stage a killed run left behind). Prints
one JSON line: success, the failure message, and the load's metadata.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import dagster as dg

from es_mysql_pipeline.assets import build_assets
from es_mysql_pipeline.assets.partitions import daily_partitions
from es_mysql_pipeline.io_manager import StagingIOManagerResource
from es_mysql_pipeline.resources.settings import PipelineSettings
from es_mysql_pipeline.resources.sinks import SqlSink
from es_mysql_pipeline.resources.sources import FileSource
from es_mysql_pipeline_tests.support.failures import step_failure_message
from es_mysql_pipeline_tests.support.mysql import mysql_url


def run(spec: dict[str, Any]) -> dict[str, Any]:
    os.environ.setdefault("ES_MYSQL_PIPELINE_SCRATCH", os.path.join(spec["work"], "scratch"))
    resources = {
        "source": FileSource(path=spec["csv"]),
        "sink": SqlSink(
            url=spec.get("url", mysql_url()),
            table=spec["table"],
            write_mode=spec.get("mode", "skip"),
            workers=spec.get("workers", 2),
            batch_size=spec.get("batch_size", 1000),
            max_retries=spec.get("max_retries", 8),
        ),
        "settings": PipelineSettings(dead_letter_dir=os.path.join(spec["work"], "dead_letter")),
        "io_manager": StagingIOManagerResource(base_path=os.path.join(spec["work"], "staging")),
    }
    partitions = daily_partitions()
    selection = spec.get("select")
    job = dg.Definitions(
        assets=build_assets(partitions),
        jobs=[
            dg.define_asset_job(
                "chaos_job",
                selection=dg.AssetSelection.assets(*selection) if selection else None,
                partitions_def=partitions,
            )
        ],
        resources=resources,
    ).resolve_job_def("chaos_job")
    result = job.execute_in_process(partition_key=spec["partition"], raise_on_error=False)
    out: dict[str, Any] = {"success": result.success, "error": None, "load": {}}
    if result.get_step_failure_events():
        out["error"] = step_failure_message(result)
    for event in result.get_asset_materialization_events():
        if event.asset_key is not None and event.asset_key.path[-1] == "loaded_records":
            md = event.materialization.metadata
            out["load"] = {k: v.value for k, v in md.items() if isinstance(v.value, (int, str))}
    checks = result.get_asset_check_evaluations()
    out["checks_passed"] = all(c.passed for c in checks) if checks else None
    return out


if __name__ == "__main__":
    print(json.dumps(run(json.loads(sys.argv[1]))), flush=True)
