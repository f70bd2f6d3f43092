"""Composes the project: assets, resources per environment, job, schedule, sensor, hooks."""

from __future__ import annotations

import os
from importlib import resources as pkg_resources

import dagster as dg

from es_mysql_pipeline.assets import build_assets
from es_mysql_pipeline.assets.partitions import daily_partitions
from es_mysql_pipeline.io_manager import StagingIOManagerResource
from es_mysql_pipeline.resources.settings import PipelineSettings
from es_mysql_pipeline.resources.sinks import JsonlSink, SqlSink
from es_mysql_pipeline.resources.sources import CsvSource

#: ``local`` (default): bundled sample CSV into SQLite, no server needed.
#: ``mysql``: CSV (``CSV_FILE``) into MySQL (``DB_URL``, password ``DB_PASSWORD``).
#: ``file``: CSV into JSON Lines files under ``OUTPUT_DIR``.
ENV_VAR = "ES_MYSQL_PIPELINE_ENV"


def sample_csv_path() -> str:
    return str(pkg_resources.files("es_mysql_pipeline") / "data" / "sample_events.csv")


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def resources_for(env: str) -> dict[str, object]:
    """One resource set per deployment; secrets only ever through ``EnvVar``."""
    home = _env("ES_MYSQL_PIPELINE_DATA", ".")
    settings = PipelineSettings(
        pipeline_id=_env("PIPELINE_ID", "default"),
        dead_letter_dir=os.path.join(home, "dead_letter"),
    )
    csv_source = CsvSource(path=_env("CSV_FILE", sample_csv_path()))
    staging = StagingIOManagerResource(
        base_path=_env("STAGING_PATH", os.path.join(home, "staging"))
    )
    if env == "local":
        sink: object = SqlSink(
            url=_env("DB_URL", f"sqlite:///{os.path.join(home, 'es_mysql_pipeline.sqlite')}"),
            table=_env("DB_TABLE", "records"),
        )
    elif env == "mysql":
        sink = SqlSink(
            url=_env("DB_URL", "mysql+pymysql://root@127.0.0.1:3306/test"),
            password=dg.EnvVar("DB_PASSWORD") if os.environ.get("DB_PASSWORD") else None,
            table=_env("DB_TABLE", "records"),
            write_mode=_env("WRITE_MODE", "skip"),  # type: ignore[arg-type]
        )
    elif env == "file":
        sink = JsonlSink(directory=_env("OUTPUT_DIR", os.path.join(home, "out")))
    else:
        raise ValueError(f"{ENV_VAR}={env!r}: use local, mysql or file")
    return {"source": csv_source, "sink": sink, "settings": settings, "io_manager": staging}


DAILY = daily_partitions()
ASSETS = build_assets(DAILY)

records_job = dg.define_asset_job(
    "records_job",
    selection=dg.AssetSelection.assets(*ASSETS),
    partitions_def=DAILY,
    description="Fetch, transform and load one day's records (or a range, as one run).",
)

records_daily_schedule = dg.build_schedule_from_partitioned_job(
    records_job, name="records_daily_schedule", hour_of_day=0, minute_of_hour=15
)

defs = dg.Definitions(
    assets=ASSETS,
    jobs=[records_job],
    schedules=[records_daily_schedule],
    resources=resources_for(_env(ENV_VAR, "local")),
)
