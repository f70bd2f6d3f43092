"""Parallel runs on one table: six daily partitions as separate Dagster runs, three at a
time (each its own process, staging and dead-letter dirs), into one MySQL table; ids of
different days interleave in the primary key. Skip mode on an empty table, then upsert over
it: every run succeeds (a deadlock or lock wait is retried, never left failed), the table
equals the source, and the counts are exact (skip: all inserted; upsert: all updated)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from es_mysql_pipeline_tests.chaos import common
from es_mysql_pipeline_tests.chaos.conftest import CsvFactory

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.slow]

ROWS = 30_000
DAYS = [f"2024-01-0{d}" for d in range(1, 7)]


def _run_all(source: Path, table: str, mode: str, tmp_path: Path) -> list[dict[str, Any]]:
    def one(day: str) -> dict[str, Any]:
        spec = {
            "csv": str(source),
            "partition": day,
            "table": table,
            "mode": mode,
            "work": str(tmp_path / mode / day),
            "workers": 3,
            "batch_size": 500,
        }
        done = common.run(common.partition_command(spec), tmp_path / mode / f"{day}.log")
        out = common.last_json(done.stdout) if done.returncode == 0 else {}
        return {"day": day, "rc": done.returncode, "stderr": done.stderr[-400:], **out}

    with ThreadPoolExecutor(max_workers=3) as pool:
        return list(pool.map(one, DAYS))


@pytest.mark.parametrize("modes", [("skip", "upsert")], ids=["skip-then-upsert"])
def test_six_partitions_three_at_a_time_into_one_table(
    modes: tuple[str, str], csv_factory: CsvFactory, chaos_table: str, tmp_path: Path
) -> None:
    source = csv_factory(ROWS, 6, shuffle_ids=True)
    expected = common.expected_rows(source)
    per_day = {day: len(common.expected_rows(source, day)) for day in DAYS}
    failures: list[str] = []
    retries = 0
    comparison = None
    for mode in modes:
        results = _run_all(source, chaos_table, mode, tmp_path)
        for r in results:
            load = r.get("load", {})
            retries += int(load.get("retries", 0))
            want = (
                ("inserted", per_day[r["day"]])
                if mode == "skip"
                else ("updated", per_day[r["day"]])
            )
            if not r.get("success"):
                failures.append(f"{mode} {r['day']}: {r.get('error') or r['stderr']}")
            elif load.get(want[0]) != want[1] or r.get("checks_passed") is not True:
                failures.append(f"{mode} {r['day']}: {want[0]}={load.get(want[0])}, want {want[1]}")
        comparison = common.compare_table(chaos_table, expected)
        if not comparison.exact:
            failures.append(f"after {mode}: {comparison}")
    common.report(
        "parallel runs: 6 partitions, 3 at a time (skip, upsert)",
        2,
        comparison,
        retries,
        not failures,
    )
    assert not failures, "\n".join(failures)
