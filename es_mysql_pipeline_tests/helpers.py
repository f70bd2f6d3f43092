"""Helpers shared by tests: build resources in a temp dir, run the asset job, read tables."""

from __future__ import annotations

import csv
import os
from typing import Any

import dagster as dg
import sqlalchemy as sa

from es_mysql_pipeline.assets import build_assets
from es_mysql_pipeline.assets.partitions import daily_partitions
from es_mysql_pipeline.definitions import sample_csv_path
from es_mysql_pipeline.io_manager import StagingIOManagerResource
from es_mysql_pipeline.resources.settings import PipelineSettings
from es_mysql_pipeline.resources.sinks import SqlSink
from es_mysql_pipeline.resources.sources import FileSource

SAMPLE = sample_csv_path()


def make_resources(
    tmp: str, sink: Any = None, source: Any = None, **settings: Any
) -> dict[str, Any]:
    return {
        "source": source or FileSource(path=SAMPLE),
        "sink": sink or SqlSink(url=f"sqlite:///{os.path.join(tmp, 'db.sqlite')}"),
        "settings": PipelineSettings(dead_letter_dir=os.path.join(tmp, "dead_letter"), **settings),
        "io_manager": StagingIOManagerResource(base_path=os.path.join(tmp, "staging")),
    }


def run_partitions(
    resources: dict[str, Any], first: str, last: str | None = None
) -> dg.ExecuteInProcessResult:
    """Materialize the partitioned assets for one day or a range of days as one run."""
    assets = build_assets(daily_partitions())
    job = dg.Definitions(
        assets=assets,
        jobs=[dg.define_asset_job("j", partitions_def=daily_partitions())],
        resources=resources,
    ).resolve_job_def("j")
    if last is None:
        return job.execute_in_process(partition_key=first, raise_on_error=False)
    return job.execute_in_process(
        tags={
            "dagster/asset_partition_range_start": first,
            "dagster/asset_partition_range_end": last,
        },
        raise_on_error=False,
    )


def run_unpartitioned(resources: dict[str, Any]) -> dg.ExecuteInProcessResult:
    return dg.materialize(build_assets(None), resources=resources, raise_on_error=False)


def metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    for event in result.get_asset_materialization_events():
        if event.asset_key is not None and event.asset_key.path[-1] == asset:
            return {k: v.value for k, v in event.materialization.metadata.items()}
    raise AssertionError(f"no materialization of {asset}")


def partition_metadata(
    result: dg.ExecuteInProcessResult, asset: str
) -> dict[str | None, dict[str, Any]]:
    """Each materialization's metadata of ``asset``, by partition key (``None``: unpartitioned)."""
    return {
        event.materialization.partition: {
            k: v.value for k, v in event.materialization.metadata.items()
        }
        for event in result.get_asset_materialization_events()
        if event.asset_key is not None and event.asset_key.path[-1] == asset
    }


def table_rows(url: str, table: str) -> dict[str, dict[str, Any]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            t = sa.Table(table, sa.MetaData(), autoload_with=conn)
            key = "_id" if "_id" in t.c else "id"  # an Elasticsearch document's id, or the data's
            return {str(r._mapping[key]): dict(r._mapping) for r in conn.execute(sa.select(t))}
    finally:
        engine.dispose()


def table_columns(url: str, table: str) -> dict[str, str]:
    """Column name → SQL type as the server reports it, upper case."""
    engine = sa.create_engine(url)
    try:
        return {c["name"]: str(c["type"]).upper() for c in sa.inspect(engine).get_columns(table)}
    finally:
        engine.dispose()


def sample_rows() -> list[dict[str, str]]:
    """The bundled CSV parsed independently of the pipeline (the expected contents)."""
    with open(SAMPLE, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


#: The columns of an ordinary application-events export: the time is called ``ts``.
EVENT_COLUMNS = ["id", "ts", "level", "service", "message", "latency_ms", "user_id"]


def event_rows(
    n: int, day: str = "2024-03-01", start: int = 0, extra: dict[str, str] | None = None
) -> list[dict[str, str]]:
    """``n`` events on ``day`` shaped like users' data (not our sample), ids from ``start``."""
    rows = []
    for i in range(start, start + n):
        row = {
            "id": f"ev-{i}",
            "ts": f"{day}T{(i // 3600) % 24:02d}:{(i // 60) % 60:02d}:{i % 60:02d}.{i % 1000:03d}Z",
            "level": ("info", "warn", "error")[i % 3],
            "service": f"svc-{i % 7}",
            "message": f"request {i} done",
            "latency_ms": str(i % 997),
            "user_id": str(10_000 + i % 313),
        }
        for key, value in (extra or {}).items():
            row[key] = value.format(i=i)
        rows.append(row)
    return rows


def write_csv(path: str | os.PathLike[str], rows: list[dict[str, str]]) -> str:
    """Write ``rows`` with a header of every key seen, in first-seen order."""
    header: dict[str, None] = {}
    for row in rows:
        header.update(dict.fromkeys(row))
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(header), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return str(path)
