"""A refresh killed with ``kill -9`` at a random point leaves the table exactly as it was
(or, killed after its swap, exactly the new rows): readers polling it never see anything
else; the re-run swaps in exactly the new source and leaves no ``__new``/``__old``."""

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


def test_cli_refresh_killed_then_rerun_is_exact(
    csv_factory: CsvFactory, chaos_table: str, tmp_path: Path
) -> None:
    old_source = csv_factory(20_000, 6)
    new_source = csv_factory(common.kill_rows(), 6)
    old = common.expected_rows(old_source)
    new = common.expected_rows(new_source)
    new_table = f"{chaos_table}__new"
    failures: list[str] = []
    wheres: list[str] = []
    last = None
    n = common.trials()
    try:
        for trial in range(n):
            rng = random.Random(2000 + trial)
            common.drop_table(chaos_table)
            work = tmp_path / f"trial{trial}"
            first = common.run(
                common.cli_command(old_source, chaos_table, work / "a", mode="refresh"),
                work / "first",
            )
            assert first.returncode == 0, first.stderr[-2000:]
            assert common.compare_table(chaos_table, old).exact
            cmd = common.cli_command(
                new_source, chaos_table, work / "b", "--batch-size", "1000", mode="refresh"
            )
            proc = common.popen(cmd, work / "killed")
            # Killed once a random share of the new rows is in __new: by progress, not by a
            # time measured beforehand, so a machine whose load changes still kills mid-load.
            at = int(rng.uniform(0.0, 0.9) * len(new))
            counts = {common.row_count(chaos_table)}
            _wait_for(new_table, proc)
            into_new = 0
            while proc.poll() is None and into_new <= at:
                counts.add(common.row_count(chaos_table))
                into_new = common.row_count(new_table)
                time.sleep(0.01)
            killed = proc.poll() is None
            if killed:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
            time.sleep(0.5)
            label = f"trial {trial} (seed {2000 + trial}, at {at} rows, {into_new} in __new)"
            wheres.append(f"{into_new} rows in __new")
            if not killed:
                failures.append(f"{label}: the refresh ended before the kill")
                continue
            if not counts <= {len(old), len(new)}:
                failures.append(f"{label}: a reader saw {sorted(counts)} rows")
            kept = common.compare_table(chaos_table, old)
            if not kept.exact and not common.compare_table(chaos_table, new).exact:
                failures.append(f"{label}: the killed refresh left a mixed table: {kept}")
            rerun = common.run(cmd, work / "rerun")
            if rerun.returncode != 0:
                failures.append(f"{label}: re-run exit {rerun.returncode}: {rerun.stderr[-500:]}")
                continue
            last = common.compare_table(chaos_table, new)
            if not last.exact:
                failures.append(f"{label}: after the re-run: {last}")
            strays = [t for t in (new_table, f"{chaos_table}__old") if _exists(t)]
            if strays:
                failures.append(f"{label}: left behind: {strays}")
    finally:
        for t in (new_table, f"{chaos_table}__old"):
            common.drop_table(t)
    note = "killed with " + ", ".join(wheres)
    print(note)
    common.report("refresh killed: CLI kill -9", n, last, 0, not failures, note)
    assert not failures, "\n".join(failures)


def _wait_for(table: str, proc: object) -> float:
    """When ``table`` appeared (polled while ``proc`` runs)."""
    import subprocess

    assert isinstance(proc, subprocess.Popen)
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline and not _exists(table):
        time.sleep(0.005)
    return time.monotonic()


def _exists(table: str) -> bool:
    conn = common.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW TABLES LIKE %s", (table,))
            return cur.fetchone() is not None
    finally:
        conn.close()
