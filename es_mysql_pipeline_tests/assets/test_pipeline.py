"""The bundled sample through all three assets, into SQLite and MariaDB."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import pytest

from es_mysql_pipeline.dead_letter import read_dead_letters
from es_mysql_pipeline.records import parse_timestamp
from es_mysql_pipeline.resources.sinks import SqlSink
from es_mysql_pipeline_tests.conftest import split_target
from es_mysql_pipeline_tests.helpers import (
    make_resources,
    metadata,
    partition_metadata,
    run_partitions,
    run_unpartitioned,
    table_rows,
)
from es_mysql_pipeline_tests.support.sample import expected_rows, sample_rows

pytestmark = pytest.mark.integration


def assert_table_equals(url: str, table: str, expected: dict[str, dict[str, str]]) -> None:
    actual = table_rows(url, table)
    assert set(actual) == set(expected)
    for rid, src in expected.items():
        got = actual[rid]
        for key, value in src.items():
            if key == "timestamp":
                want = parse_timestamp(value).replace(tzinfo=None)
                assert got["timestamp"] == want, rid
            else:
                assert got[key] == value, (rid, key)


def test_full_load_equals_source_and_rerun_changes_nothing(sql_target: str, tmp_path: Path) -> None:
    url, table = split_target(sql_target)
    res = make_resources(str(tmp_path), sink=SqlSink(url=url, table=table))
    result = run_unpartitioned(res)
    assert result.success
    expected = expected_rows()
    assert_table_equals(url, table, expected)
    meta = metadata(result, "loaded_records")
    assert meta["processed"] == len(sample_rows())
    assert meta["inserted"] == len(expected)
    assert meta["skipped"] == 1  # the sample's one exact duplicate
    assert (
        meta["processed"] == meta["inserted"] + meta["updated"] + meta["skipped"] + meta["failed"]
    )

    dead = read_dead_letters(str(meta["transform_dead_letter_path"]))
    assert len(dead) == meta["failed"] == 5
    reasons = " | ".join(d["reason"] for d in dead)
    assert "missing or empty id" in reasons
    assert "timestamp field" in reasons
    assert "expected 8 fields, found 3" in reasons

    again = run_unpartitioned(res)
    meta2 = metadata(again, "loaded_records")
    assert (meta2["inserted"], meta2["skipped"], meta2["updated"]) == (0, len(expected) + 1, 0)
    assert_table_equals(url, table, expected)


def test_upsert_rerun_updates_every_row(mysql_url: str, mysql_table: str, tmp_path: Path) -> None:
    res = make_resources(
        str(tmp_path), sink=SqlSink(url=mysql_url, table=mysql_table, write_mode="upsert")
    )
    run_unpartitioned(res)
    meta = metadata(run_unpartitioned(res), "loaded_records")
    n = len(expected_rows())
    assert (meta["inserted"], meta["updated"], meta["skipped"]) == (0, n + 1, 0)
    assert len(table_rows(mysql_url, mysql_table)) == n


def test_one_partition_loads_only_that_day(sql_target: str, tmp_path: Path) -> None:
    url, table = split_target(sql_target)
    res = make_resources(str(tmp_path), sink=SqlSink(url=url, table=table))
    result = run_partitions(res, "2024-01-02")
    assert result.success
    assert_table_equals(url, table, expected_rows({"2024-01-02"}))
    (check,) = result.get_asset_check_evaluations()
    assert check.passed
    staged = tmp_path / "staging" / "raw_records" / "2024-01-02.stage"
    assert staged.exists() and Path(f"{staged}.meta.json").exists()


def test_three_day_backfill_is_one_run_of_exactly_those_days(
    sql_target: str, tmp_path: Path
) -> None:
    url, table = split_target(sql_target)
    res = make_resources(str(tmp_path), sink=SqlSink(url=url, table=table))
    result = run_partitions(res, "2024-01-02", "2024-01-04")
    assert result.success
    days = {"2024-01-02", "2024-01-03", "2024-01-04"}
    assert_table_equals(url, table, expected_rows(days))
    meta = metadata(result, "loaded_records")
    per_day = partition_metadata(result, "loaded_records")
    assert {d: m["dagster/row_count"] for d, m in per_day.items()} == {
        d: len(expected_rows({d})) for d in days
    }
    assert all(e.passed for e in result.get_asset_check_evaluations())
    dead = read_dead_letters(str(meta["transform_dead_letter_path"]))
    assert {d["record"]["id"] for d in dead} == {"short-1250"}  # the short row on Jan 3


def test_jsonl_sink_per_partition(tmp_path: Path) -> None:
    from es_mysql_pipeline.resources.sinks import JsonlSink

    res = make_resources(str(tmp_path), sink=JsonlSink(directory=str(tmp_path / "out")))
    assert run_partitions(res, "2024-01-05").success
    lines = (tmp_path / "out" / "2024-01-05.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(expected_rows({"2024-01-05"}))
    assert not [p for p in os.listdir(tmp_path / "out") if ".tmp" in p]


def test_missing_upstream_stage_is_never_taken_as_complete(tmp_path: Path) -> None:
    res = make_resources(str(tmp_path))
    assert run_partitions(res, "2024-01-02").success
    meta_file = tmp_path / "staging" / "clean_records" / "2024-01-02.stage.meta.json"
    meta_file.unlink()  # as if the run was killed between data file and sidecar
    import dagster as dg

    from es_mysql_pipeline.assets import build_assets
    from es_mysql_pipeline.assets.partitions import daily_partitions

    assets = build_assets(daily_partitions())
    result = dg.materialize(
        assets,
        selection=["loaded_records"],
        resources=res,
        partition_key="2024-01-02",
        raise_on_error=False,
    )
    assert not result.success
    (failure,) = result.get_step_failure_events()
    assert "incomplete" in str(failure.step_failure_data.error)


def test_analyzer_enriches_and_counts(tmp_path: Path) -> None:
    res = make_resources(
        str(tmp_path),
        analyzer="es_mysql_pipeline_tests.assets.test_pipeline:sample_analyzer",
    )
    result = run_partitions(res, "2024-01-01")
    meta = metadata(result, "clean_records")
    assert meta["analysis_succeeded"] + meta["analysis_failed"] == meta["clean_records"]
    assert meta["analysis_failed"] > 0 and meta["analysis_succeeded"] > 0


def sample_analyzer(row: dict[str, object]) -> dict[str, object]:
    if row.get("level") == "ERROR":
        raise RuntimeError("model unavailable")
    return {"sentiment": "neutral", "analyzed_at": datetime.now(timezone.utc).isoformat()}
