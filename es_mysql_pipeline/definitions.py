"""Composes the project: the pipelines of a defs.yaml (``ES_MYSQL_PIPELINE_DEFS``, else the
bundled sample CSV into SQLite), or with ``ES_MYSQL_PIPELINE_ENV`` the one pipeline of the
environment: ``raw_records`` → ``clean_records`` → ``loaded_records``, job ``records_job``.
"""

from __future__ import annotations

import os
from importlib import resources as pkg_resources
from pathlib import Path
from typing import Any

import dagster as dg

from es_mysql_pipeline.assets import build_assets, build_unplaced_asset
from es_mysql_pipeline.assets.partitions import daily_partitions
from es_mysql_pipeline.component import (
    env_secret,
    load_pipelines_file,
    pushgateway_resource,
)
from es_mysql_pipeline.hooks import PIPELINE_METRICS_HOOKS
from es_mysql_pipeline.io_manager import StagingIOManagerResource
from es_mysql_pipeline.resources.settings import PipelineSettings
from es_mysql_pipeline.resources.sinks import JsonlSink, SqlSink
from es_mysql_pipeline.resources.sources import FileSource
from es_mysql_pipeline.resources.sources.elasticsearch import ElasticsearchSource
from es_mysql_pipeline.sample_data import sample_csv_path
from es_mysql_pipeline.sensors import (
    asset_pipeline_ids,
    build_pipeline_metrics_sensor,
    pipeline_metrics_sensor,
    pipeline_types,
)
from es_mysql_pipeline.targets import SINK_TABLE_TAG, pool_name, target_tags

#: ``local`` (default): bundled sample CSV into SQLite, no server needed.
#: ``mysql``: CSV (``CSV_FILE``) into MySQL (``DB_URL``, password ``DB_PASSWORD``).
#: ``file``: CSV into JSON Lines files under ``OUTPUT_DIR``.
#: ``elasticsearch``: ``ES_URL``/``ES_INDEX`` (key ``ES_API_KEY`` or ``ES_PASSWORD``) into MySQL.
ENV_VAR = "ES_MYSQL_PIPELINE_ENV"
#: A defs.yaml (or a folder of them) declaring the pipelines; default: the bundled one.
DEFS_VAR = "ES_MYSQL_PIPELINE_DEFS"


def _env(name: str, default: str | None = None) -> Any:
    return os.environ.get(name) or default


def resources_for(env: str) -> dict[str, object]:
    """One resource set per deployment; secrets only ever through ``EnvVar``."""
    home = _env("ES_MYSQL_PIPELINE_DATA", ".")
    if "://" not in home:  # a local folder: absolute, so paths in the UI say where
        home = os.path.abspath(home)
    settings = PipelineSettings(
        pipeline_id=_env("PIPELINE_ID", "default"),
        dead_letter_dir=os.path.join(home, "dead_letter"),
        max_failed_ratio=float(_env("MAX_FAILED_RATIO", "0.05")),  # the CLI's default
    )
    source: Any = FileSource(
        path=_env("CSV_FILE", sample_csv_path()),
        timestamp_column=_env("CSV_TIMESTAMP_COLUMN"),
    )
    if env == "elasticsearch":
        source = ElasticsearchSource(
            hosts=_env("ES_URL", "http://127.0.0.1:9200").split(","),
            index=_env("ES_INDEX", "logs-*"),
            query=_env("ES_QUERY"),
            timestamp_field=_env("ES_TIMESTAMP_FIELD"),
            api_key=env_secret("ES_API_KEY"),
            username=_env("ES_USERNAME"),
            password=env_secret("ES_PASSWORD"),
            ca_certs=_env("ES_CA_CERTS"),
        )
    if env == "local":
        sink: Any = SqlSink(
            url=_env("DB_URL", f"sqlite:///{os.path.join(home, 'es_mysql_pipeline.sqlite')}"),
            table=_env("DB_TABLE", "records"),
            schema_contract=_env("SCHEMA_CONTRACT", "evolve"),
        )
    elif env in ("mysql", "elasticsearch"):
        sink = SqlSink(
            url=_env("DB_URL", "mysql+pymysql://root@127.0.0.1:3306/test"),
            password=env_secret("DB_PASSWORD"),
            table=_env("DB_TABLE", "records"),
            write_mode=_env("WRITE_MODE", "skip"),
            schema_contract=_env("SCHEMA_CONTRACT", "evolve"),
        )
    elif env == "file":
        sink = JsonlSink(directory=_env("OUTPUT_DIR", os.path.join(home, "out")))
    else:
        raise ValueError(f"{ENV_VAR}={env!r}: use local, mysql, file or elasticsearch")
    return {
        "source": source,
        "sink": sink,
        "settings": settings,
        # not run_scoped: a load resumed after a run killed before its sidecar must refuse,
        # not take an older run's complete stage of the partition (run_scoped would)
        "io_manager": StagingIOManagerResource(
            base_path=_env("STAGING_PATH", os.path.join(home, "staging"))
        ),
        "pushgateway": pushgateway_resource(
            grouping_labels={"env": env},
            source_type=source.describe()["type"],
            sink_type=sink.describe()["type"],
        ),
    }


