"""The load asset as a Dagster user meets it: refresh refused per partition, and the
``rows_reconciled`` check failing, in plain words, when the sink and the run disagree."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import sqlalchemy as sa

from es_mysql_pipeline.records import Batch
from es_mysql_pipeline.resources.sinks import JsonlSink, SqlSink
from es_mysql_pipeline.resources.sources import FileSource
from es_mysql_pipeline.writers.base import SinkSession, TableShape, WriteCounts
from es_mysql_pipeline.writers.jsonl import JsonlSession
from es_mysql_pipeline_tests.helpers import (
    event_rows,
    make_resources,
    run_partitions,
    table_rows,
    write_csv,
)
from es_mysql_pipeline_tests.support.failures import step_failure_message

DAY = "2024-03-01"


def _check(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    assert result.success  # a failed check does not fail the run
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == "rows_reconciled"
    return check


def test_refresh_of_one_partition_fails_at_once_naming_the_mode(tmp_path: Path) -> None:
    """WRITE_MODE=refresh in the environment deployment, then a partition launched."""
    db = tmp_path / "db.sqlite"
    sink = SqlSink(url=f"sqlite:///{db}", table="t", write_mode="refresh")
    result = run_partitions(make_resources(str(tmp_path), sink=sink), "2024-01-02")
    assert not result.success
    assert step_failure_message(result).startswith(
        "write_mode refresh replaces the whole table: run it unpartitioned"
    )
    (failure,) = result.get_step_failure_events()
    assert failure.step_key == "loaded_records"
    starts = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_START]
    assert [e.step_key for e in starts].count("loaded_records") == 1  # not retried
    assert (
        not db.exists() or sa.inspect(sa.create_engine(f"sqlite:///{db}")).get_table_names() == []
    )


def test_rows_the_source_no_longer_has_fail_the_check(tmp_path: Path) -> None:
    """The day's export lost a record (deletes: ignore): the table keeps the row, so it holds
    more rows for the day than this run's clean records; the check says so."""
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    rows = event_rows(5, day=DAY)
    res = make_resources(str(tmp_path), sink=SqlSink(url=url, table="events"))
    full = FileSource(path=write_csv(tmp_path / "full.csv", rows))
    assert _check(run_partitions({**res, "source": full}, DAY)).passed
    shrunk = FileSource(path=write_csv(tmp_path / "shrunk.csv", rows[:4]))
    check = _check(run_partitions({**res, "source": shrunk}, DAY))
    assert not check.passed
    assert check.description is not None
    assert check.description.startswith(
        "expected between 0 and 4 rows in the sink; the sink holds 5 rows for 2024-03-01"
    )
    assert check.metadata["rows_in_sink"].value == 5
    assert len(table_rows(url, "events")) == 5


class _LossySession(JsonlSession):
    """A sink's writer that drops the first record of each batch without counting it."""

    def write(self, batch: Batch) -> WriteCounts:
        return super().write(batch[1:])


class LossySink(JsonlSink):
    """A user's own sink (docs/architecture.md, "Adding a sink") with a bug in its counts."""

    def open_session(self, shape: TableShape, partition: str | None) -> SinkSession:
        return _LossySession(self.target(partition), shape.delete_marker)


def test_records_a_sink_loses_without_a_word_fail_the_check(tmp_path: Path) -> None:
    source = FileSource(path=write_csv(tmp_path / "in.csv", event_rows(5, day=DAY)))
    sink = LossySink(directory=str(tmp_path / "out"))
    check = _check(run_partitions(make_resources(str(tmp_path), sink=sink, source=source), DAY))
    assert not check.passed
    assert check.description is not None
    assert check.description.startswith("1 records read have no outcome; the sink holds 4 rows")
    assert check.metadata["records_read"].value == 5
    assert check.metadata["records_with_an_outcome"].value == 4
    lines = (tmp_path / "out" / f"{DAY}.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 4
