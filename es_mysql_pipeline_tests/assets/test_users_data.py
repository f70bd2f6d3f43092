"""Users' data through the Dagster assets: partitions need a time field, new fields on a
later day evolve the table, and the materialization shows what changed."""

from __future__ import annotations

from pathlib import Path

from es_mysql_pipeline.resources.sinks import SqlSink
from es_mysql_pipeline.resources.sources import FileSource
from es_mysql_pipeline_tests.badinput.support import step_failure_message
from es_mysql_pipeline_tests.conftest import split_target
from es_mysql_pipeline_tests.helpers import (
    event_rows,
    make_resources,
    metadata,
    run_partitions,
    table_rows,
    write_csv,
)


def test_a_partition_of_data_without_a_time_field_fails_at_once(tmp_path: Path) -> None:
    rows = [{k: v for k, v in r.items() if k != "ts"} for r in event_rows(100)]
    source = FileSource(path=write_csv(tmp_path / "no_time.csv", rows))
    result = run_partitions(make_resources(str(tmp_path), source=source), "2024-03-01")
    assert not result.success
    message = step_failure_message(result)
    # a Dagster run names the resource's setting; a partition cannot run "without a window"
    assert (
        "no time field" in message and "source.timestamp_column (CSV_TIMESTAMP_COLUMN)" in message
    )
    assert "--" not in message and "without a window" not in message
    assert "\n" not in message
    assert not (tmp_path / "dead_letter").exists()


def test_day_two_with_new_fields_evolves_the_table(sql_target: str, tmp_path: Path) -> None:
    url, table = split_target(sql_target)
    day1 = event_rows(200, day="2024-03-01")
    day2 = event_rows(200, day="2024-03-02", start=200, extra={"region": "eu-{i}", "os": "linux"})
    sink = SqlSink(url=url, table=table)
    csv1 = FileSource(path=write_csv(tmp_path / "day1.csv", day1))  # a daily export each
    csv2 = FileSource(path=write_csv(tmp_path / "day2.csv", day2))
    res = make_resources(str(tmp_path), source=csv1, sink=sink)
    first = run_partitions(res, "2024-03-01")
    assert first.success
    meta1 = metadata(first, "loaded_records")
    assert meta1["columns_added"] == 0 and "created table" in meta1["schema_changes"]
    names1 = [c.name for c in meta1["dagster/column_schema"].columns]
    assert "region" not in names1 and "ts" in names1  # the time field keeps its own name
    second = run_partitions({**res, "source": csv2}, "2024-03-02")
    assert second.success
    meta2 = metadata(second, "loaded_records")
    assert meta2["columns_added"] == 2 and meta2["schema_contract"] == "evolve"
    assert "ADD COLUMN" in meta2["schema_changes"]
    assert {"region", "os"} <= {c.name for c in meta2["dagster/column_schema"].columns}
    assert metadata(second, "raw_records")["timestamp_field"] == "ts (detected)"
    rows = table_rows(url, table)
    assert len(rows) == 400 and rows["ev-250"]["region"] == "eu-250" and rows["ev-5"]["os"] is None
