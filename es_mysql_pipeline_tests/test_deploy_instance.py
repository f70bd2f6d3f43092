"""deploy/dagster.yaml as it ships: PostgreSQL storage, queued runs, compute logs on S3."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from es_mysql_pipeline_tests.conftest import need_module, need_service
from es_mysql_pipeline_tests.helpers import make_resources
from es_mysql_pipeline_tests.test_s3_staging import BUCKET, s3  # noqa: F401 (fixture)

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "dagster.yaml"
EXTRA = "the distributed extra: pip install -e '.[distributed]' (make provision)"
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "test"}


@pytest.fixture
def pg_env(monkeypatch: pytest.MonkeyPatch) -> None:
    psycopg2 = need_module("psycopg2", EXTRA)
    try:
        psycopg2.connect(connect_timeout=5, **PG).close()
    except Exception as exc:
        need_service(f"PostgreSQL not reachable at 127.0.0.1:5432: {exc.__class__.__name__}")
    for name, value in {
        "DAGSTER_PG_HOST": PG["host"],
        "DAGSTER_PG_PORT": str(PG["port"]),
        "DAGSTER_PG_USER": PG["user"],
        "DAGSTER_PG_PASSWORD": "unused-with-trust",
        "DAGSTER_PG_DB": PG["dbname"],
        "DAGSTER_COMPUTE_LOG_BUCKET": BUCKET,
    }.items():
        monkeypatch.setenv(name, value)


def test_deploy_instance_stores_a_partition_run_in_postgres(
    pg_env: None,
    s3: Any,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    need_module("dagster_postgres", EXTRA)
    need_module("dagster_aws", EXTRA)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3.endpoint_url)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DEPLOY, home / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert type(instance.compute_log_manager).__name__ == "S3ComputeLogManager"
        concurrency = instance.get_concurrency_config()
        assert concurrency.run_queue_config.max_concurrent_runs == 4
        assert concurrency.pool_config.default_pool_limit == 1  # one load per table at once

        tag = uuid.uuid4().hex
        resources = make_resources(str(tmp_path))
        result = _run(resources, instance, tag)
        assert result.success
        run_id = result.run_id
    finally:
        instance.dispose()

    again = dg.DagsterInstance.from_config(str(home))  # another process would see the same
    try:
        run = again.get_run_by_id(run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
        assert run.tags["test_tag"] == tag
        mats = again.fetch_materializations(dg.AssetKey("loaded_records"), limit=100).records
        assert any(m.run_id == run_id for m in mats)
    finally:
        again.dispose()


def _run(resources: dict[str, Any], instance: dg.DagsterInstance, tag: str) -> Any:
    from es_mysql_pipeline.assets import build_assets
    from es_mysql_pipeline.assets.partitions import daily_partitions

    job = dg.Definitions(
        assets=build_assets(daily_partitions()),
        jobs=[dg.define_asset_job("j", partitions_def=daily_partitions())],
        resources=resources,
    ).resolve_job_def("j")
    return job.execute_in_process(
        partition_key="2024-01-01", instance=instance, tags={"test_tag": tag}
    )
