"""A Dagster user's first day (issue 27): empty days, days of rejects, per-partition
numbers of a single-run backfill, errors that name Dagster's settings, retried refusals."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from es_mysql_pipeline.assets import build_assets, failures, partitions
from es_mysql_pipeline.assets.load import RECONCILE_DESCRIPTION
from es_mysql_pipeline.assets.partitions import daily_partitions, path_value
from es_mysql_pipeline.cli.parser import build_parser
from es_mysql_pipeline.dead_letter import read_dead_letters
from es_mysql_pipeline.definitions import resources_for
from es_mysql_pipeline.records import TimeWindow, parse_timestamp
from es_mysql_pipeline.resources.sinks import JsonlSink, SqlSink
from es_mysql_pipeline.resources.sources import FileSource
from es_mysql_pipeline.resources.sources.elasticsearch import ElasticsearchSource
from es_mysql_pipeline.transform_engine import reject_hint
from es_mysql_pipeline.writers.sql.errors import GRANTS_HINT, MYSQL_ERRORS
from es_mysql_pipeline_tests.conftest import split_target
from es_mysql_pipeline_tests.helpers import (
    event_rows,
    make_resources,
    partition_metadata,
    run_partitions,
    write_csv,
)
from es_mysql_pipeline_tests.support.failures import step_failure_message
from es_mysql_pipeline_tests.support.sample import expected_rows, sample_rows

#: The CLI's default, which a Dagster deployment's settings share.
DEFAULT_RATIO = build_parser().parse_args([]).max_failed_ratio
FLAG = re.compile(r"--[a-z]")


def _has_table(url: str, table: str) -> bool:
    engine = sa.create_engine(url)
    try:
        return sa.inspect(engine).has_table(table)
    finally:
        engine.dispose()


# 1. an empty partition ------------------------------------------------------------------


@pytest.mark.integration
def test_an_empty_first_day_is_an_empty_materialization(sql_target: str, tmp_path: Path) -> None:
    url, table = split_target(sql_target)
    source = FileSource(path=write_csv(tmp_path / "events.csv", event_rows(50)))  # 2024-03-01
    res = make_resources(str(tmp_path), source=source, sink=SqlSink(url=url, table=table))
    result = run_partitions(res, "2024-03-05")  # no record that day, no table yet
    assert result.success, step_failure_message(result)
    (load,) = partition_metadata(result, "loaded_records").values()
    assert load["dagster/row_count"] == 0
    assert (load["processed"], load["inserted"], load["failed"]) == (0, 0, 0)
    (check,) = result.get_asset_check_evaluations()
    assert check.passed, check.description
    assert not _has_table(url, table)
    # the day with data then loads as usual, and the empty day still reconciles
    assert run_partitions(res, "2024-03-01").success
    again = run_partitions(res, "2024-03-05")
    assert again.success and all(c.passed for c in again.get_asset_check_evaluations())


def test_an_empty_day_into_json_lines_is_empty_too(tmp_path: Path) -> None:
    source = FileSource(path=write_csv(tmp_path / "events.csv", event_rows(50)))
    res = make_resources(str(tmp_path), source=source, sink=JsonlSink(directory=str(tmp_path)))
    result = run_partitions(res, "2024-03-05")
    assert result.success, step_failure_message(result)
    (load,) = partition_metadata(result, "loaded_records").values()
    assert load["dagster/row_count"] == 0
    assert all(c.passed for c in result.get_asset_check_evaluations())


# 2. a day of rejects ----------------------------------------------------------------------


def test_dagster_settings_stop_at_the_clis_ratio() -> None:
    assert resources_for("local")["settings"].max_failed_ratio == DEFAULT_RATIO  # type: ignore[attr-defined]


def test_a_day_whose_every_record_is_rejected_fails_at_the_transform(tmp_path: Path) -> None:
    rows = [{**r, "id": ""} for r in event_rows(103)]
    source = FileSource(path=write_csv(tmp_path / "no_ids.csv", rows))
    res = make_resources(str(tmp_path), source=source, max_failed_ratio=DEFAULT_RATIO)
    result = run_partitions(res, "2024-03-01")
    assert not result.success
    (failure,) = result.get_step_failure_events()
    assert failure.step_key == "clean_records"
    message = step_failure_message(result)
    assert message.startswith(
        f"103 of 103 records failed (more than settings.max_failed_ratio {DEFAULT_RATIO})"
    )
    assert "missing or empty id field 'id'" in message and "source.id_column" in message
    assert "\n" not in message and not FLAG.search(message)
    assert not any(e.step_key == "loaded_records" for e in result.get_step_failure_events())
    assert "loaded_records" not in {
        str(e.asset_key.path[-1]) for e in result.get_asset_materialization_events() if e.asset_key
    }
    dead = read_dead_letters(str(tmp_path / "dead_letter" / "transform" / "2024-03-01.jsonl"))
    assert len(dead) == 103  # kept: the list of what to fix
    assert not list((tmp_path / "staging").rglob("clean_records/*.stage"))


def test_rejects_within_the_ratio_load_the_rest(tmp_path: Path) -> None:
    rows = event_rows(100)
    rows[7]["id"] = ""
    source = FileSource(path=write_csv(tmp_path / "one_bad.csv", rows))
    res = make_resources(str(tmp_path), source=source, max_failed_ratio=DEFAULT_RATIO)
    result = run_partitions(res, "2024-03-01")
    assert result.success, step_failure_message(result)
    (load,) = partition_metadata(result, "loaded_records").values()
    assert (load["inserted"], load["rejected_in_transform"]) == (99, 1)


def test_one_repeated_reason_stops_a_big_day_early_in_dagster_words(tmp_path: Path) -> None:
    source = FileSource(path=write_csv(tmp_path / "e.csv", event_rows(3000)), id_column="uuid")
    res = make_resources(str(tmp_path), source=source, max_failed_ratio=DEFAULT_RATIO)
    result = run_partitions(res, "2024-03-01")
    assert not result.success
    message = step_failure_message(result)
    assert "failed with the same reason" in message and "source.id_column" in message
    assert not FLAG.search(message)


# 3. a single-run backfill's numbers -------------------------------------------------------


def test_a_three_day_backfill_never_counts_a_record_twice(tmp_path: Path) -> None:
    days = ["2024-01-02", "2024-01-03", "2024-01-04"]
    result = run_partitions(make_resources(str(tmp_path)), days[0], days[-1])
    assert result.success, step_failure_message(result)
    in_window = [
        r for r in sample_rows() if r["timestamp"][:10] in days
    ]  # what the source holds for the three days (rejects included)
    for asset, count in [
        ("raw_records", "records"),
        ("clean_records", "clean_records"),
        ("loaded_records", "processed"),
    ]:
        per_day = partition_metadata(result, asset)
        assert sorted(str(d) for d in per_day) == days
        with_counts = [d for d, m in per_day.items() if count in m]
        assert with_counts == [days[0]], asset  # reported once, on the range's first day
        assert "the whole run: 2024-01-02 to 2024-01-04 (3 days in one run)" in str(
            per_day[days[0]]["counts_cover"]
        )
        for d in days[1:]:
            assert str(per_day[d]["counts_cover"]).startswith("counted on 2024-01-02"), asset
    raw = partition_metadata(result, "raw_records")
    assert sum(int(m.get("records", 0)) for m in raw.values()) == len(in_window)
    assert not any("dagster/row_count" in m for m in raw.values())  # no day's own count
    loaded = partition_metadata(result, "loaded_records")
    assert {d: m["dagster/row_count"] for d, m in loaded.items()} == {
        d: len(expected_rows({d})) for d in days
    }
    assert sum(int(m.get("processed", 0)) for m in loaded.values()) == len(in_window)


def test_rows_reconciled_names_its_days_and_says_what_it_counted(tmp_path: Path) -> None:
    result = run_partitions(make_resources(str(tmp_path)), "2024-01-02", "2024-01-04")
    (check,) = result.get_asset_check_evaluations()
    assert check.passed
    meta = {k: v.value for k, v in check.metadata.items()}
    assert meta["partitions"] == "2024-01-02 to 2024-01-04 (3 days in one run)"
    by_day = {d: len(expected_rows({d})) for d in ("2024-01-02", "2024-01-03", "2024-01-04")}
    assert meta["rows_in_sink_by_day"] == by_day
    assert meta["rows_in_sink"] == sum(by_day.values())
    assert "accounted" not in " ".join(meta) and "accounted" not in str(check.description)
    assert f"the sink holds {sum(by_day.values()):,} rows for 2024-01-02 to 2024-01-04" in str(
        check.description
    )
    assert "records read:" in str(check.description)
    (spec,) = build_assets(daily_partitions())[2].check_specs
    assert spec.description == RECONCILE_DESCRIPTION


def test_one_day_keeps_its_counts_in_its_own_event(tmp_path: Path) -> None:
    result = run_partitions(make_resources(str(tmp_path)), "2024-01-03")
    (load,) = partition_metadata(result, "loaded_records").values()
    assert load["processed"] == len(
        [r for r in sample_rows() if r["timestamp"][:10] == "2024-01-03"]
    )
    assert load["dagster/row_count"] == len(expected_rows({"2024-01-03"}))
    assert "counts_cover" not in load
    (check,) = result.get_asset_check_evaluations()
    assert check.metadata["partitions"].value == "2024-01-03"


# 4. errors in Dagster's words; a refused connection is retried ---------------------------


def _cli_worded_messages() -> list[str]:
    """Every message text that names a CLI flag, as the sources, sinks and engines write it."""
    hints = [e.hint for e in MYSQL_ERRORS.values() if e.hint] + [GRANTS_HINT]
    hints.append(reject_hint("missing or empty id field 'id'"))
    hints.append(reject_hint("timestamp field 'ts' …"))
    window = TimeWindow.from_dates("2024-01-01", "2024-01-02")
    hints.append(str(FileSource(path="x.csv").no_time_field(window)))
    hints.append(ElasticsearchSource.timestamp_setting_names)
    return hints


def test_every_cli_flag_in_a_message_has_its_dagster_setting() -> None:
    messages = _cli_worded_messages()
    assert any(FLAG.search(m) for m in messages)  # the texts do name flags
    for message in messages:
        worded = failures.for_dagster(message)
        assert not FLAG.search(worded), worded
        assert "without a window" not in worded


def test_dagster_words_name_the_resource_fields() -> None:
    refused = failures.for_dagster(str(MYSQL_ERRORS[2003].hint))
    assert refused == "check the host and port of sink.url (DB_URL) (is the server running?)"
    assert "source.timestamp_field (ES_TIMESTAMP_FIELD)" in failures.for_dagster(
        ElasticsearchSource.timestamp_setting_names
    )


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow  # the policy's own backoff: about 2 s + 4 s
def test_a_refused_database_connection_is_retried_by_the_policy(tmp_path: Path) -> None:
    url = f"mysql+pymysql://root@127.0.0.1:{_closed_port()}/test"
    sink = SqlSink(url=url, table="t", max_retries=0, retry_backoff_seconds=0.01)
    result = run_partitions(make_resources(str(tmp_path), sink=sink), "2024-01-02")
    assert not result.success
    starts = [
        e
        for e in result.all_events
        if e.step_key == "loaded_records"
        and e.event_type in (dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_RESTARTED)
    ]
    assert len(starts) == 1 + failures.RETRY.max_retries
    message = step_failure_message(result)
    assert "sink.url (DB_URL)" in message and not FLAG.search(message)


@pytest.mark.integration
def test_a_wrong_setting_is_not_retried(mysql_url: str, tmp_path: Path) -> None:
    sink = SqlSink(url=mysql_url.rsplit("/", 1)[0] + "/no_such_database_27", table="t")
    result = run_partitions(make_resources(str(tmp_path), sink=sink), "2024-01-02")
    assert not result.success
    retries = dg.DagsterEventType.STEP_UP_FOR_RETRY
    assert not [e for e in result.all_events if e.event_type == retries]
    message = step_failure_message(result)
    assert "the database of sink.url (DB_URL)" in message and not FLAG.search(message)


# 6. paths in metadata ---------------------------------------------------------------------


def test_paths_are_absolute_and_none_is_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    given = path_value(os.path.join("dead_letter", "transform", "x.jsonl"))
    assert isinstance(given, dg.PathMetadataValue)
    assert given.value == str(tmp_path / "dead_letter" / "transform" / "x.jsonl")
    assert isinstance(path_value(None), dg.TextMetadataValue)
    assert path_value("s3://bucket/dl.jsonl").value == "s3://bucket/dl.jsonl"


def test_no_metadata_path_is_relative_or_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("ES_MYSQL_PIPELINE_DATA", "CSV_FILE", "DB_URL", "STAGING_PATH"):
        monkeypatch.delenv(name, raising=False)
    res = resources_for("local")  # the default environment: under the current directory
    del res["pushgateway"]
    result = run_partitions(res, "2024-01-03")  # one reject on that day: a dead letter
    assert result.success, step_failure_message(result)
    seen = 0
    for event in result.get_asset_materialization_events():
        for key, value in event.materialization.metadata.items():
            if isinstance(value, dg.PathMetadataValue):
                seen += 1
                assert os.path.isabs(str(value.value)), key
                assert str(value.value).startswith(str(tmp_path)), key
    assert seen >= 3


# 6. the sample in the UI ------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]


def _sample_days() -> list[str]:
    days = set()
    for row in sample_rows():
        try:
            days.add(parse_timestamp(row["timestamp"]).strftime("%Y-%m-%d"))
        except ValueError:
            continue
    return sorted(days)


def _make_ui(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ES_MYSQL", "CSV_FILE"))}
    proc = subprocess.run(
        ["make", "-s", "-n", "ui", *args], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_make_ui_shows_exactly_the_samples_days(monkeypatch: pytest.MonkeyPatch) -> None:
    days = _sample_days()
    assert days[0] == partitions.DEFAULT_START_DATE
    after_last = datetime.fromisoformat(days[-1]) + timedelta(days=1)
    assert after_last.strftime("%Y-%m-%d") == partitions.SAMPLE_END_DATE
    command = _make_ui()
    assert f"ES_MYSQL_PIPELINE_END_DATE={partitions.SAMPLE_END_DATE} " in command
    assert command.rstrip().endswith("-p 3000")
    monkeypatch.setenv("ES_MYSQL_PIPELINE_END_DATE", partitions.SAMPLE_END_DATE)
    monkeypatch.delenv("ES_MYSQL_PIPELINE_START_DATE", raising=False)
    assert partitions.daily_partitions().get_partition_keys() == days


def test_make_ui_takes_a_port_and_leaves_users_data_open_ended() -> None:
    assert _make_ui("PORT=3391").rstrip().endswith("-p 3391")
    assert "END_DATE" not in _make_ui("CSV_FILE=events.csv")
    assert "END_DATE" not in _make_ui("ES_MYSQL_PIPELINE_START_DATE=2026-01-01")


@pytest.mark.integration
def test_one_click_loads_the_whole_sample(tmp_path: Path) -> None:
    days = _sample_days()
    result = run_partitions(make_resources(str(tmp_path)), days[0], days[-1])
    assert result.success, step_failure_message(result)
    loaded = partition_metadata(result, "loaded_records")
    assert sorted(str(d) for d in loaded) == days  # every partition materialized: 100 % filled
    assert sum(int(m["dagster/row_count"]) for m in loaded.values()) == len(expected_rows())
