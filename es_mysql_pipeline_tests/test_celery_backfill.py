"""Issue 11 end to end on real services: a 6-partition backfill queued through the Dagster
daemon (PostgreSQL instance, run queue at 2), its steps on 2 celery workers (Redis broker,
celery's daemonic prefork pool), stages, dead letters and step logs on S3 (moto), rows in
MariaDB. Every row lands exactly once and the metrics sensor counts each run once."""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from es_mysql_pipeline.targets import SINK_TABLE_TAG, SINK_TAG, SOURCE_TAG
from es_mysql_pipeline_tests import celery_cluster
from es_mysql_pipeline_tests.conftest import need_module, need_service
from es_mysql_pipeline_tests.helpers import event_rows, table_rows, write_csv
from es_mysql_pipeline_tests.test_s3_staging import BUCKET, s3  # noqa: F401 (fixture)

pytestmark = [pytest.mark.slow, pytest.mark.integration]

DAYS = [f"2024-03-0{d}" for d in range(1, 7)]
ROWS_PER_DAY = 20
EXTRA = "the distributed extra: pip install -e '.[distributed]' (make provision)"


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for the instance, dropped afterwards."""
    for module in ("dagster_postgres", "dagster_celery", "dagster_aws", "psycopg2", "redis"):
        need_module(module, EXTRA)
    import psycopg2

    name = f"dagster_{uuid.uuid4().hex[:10]}"
    try:
        conn = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
    except Exception as exc:
        need_service(f"PostgreSQL not reachable at 127.0.0.1:5432: {exc.__class__.__name__}")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


@pytest.fixture
def redis_urls() -> Iterator[tuple[str, str]]:
    """Broker and result databases of the local Redis, emptied before and after."""
    redis = need_module("redis", EXTRA)
    first = random.randrange(2, 15)
    clients = [redis.Redis(host="127.0.0.1", port=6379, db=n) for n in (first, first + 1)]
    try:
        clients[0].ping()
    except Exception as exc:
        need_service(f"Redis not reachable at 127.0.0.1:6379: {exc.__class__.__name__}")
    for client in clients:
        client.flushdb()
    try:
        yield f"redis://127.0.0.1:6379/{first}", f"redis://127.0.0.1:6379/{first + 1}"
    finally:
        for client in clients:
            client.flushdb()


def test_backfill_through_daemon_and_celery_workers_loads_every_row_once(
    pg_database: str,
    redis_urls: tuple[str, str],
    s3: Any,  # noqa: F811 (the fixture imported above)
    mysql_url: str,
    mysql_table: str,
    pushgateway: Any,
    tmp_path: Path,
) -> None:
    rows = [r for i, day in enumerate(DAYS) for r in event_rows(ROWS_PER_DAY, day, i * 1000)]
    rows.append({**event_rows(1, DAYS[0], 999)[0], "id": ""})  # one dead letter
    csv_file = write_csv(tmp_path / "events.csv", rows)
    home = tmp_path / "dagster_home"
    celery_cluster.write_instance(home, max_runs=2, compute_log_bucket=True)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": "5432",
        "DAGSTER_PG_USER": "postgres",
        "DAGSTER_PG_PASSWORD": "unused-with-trust",
        "DAGSTER_PG_DB": pg_database,
        "DAGSTER_COMPUTE_LOG_BUCKET": BUCKET,
        "AWS_ENDPOINT_URL_S3": os.environ["FSSPEC_S3_ENDPOINT_URL"],
        "DAGSTER_CELERY_BROKER_URL": redis_urls[0],
        "DAGSTER_CELERY_BACKEND_URL": redis_urls[1],
        "ES_MYSQL_PIPELINE_ENV": "mysql",
        "ES_MYSQL_PIPELINE_DATA": f"s3://{BUCKET}/data",
        "CSV_FILE": csv_file,
        "CSV_TIMESTAMP_COLUMN": "ts",
        "DB_URL": mysql_url,
        "DB_TABLE": mysql_table,
        "PIPELINE_ID": f"scale-{uuid.uuid4().hex[:6]}",
        "PUSHGATEWAY_URL": pushgateway.url,
        "BACKFILL_PARTITIONS_PER_RUN": "1",
    }
    os.environ.update({k: env[k] for k in ("DAGSTER_PG_DB", "DAGSTER_PG_HOST")})
    for key in ("DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD"):
        os.environ[key] = env[key]
    os.environ["DAGSTER_COMPUTE_LOG_BUCKET"] = BUCKET
    os.environ["AWS_ENDPOINT_URL_S3"] = env["AWS_ENDPOINT_URL_S3"]
    try:
        instance = dg.DagsterInstance.from_config(str(home))  # creates the schema once
        instance.dispose()
        logs = tmp_path / "logs"
        with celery_cluster.cluster(env, logs, workers=2):
            celery_cluster.backfill(env, DAYS, logs)
            instance = dg.DagsterInstance.from_config(str(home))
            try:
                runs = celery_cluster.wait_for_runs(instance, len(DAYS), timeout=300)
                failed = [r.run_id for r in runs if r.status != dg.DagsterRunStatus.SUCCESS]
                assert not failed, _failures(instance, failed) + _logs(logs)
                counted = _wait_for_pushed_runs(pushgateway, env["PIPELINE_ID"], len(DAYS))
            finally:
                instance.dispose()
    finally:
        for key in (
            "DAGSTER_PG_DB",
            "DAGSTER_PG_HOST",
            "DAGSTER_PG_PORT",
            "DAGSTER_PG_USER",
            "DAGSTER_PG_PASSWORD",
            "DAGSTER_COMPUTE_LOG_BUCKET",
            "AWS_ENDPOINT_URL_S3",
        ):
            os.environ.pop(key, None)

    assert len(runs) == len(DAYS)
    assert sorted(r.tags["dagster/partition"] for r in runs) == DAYS
    for run in runs:  # launched for these targets; the per-table queue key is there
        assert run.tags[SOURCE_TAG] == f"csv:{csv_file}"
        assert run.tags[SINK_TAG].endswith(f"#{mysql_table}")
        assert run.tags[SINK_TABLE_TAG].endswith(f"#{mysql_table}")

    loaded = table_rows(mysql_url, mysql_table)
    expected = {r["id"] for r in rows if r["id"]}
    assert set(loaded) == expected and len(loaded) == len(DAYS) * ROWS_PER_DAY

    s3.invalidate_cache()
    keys = s3.find(BUCKET)
    assert any(k.startswith(f"{BUCKET}/data/staging/") for k in keys), keys
    assert any(k.startswith(f"{BUCKET}/data/dead_letter/") for k in keys), keys
    assert any(k.startswith(f"{BUCKET}/dagster-compute-logs/") for k in keys), keys

    assert sum(counted.values()) == len(DAYS), counted  # each run counted once
    assert counted.get("success") == len(DAYS), counted


def _pushed_runs(pushgateway: Any, pipeline_id: str) -> dict[str, float]:
    """``pipeline_runs_total`` of this pipeline as the sensor pushed it, by result."""
    counts: dict[str, float] = {}
    for line in pushgateway.metrics_text().splitlines():
        if line.startswith("pipeline_runs_total{") and f'pipeline_id="{pipeline_id}"' in line:
            result = line.split('result="', 1)[1].split('"', 1)[0]
            counts[result] = counts.get(result, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def _wait_for_pushed_runs(pushgateway: Any, pipeline_id: str, count: int) -> dict[str, float]:
    """The sensor ticks every 30 s: wait until it has pushed ``count`` runs (at most 120 s)."""
    import time

    deadline = time.monotonic() + 120
    counted = _pushed_runs(pushgateway, pipeline_id)
    while sum(counted.values()) < count and time.monotonic() < deadline:
        time.sleep(2)
        counted = _pushed_runs(pushgateway, pipeline_id)
    return counted


def _failures(instance: dg.DagsterInstance, run_ids: list[str]) -> str:
    kinds = {dg.DagsterEventType.RUN_FAILURE, dg.DagsterEventType.STEP_FAILURE}
    lines = []
    for run_id in run_ids[:2]:
        for entry in instance.all_logs(run_id, of_type=kinds):
            event = entry.dagster_event
            error = getattr(event.event_specific_data, "error", None) if event else None
            lines.append(f"{run_id[:8]} {entry.message} {error.to_string() if error else ''}")
    return "\n".join(lines) + "\n"


def _logs(logs: Path) -> str:
    return "\n".join(
        f"== {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(logs.glob("*.log"))
    )
