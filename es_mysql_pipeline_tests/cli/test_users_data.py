"""Users' data through the CLI into real MariaDB: other time-column names, no time column,
fields that appear on later days, under each schema contract (issue 10)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from es_mysql_pipeline_tests.cli.test_main import assert_one_line_error, cli
from es_mysql_pipeline_tests.helpers import event_rows, table_rows, write_csv
from es_mysql_pipeline_tests.helpers import table_columns as columns

pytestmark = pytest.mark.integration

N = 5000


def mysql_args(url: str, table: str, *extra: str) -> list[str]:
    db = sa.engine.make_url(url)
    return [
        "--sink_type",
        "mysql",
        "--db_host",
        db.host or "127.0.0.1",
        "--db_port",
        str(db.port or 3306),
        "--db_user",
        db.username or "root",
        "--db_name",
        db.database or "test",
        "--db_table",
        table,
        "--no-progress",
        *extra,
    ]


def run(csv_path: str, url: str, table: str, tmp: Path, *extra: str):
    return cli(
        "--source_type",
        "csv",
        "--csv_file",
        csv_path,
        "--dead-letter-dir",
        str(tmp / "dl"),
        *mysql_args(url, table, *extra),
    )


def summary(stdout: str) -> dict[str, str]:
    out = {}
    for line in stdout.splitlines()[1:]:
        key, _, value = line.strip().partition("  ")
        out[key.strip()] = value.strip()
    return out


def test_a_csv_whose_time_column_is_ts_loads_and_reruns_exactly(
    mysql_url: str, mysql_table: str, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "events.csv", event_rows(N))
    first = run(path, mysql_url, mysql_table, tmp_path)
    assert first.returncode == 0, first.stderr
    s = summary(first.stdout)
    assert s["time field"] == "ts (detected)"
    assert (s["processed"], s["inserted"], s["failed"]) == (str(N), str(N), "0")
    rows = table_rows(mysql_url, mysql_table)
    assert len(rows) == N
    # the time field keeps its name, as a UTC DATETIME; no column of another name appears
    assert str(rows["ev-3661"]["ts"]) == "2024-03-01 01:01:01.661000"
    assert rows["ev-7"]["message"] == "request 7 done" and "timestamp" not in rows["ev-7"]
    again = run(path, mysql_url, mysql_table, tmp_path)
    assert again.returncode == 0, again.stderr
    s = summary(again.stdout)
    assert (s["inserted"], s["skipped (duplicates)"]) == ("0", str(N))
    assert len(table_rows(mysql_url, mysql_table)) == N


def test_a_csv_with_no_time_column_loads_in_a_full_run(
    mysql_url: str, mysql_table: str, tmp_path: Path
) -> None:
    rows = [{k: v for k, v in r.items() if k != "ts"} for r in event_rows(N)]
    path = write_csv(tmp_path / "no_time.csv", rows)
    proc = run(path, mysql_url, mysql_table, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert summary(proc.stdout)["time field"] == "none"
    assert len(table_rows(mysql_url, mysql_table)) == N
    assert "timestamp" not in columns(mysql_url, mysql_table)


def test_a_windowed_run_without_a_time_field_fails_at_once(
    mysql_url: str, mysql_table: str, tmp_path: Path
) -> None:
    rows = [{k: v for k, v in r.items() if k != "ts"} for r in event_rows(50)]
    path = write_csv(tmp_path / "no_time.csv", rows)
    proc = run(
        path, mysql_url, mysql_table, tmp_path, "--start", "2024-03-01", "--end", "2024-03-02"
    )
    assert_one_line_error(proc, 2, "--timestamp_column")
    assert "no time field" in proc.stderr
    assert not (tmp_path / "dl").exists()


def test_timestamp_column_none_keeps_the_field_as_data(
    mysql_url: str, mysql_table: str, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "events.csv", event_rows(100))
    proc = run(path, mysql_url, mysql_table, tmp_path, "--timestamp_column", "none")
    assert proc.returncode == 0, proc.stderr
    cols = columns(mysql_url, mysql_table)
    assert "timestamp" not in cols and "ts" in cols
    assert table_rows(mysql_url, mysql_table)["ev-1"]["ts"] == "2024-03-01T00:00:01.001Z"


def test_jsonl_records_without_their_time_load_with_none(
    mysql_url: str, mysql_table: str, tmp_path: Path
) -> None:
    path = tmp_path / "events.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for i, row in enumerate(event_rows(3000)):
            row["event_time"] = row.pop("ts")
            if i % 10 == 0:
                del row["event_time"]
            fh.write(json.dumps(row) + "\n")
    proc = run(str(path), mysql_url, mysql_table, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert summary(proc.stdout)["time field"] == "event_time (detected)"
    rows = table_rows(mysql_url, mysql_table)
    assert len(rows) == 3000
    assert rows["ev-10"]["event_time"] is None
    assert str(rows["ev-11"]["event_time"]) == "2024-03-01 00:00:11.011000"


def day_two(tmp: Path) -> str:
    """Day 2 of the export: two new fields, and a message longer than a TEXT column holds."""
    rows = event_rows(N, day="2024-03-02", start=N, extra={"region": "eu-{i}", "trace_id": "t{i}"})
    rows[10]["message"] = "é" * 40_000  # 80,000 bytes: MEDIUMTEXT
    return write_csv(tmp / "day2.csv", rows)


def test_evolve_adds_new_fields_and_widens_text(
    mysql_url: str, mysql_table: str, tmp_path: Path
) -> None:
    day1 = write_csv(tmp_path / "day1.csv", event_rows(N))
    assert run(day1, mysql_url, mysql_table, tmp_path).returncode == 0
    assert columns(mysql_url, mysql_table)["message"] == "TEXT"
    proc = run(day_two(tmp_path), mysql_url, mysql_table, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert summary(proc.stdout)["schema changes"] == "2 columns added, 1 widened"
    cols = columns(mysql_url, mysql_table)
    assert cols["message"] == "MEDIUMTEXT" and "region" in cols and "trace_id" in cols
    rows = table_rows(mysql_url, mysql_table)
    assert len(rows) == 2 * N
    assert rows[f"ev-{N + 10}"]["message"] == "é" * 40_000
    assert (rows[f"ev-{N + 3}"]["region"], rows[f"ev-{N + 3}"]["trace_id"]) == (
        f"eu-{N + 3}",
        f"t{N + 3}",
    )
    assert rows["ev-3"]["region"] is None  # day 1 rows keep their values, new columns empty


def test_freeze_refuses_new_fields_in_one_line(
    mysql_url: str, mysql_table: str, tmp_path: Path
) -> None:
    day1 = write_csv(tmp_path / "day1.csv", event_rows(N))
    assert run(day1, mysql_url, mysql_table, tmp_path).returncode == 0
    proc = run(day_two(tmp_path), mysql_url, mysql_table, tmp_path, "--schema-contract", "freeze")
    assert_one_line_error(proc, 2, "column 'region' is missing")
    assert "column 'message'" in proc.stderr and "--schema-contract evolve" in proc.stderr
    assert len(table_rows(mysql_url, mysql_table)) == N
    assert "region" not in columns(mysql_url, mysql_table)


def test_discard_leaves_new_fields_out_and_counts_them(
    mysql_url: str, mysql_table: str, tmp_path: Path
) -> None:
    day1 = write_csv(tmp_path / "day1.csv", event_rows(N))
    assert run(day1, mysql_url, mysql_table, tmp_path).returncode == 0
    before = columns(mysql_url, mysql_table)
    proc = run(day_two(tmp_path), mysql_url, mysql_table, tmp_path, "--schema-contract", "discard")
    assert proc.returncode == 0, proc.stderr
    s = summary(proc.stdout)
    assert s["fields discarded"] == "2: region, trace_id"
    assert s["failed"] == "1"  # the message too long for TEXT: dead-lettered, not truncated
    assert columns(mysql_url, mysql_table) == before
    assert len(table_rows(mysql_url, mysql_table)) == 2 * N - 1
    dead = (tmp_path / "dl" / "load" / "all.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(dead) == 1 and json.loads(dead[0])["record"]["id"] == f"ev-{N + 10}"


def test_most_records_failing_alike_stop_the_run_early(
    mysql_url: str, mysql_table: str, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "events.csv", event_rows(20_000))
    proc = run(path, mysql_url, mysql_table, tmp_path, "--id_column", "uuid")
    assert_one_line_error(proc, 1, "failed with the same reason")
    assert "missing or empty id field 'uuid'" in proc.stderr and "--id_column" in proc.stderr
    assert not (tmp_path / "dl" / "transform" / "all.jsonl").exists()
    engine = sa.create_engine(mysql_url)
    try:
        assert not sa.inspect(engine).has_table(mysql_table)
    finally:
        engine.dispose()
