"""Runs per minute of a small partition: what a pipeline's executor costs per run.

Two pipelines of one ``defs.yaml`` load the same day of the bundled sample (about 600 rows)
into SQLite, one with the in-process executor (the default) and one with Dagster's
multiprocess executor (a process per step). Each run is launched the way a schedule's run is
executed, with ``dagster job execute`` in a fresh process, and the runs of the two pipelines
are interleaved. Run it alone with ``python -m benchmarks.runs_per_minute``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFS = """\
type: es_mysql_pipeline.EsMysqlPipelines
attributes:
  data_dir: {data}
  defaults:
    partitions: {{type: daily, start: "2024-01-01", end: "2024-01-06"}}
    write_mode: upsert
  pipelines:
    - name: small_in_process
      source: {{path: "{csv}"}}
      sink: {{sqlite: "{data}/in_process.sqlite", table: records}}
      executor: in_process
    - name: small_multiprocess
      source: {{path: "{csv}"}}
      sink: {{sqlite: "{data}/multiprocess.sqlite", table: records}}
      executor: multiprocess
"""
JOBS = ("small_in_process_job", "small_multiprocess_job")


def one_run(job: str, env: dict[str, str], day: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable, "-m", "dagster", "job", "execute",
            "-m", "es_mysql_pipeline.definitions", "-j", job,
            "--tags", json.dumps({"dagster/partition": day}),
        ],
        env=env, check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    return time.perf_counter() - started


def report(runs: int = 3) -> str:
    """A small table: seconds per run and runs per minute of each executor, and the ratio."""
    from es_mysql_pipeline.definitions import sample_csv_path  # Dagster: only when run

    with tempfile.TemporaryDirectory(prefix="bench-runs-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        defs = Path(tmp) / "defs.yaml"
        defs.write_text(DEFS.format(data=data, csv=sample_csv_path()), encoding="utf-8")
        home = Path(tmp) / "home"
        home.mkdir()
        env = {
            **os.environ,
            "ES_MYSQL_PIPELINE_DEFS": str(defs),
            "DAGSTER_HOME": str(home),
        }
        env.pop("ES_MYSQL_PIPELINE_ENV", None)
        seconds: dict[str, list[float]] = {job: [] for job in JOBS}
        for n in range(runs):
            for job in JOBS:
                print(f"[run {n + 1}/{runs}] {job} ...", file=sys.stderr)
                seconds[job].append(one_run(job, env, f"2024-01-0{n % 5 + 1}"))
    lines = [f"{'executor (one ~600-row day)':<30} {'s/run':>7} {'runs/min':>9} {'ratio':>6}"]
    base = statistics.median(seconds[JOBS[1]])
    for job in JOBS:
        median = statistics.median(seconds[job])
        name = job.removeprefix("small_").removesuffix("_job")
        lines.append(f"{name:<30} {median:>7.2f} {60 / median:>9.1f} {base / median:>6.2f}")
    lines.append("ratio = runs/min ÷ the multiprocess executor's (same machine, same run)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--runs", type=int, default=3)
    print(report(ap.parse_args(argv).runs))


if __name__ == "__main__":
    main()
