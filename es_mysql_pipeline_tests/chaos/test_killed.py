"""Killed mid-load: ``kill -9`` of the CLI and of a Dagster run at random points of a load.

After each kill the staged files are checked (a sidecar only ever describes a complete
data file), then a re-run must leave the table equal to the source: every row once, every
field byte-equal, and the re-run's counts exact (inserted = missing rows, skipped = rows
already there). ``CHAOS_TRIALS`` trials (default 2) with seeds 1000, 1001, ...
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest

from es_mysql_pipeline_tests.chaos import common
from es_mysql_pipeline_tests.chaos.conftest import CsvFactory

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.slow]

DAY = "2024-01-01"


def _kill_when(
    proc: object,
    table: str,
    rng: random.Random,
    rows: int,
    est_seconds: float | None,
    how: str | None = None,
) -> str:
    """Wait for a random point of the load, then SIGKILL; returns where it was killed.

    A kill by time needs the run's duration on this machine (``est_seconds``, measured by
    an earlier trial's re-run); without it the kill is by rows, which is always mid-load.
    """
    import subprocess

    assert isinstance(proc, subprocess.Popen)
    how = how or ("rows" if est_seconds is None else rng.choice(["rows", "time"]))
    target_rows = rng.randint(1, int(rows * 0.8))
    target_time = rng.uniform(0.5, 0.5 * (est_seconds or 1.0))  # fetch and transform too
    started = time.monotonic()
    while proc.poll() is None:
        elapsed = time.monotonic() - started
        if how == "time" and elapsed >= target_time:
            break
        if how == "rows" and common.row_count(table) >= target_rows:
            break
        if elapsed > 300:
            break
        time.sleep(0.01)  # a 50,000-row load takes a few tenths of a second
    if proc.poll() is not None:
        return f"finished before the kill ({how})"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    where = f"{time.monotonic() - started:.1f}s" if how == "time" else f">={target_rows} rows"
    return f"killed at {where}"


def test_cli_killed_mid_load_then_rerun_is_exact(
    csv_factory: CsvFactory, chaos_table: str, tmp_path: Path
) -> None:
    rows = common.kill_rows()
    source = csv_factory(rows, 6)
    expected = common.expected_rows(source)
    est: float | None = None
    failures: list[str] = []
    last = None
    n = common.trials()
    for trial in range(n):
        rng = random.Random(1000 + trial)
        common.drop_table(chaos_table)
        work = tmp_path / f"trial{trial}"
        cmd = common.cli_command(source, chaos_table, work, "--batch-size", "1000")
        proc = common.popen(cmd, work / "killed")
        where = _kill_when(proc, chaos_table, rng, rows, est)
        time.sleep(1.0)  # a COMMIT already on the wire lands before we count
        at_kill = common.row_count(chaos_table)
        problems = common.check_stages(work / "staging")
        rerun = common.run(cmd, work / "rerun")
        est = rerun.seconds
        last = common.compare_table(chaos_table, expected)
        label = f"trial {trial} (seed {1000 + trial}, {where}, {at_kill} rows at kill)"
        if not where.startswith("killed"):
            failures.append(f"{label}: the run ended before the kill")
        if rerun.returncode != 0:
            failures.append(f"{label}: re-run exit {rerun.returncode}: {rerun.stderr[-500:]}")
            continue
        inserted = common.summary_value(rerun.stdout, "inserted")
        skipped = common.summary_value(rerun.stdout, "skipped (duplicates)")
        if problems:
            failures.append(f"{label}: stages taken as complete: {problems}")
        if not last.exact:
            failures.append(f"{label}: table differs from the source: {last}")
        if (inserted, skipped) != (rows - at_kill, at_kill):
            failures.append(
                f"{label}: re-run counted inserted={inserted} skipped={skipped}, "
                f"expected {rows - at_kill} and {at_kill}"
            )
    common.report("killed mid-load: CLI kill -9", n, last, 0, not failures)
    assert not failures, "\n".join(failures)


def test_dagster_run_killed_mid_load_then_resume_and_rerun(
    csv_factory: CsvFactory, chaos_table: str, tmp_path: Path
) -> None:
    rows = common.kill_rows()
    source = csv_factory(rows, 1)  # every row in partition 2024-01-01
    expected = common.expected_rows(source, DAY)
    spec = {
        "csv": str(source),
        "partition": DAY,
        "table": chaos_table,
        "work": str(tmp_path / "run"),
        "batch_size": 1000,
    }
    rng = random.Random(2000)
    proc = common.popen(common.partition_command(spec), tmp_path / "killed")
    where = _kill_when(proc, chaos_table, rng, rows, None, how="rows")
    assert where.startswith("killed"), where
    time.sleep(1.0)
    problems = common.check_stages(tmp_path / "run" / "staging")
    assert not problems, problems

    # Resume only the load from what the killed run staged: a stage without its sidecar
    # must be refused with a clear message, a complete one must load exactly.
    clean_meta = tmp_path / "run" / "staging" / "clean_records" / f"{DAY}.stage.meta.json"
    resume = common.run(
        common.partition_command({**spec, "select": ["loaded_records"]}), tmp_path / "resume"
    )
    result = common.last_json(resume.stdout)
    if clean_meta.exists():
        assert result["success"], result
        assert result["checks_passed"] is True
        assert common.compare_table(chaos_table, expected, DAY).exact
    else:
        assert not result["success"]
        assert "missing or incomplete" in result["error"], result

    rerun = common.run(common.partition_command(spec), tmp_path / "rerun")
    result = common.last_json(rerun.stdout)
    comparison = common.compare_table(chaos_table, expected, DAY)
    load = result["load"]
    balanced = load.get("processed") == sum(
        load.get(k, -1) for k in ("inserted", "updated", "skipped", "failed")
    )
    ok = result["success"] and comparison.exact and balanced and result["checks_passed"]
    common.report(
        "killed mid-load: Dagster run kill -9",
        1,
        comparison,
        load.get("retries", "-"),
        bool(ok),
        where,
    )
    assert result["success"], result
    assert comparison.exact, str(comparison)
    assert balanced, load
    assert result["checks_passed"] is True