def backfill_policy(per_run: str | None) -> dg.BackfillPolicy:
    """``BACKFILL_PARTITIONS_PER_RUN``: unset or 0 runs a backfill as one run; N spreads it
    over runs of N days, which a queued run coordinator can hand to several workers."""
    try:
        n = int(per_run or 0)
    except ValueError:
        msg = f"BACKFILL_PARTITIONS_PER_RUN must be a whole number, not {per_run!r}"
        raise ValueError(msg) from None
    if n < 0:
        raise ValueError(f"BACKFILL_PARTITIONS_PER_RUN must be 0 or more, not {n}")
    return dg.BackfillPolicy.multi_run(n) if n else dg.BackfillPolicy.single_run()


DAILY = daily_partitions()
RESOURCES = resources_for(_env(ENV_VAR, "local"))


def launch_tags() -> dict[str, str]:
    """The targets this process resolved from its environment, as run tags (see targets.py)."""
    return target_tags(RESOURCES["source"], RESOURCES["sink"])


ASSETS = build_assets(
    DAILY,
    hooks=PIPELINE_METRICS_HOOKS,
    backfill_policy=backfill_policy(os.environ.get("BACKFILL_PARTITIONS_PER_RUN")),
    pool=pool_name(launch_tags()[SINK_TABLE_TAG]),
)

records_job = dg.define_asset_job(
    "records_job",
    selection=dg.AssetSelection.assets(*ASSETS),
    partitions_def=DAILY,
    description="Fetch, transform and load one day's records (or a range, as one run).",
    # computed where the job is loaded: the code server that launches UI runs, schedules
    # and backfills of this job tags them with its targets; each step checks its own
    run_tags=launch_tags(),
)

records_daily_schedule = dg.build_schedule_from_partitioned_job(
    records_job, name="records_daily_schedule", hour_of_day=0, minute_of_hour=15
)


def env_defs(executor: dg.ExecutorDefinition | None = None) -> dg.Definitions:
    """The environment-variable deployment (``ES_MYSQL_PIPELINE_ENV``): one pipeline. A
    function: Dagster takes the one ``Definitions`` at module scope as the code location."""
    return dg.Definitions(
        assets=[*ASSETS, build_unplaced_asset()],
        jobs=[records_job],
        schedules=[records_daily_schedule],
        sensors=[pipeline_metrics_sensor],
        resources=RESOURCES,
        executor=executor,
    )


def pipelines_defs(path: str | None = None) -> dg.Definitions:
    """The pipelines of ``path`` (a defs.yaml or a folder), else of the bundled defs folder,
    with one metrics sensor over all their assets. A mistake in ``path`` raises one line
    naming the file, the line and the place in the YAML."""
    if path:
        parts = [c.definitions(file, doc) for c, file, doc in load_pipelines_file(path)]
        loaded = dg.Definitions.merge(*parts)
    else:
        from es_mysql_pipeline import defs as defs_module

        package_root = Path(str(pkg_resources.files("es_mysql_pipeline"))).parent
        loaded = dg.ComponentTree.from_module(
            defs_module=defs_module, project_root=package_root
        ).build_defs()
    # one sensor over every pipeline: each run and step goes to the pipeline its assets
    # are tagged with, whether a job, the asset graph or a backfill launched it; the
    # on-demand count of unplaced records is no pipeline run
    keys = {
        key
        for key in loaded.resolve_asset_graph().get_all_asset_keys()
        if key.path[-1] != "unplaced"
    }
    pipelines = asset_pipeline_ids(loaded)
    sensor = build_pipeline_metrics_sensor(
        asset_keys=keys,
        asset_pipelines=pipelines,
        types=pipeline_types(loaded, set(pipelines.values())),
    )
    return dg.Definitions.merge(loaded, dg.Definitions(sensors=[sensor]))


defs = env_defs() if os.environ.get(ENV_VAR) else pipelines_defs(os.environ.get(DEFS_VAR))
