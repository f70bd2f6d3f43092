"""``make scale-demo``: the same 6-partition backfill through the daemon's queue (2 runs at
once) onto 1, then 2 celery workers; prints rows/s for each and the ratio.

Uses the local services of ``make provision``: PostgreSQL (instance), Redis (broker),
MariaDB (sink). Stages stay on local disk: one machine. On a 2-core machine the second
worker competes with the first for the CPU, so expect well under 2x.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import uuid
from pathlib import Path

import dagster as dg
import psycopg2
import redis
import sqlalchemy as sa

from es_mysql_pipeline_tests import celery_cluster
from es_mysql_pipeline_tests.helpers import event_rows, write_csv

DAYS = [f"2024-03-0{d}" for d in range(1, 7)]
MYSQL_URL = os.environ.get("TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")


def one_round(workers: int, rows_per_day: int, tmp: Path) -> tuple[int, float]:
    """(rows loaded, seconds from the first run's start to the last run's end)."""
    db = f"dagster_demo_{uuid.uuid4().hex[:8]}"
    table = f"scale_demo_{uuid.uuid4().hex[:8]}"
    pg = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
    pg.autocommit = True
    with pg.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{db}"')
    broker = redis.Redis(host="127.0.0.1", port=6379, db=14)
    broker.flushdb()
    work = tmp / f"w{workers}"
    rows = [r for i, d in enumerate(DAYS) for r in event_rows(rows_per_day, d, i * rows_per_day)]
    csv_file = write_csv(tmp / "events.csv", rows)
    home = work / "dagster_home"
    celery_cluster.write_instance(home, max_runs=2, compute_log_bucket=False)
    pg_env = {
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": "5432",
        "DAGSTER_PG_USER": "postgres",
        "DAGSTER_PG_PASSWORD": "unused-with-trust",
        "DAGSTER_PG_DB": db,
    }
    env = {
        **os.environ,
        **pg_env,
        "DAGSTER_HOME": str(home),
        "DAGSTER_CELERY_BROKER_URL": "redis://127.0.0.1:6379/14",
        "DAGSTER_CELERY_BACKEND_URL": "redis://127.0.0.1:6379/15",
        "ES_MYSQL_PIPELINE_ENV": "mysql",
        "ES_MYSQL_PIPELINE_DATA": str(work / "data"),
        "CSV_FILE": csv_file,
        "CSV_TIMESTAMP_COLUMN": "ts",
        "DB_URL": MYSQL_URL,
        "DB_TABLE": table,
        "PUSHGATEWAY_URL": "",
    }
    os.environ.update(pg_env)
    engine = sa.create_engine(MYSQL_URL)
    try:
        dg.DagsterInstance.from_config(str(home)).dispose()
        with celery_cluster.cluster(env, work / "logs", workers=workers):
            celery_cluster.backfill(env, DAYS, work / "logs")
            instance = dg.DagsterInstance.from_config(str(home))
            try:
                runs = celery_cluster.wait_for_runs(instance, len(DAYS), timeout=900)
                bad = [r.run_id for r in runs if r.status != dg.DagsterRunStatus.SUCCESS]
                if bad:
                    raise SystemExit(f"{len(bad)} run(s) failed; logs in {work / 'logs'}")
                seconds = celery_cluster.run_seconds(instance, runs)
            finally:
                instance.dispose()
        with engine.connect() as conn:
            loaded = int(conn.execute(sa.text(f"SELECT COUNT(*) FROM `{table}`")).scalar_one())
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS `{table}`"))
        engine.dispose()
        for key in pg_env:
            os.environ.pop(key, None)
        broker.flushdb()
        with pg.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        pg.close()
    return loaded, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows-per-day", type=int, default=5000)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="scale-demo-") as tmp:
        for workers in (1, 2):
            loaded, seconds = one_round(workers, args.rows_per_day, Path(tmp))
            results[workers] = loaded / seconds
            print(
                f"{workers} celery worker(s): {loaded} rows in {seconds:.1f} s "
                f"= {results[workers]:.0f} rows/s",
                flush=True,
            )
    print(f"2 workers / 1 worker: {results[2] / results[1]:.2f}x")


if __name__ == "__main__":
    main()
