"""A run killed with ``kill -9`` during its delete phase: the rows it did not get to are
deleted by the re-run, which then holds exactly the source's rows."""

from __future__ import annotations

import csv
import os
import signal
import time
from pathlib import Path

import pytest

from es_mysql_pipeline_tests.chaos import common
from es_mysql_pipeline_tests.chaos.conftest import CsvFactory

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.slow]


def _without_every_fifth(source: Path, out: Path) -> Path:
    with (
        open(source, encoding="utf-8", newline="") as fh,
        open(out, "w", encoding="utf-8", newline="") as dst,
    ):
        reader = csv.reader(fh)
        writer = csv.writer(dst, lineterminator="\n")
        writer.writerow(next(reader))
        for i, row in enumerate(reader):
            if i % 5:
                writer.writerow(row)
    return out


def test_cli_killed_in_the_delete_phase_then_rerun_is_exact(
    csv_factory: CsvFactory, chaos_table: str, tmp_path: Path
) -> None:
    rows = common.kill_rows()
    full = csv_factory(rows, 6)
    kept = _without_every_fifth(full, tmp_path / "kept.csv")
    expected = common.expected_rows(kept)
    failures: list[str] = []
    wheres: list[str] = []
    last = None
    n = common.trials()
    for trial in range(n):
        common.drop_table(chaos_table)
        work = tmp_path / f"trial{trial}"
        first = common.run(common.cli_command(full, chaos_table, work / "a"), work / "first")
        assert first.returncode == 0, first.stderr[-2000:]
        cmd = common.cli_command(kept, chaos_table, work / "b", "--deletes", "hard")
        proc = common.popen(cmd, work / "killed")
        started = time.monotonic()
        at_kill = rows
        while proc.poll() is None and time.monotonic() - started < 300:
            at_kill = common.row_count(chaos_table)
            if at_kill < rows:  # the first chunk of deletes has committed
                os.kill(proc.pid, signal.SIGKILL)
                break
        proc.wait()
        time.sleep(0.5)
        at_kill = common.row_count(chaos_table)
        wheres.append(f"{rows - at_kill} of {rows - len(expected)} deleted")
        label = f"trial {trial} ({wheres[-1]} at the kill)"
        if not len(expected) < at_kill < rows:
            failures.append(f"{label}: the kill did not land in the delete phase")
        rerun = common.run(cmd, work / "rerun")
        if rerun.returncode != 0:
            failures.append(f"{label}: re-run exit {rerun.returncode}: {rerun.stderr[-500:]}")
            continue
        last = common.compare_table(chaos_table, expected)
        if not last.exact:
            failures.append(f"{label}: after the re-run: {last}")
        deleted = common.summary_value(rerun.stdout, "deleted")
        if deleted != at_kill - len(expected):
            failures.append(f"{label}: the re-run counted {deleted} deleted")
    note = "killed with " + ", ".join(wheres)
    print(note)
    common.report("delete phase killed: CLI kill -9", n, last, 0, not failures, note)
    assert not failures, "\n".join(failures)
