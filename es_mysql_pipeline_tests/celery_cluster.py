"""A throwaway cluster on one machine: the deploy instance (PostgreSQL, queued runs), the
Dagster daemon serving ``es_mysql_pipeline.jobs``, and celery workers on a Redis broker.

Used by ``test_celery_backfill.py`` and ``make scale-demo``. Every process is started in
its own session and stopped by its own id.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "dagster.yaml"
BIN = Path(sys.executable).parent
DONE = ("SUCCESS", "FAILURE", "CANCELED")


def write_instance(home: Path, max_runs: int, compute_log_bucket: bool) -> None:
    """deploy/dagster.yaml with the queue at ``max_runs``. All runs here load one table, so
    the per-table pool limit (1) is dropped to let ``max_runs`` of them load at once; local
    compute logs unless ``compute_log_bucket`` (then on S3, as shipped)."""
    config: dict[str, Any] = yaml.safe_load(DEPLOY.read_text(encoding="utf-8"))
    config["concurrency"]["runs"]["max_concurrent_runs"] = max_runs
    config["concurrency"].pop("pools")
    if not compute_log_bucket:
        config.pop("compute_logs")
    config["run_monitoring"] = {"enabled": False}
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")


def _start(args: list[str], env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = open(log, "wb")
    env = {**env, "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"}  # dagster-celery runs `celery`
    return subprocess.Popen(
        args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process we started and its children (its own session), by its id."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@contextmanager
def cluster(env: Mapping[str, str], logs: Path, workers: int) -> Iterator[list[Any]]:
    """The daemon and ``workers`` celery workers (one task at a time each, celery's default
    prefork pool) running until the block ends."""
    logs.mkdir(parents=True, exist_ok=True)
    celery_yaml = logs / "celery.yaml"
    celery_yaml.write_text(
        yaml.safe_dump(
            {
                "execution": {
                    "config": {
                        "broker": env["DAGSTER_CELERY_BROKER_URL"],
                        "backend": env["DAGSTER_CELERY_BACKEND_URL"],
                    }
                }
            }
        ),
        encoding="utf-8",
    )
    procs = []
    try:
        for i in range(workers):
            procs.append(
                _start(
                    [
                        str(BIN / "dagster-celery"),
                        "worker",
                        "start",
                        "-A",
                        "dagster_celery.app",
                        "-y",
                        str(celery_yaml),
                        "-n",
                        f"w{i}-{os.getpid()}@%h",
                        "--",
                        "--concurrency",
                        "1",
                    ],
                    env,
                    logs / f"worker{i}.log",
                )
            )
        procs.append(
            _start(
                [str(BIN / "dagster-daemon"), "run", "-m", "es_mysql_pipeline.jobs"],
                env,
                logs / "daemon.log",
            )
        )
        yield procs
    finally:
        for proc in reversed(procs):
            stop(proc)


def backfill(env: Mapping[str, str], partitions: list[str], logs: Path) -> None:
    """``dagster job backfill``: one queued run per partition, for the daemon to start."""
    subprocess.run(
        [
            str(BIN / "dagster"),
            "job",
            "backfill",
            "-m",
            "es_mysql_pipeline.jobs",
            "-j",
            "records_job",
            "--partitions",
            ",".join(partitions),
            "--noprompt",
        ],
        env=dict(env),
        check=True,
        stdout=open(logs / "backfill.log", "wb"),
        stderr=subprocess.STDOUT,
        timeout=180,
    )


def wait_for_runs(instance: Any, count: int, timeout: float) -> list[Any]:
    """The runs once ``count`` of them have finished; raises TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        runs = instance.get_runs()
        if len(runs) >= count and all(r.status.value in DONE for r in runs):
            return list(runs)
        if time.monotonic() > deadline:
            states = sorted(r.status.value for r in runs)
            raise TimeoutError(f"{len(runs)} run(s) after {timeout}s: {states}")
        time.sleep(1)


def run_seconds(instance: Any, runs: list[Any]) -> float:
    """From the first run's start to the last run's end (queue time excluded)."""
    records = [instance.get_run_record_by_id(r.run_id) for r in runs]
    starts = [r.start_time for r in records if r and r.start_time]
    ends = [r.end_time for r in records if r and r.end_time]
    return max(ends) - min(starts)
