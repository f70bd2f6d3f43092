"""A step never succeeds against another source or sink than the run was launched for."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from es_mysql_pipeline.assets import build_assets
from es_mysql_pipeline.resources.sinks import SqlSink
from es_mysql_pipeline.resources.sources import FileSource
from es_mysql_pipeline.targets import (
    SINK_TABLE_TAG,
    SINK_TAG,
    SOURCE_TAG,
    describe_target,
    mismatch,
    target_tags,
)
from es_mysql_pipeline_tests.helpers import SAMPLE, make_resources, table_rows

CSV = "id,timestamp,msg\ne1,2024-01-01T00:00:00Z,one\ne2,2024-01-01T00:00:01Z,two\n"


def test_target_tags_name_kind_and_target_but_never_a_password() -> None:
    tags = target_tags(
        FileSource(path="/data/events.csv"),
        SqlSink(url="mysql+pymysql://loader:s3cret@db:3306/prod", table="events"),
    )
    assert tags[SOURCE_TAG] == "csv:/data/events.csv"
    assert tags[SINK_TAG].startswith("mysql:mysql+pymysql://loader:") and "s3cret" not in str(tags)
    assert tags[SINK_TAG].endswith("@db:3306/prod#events")
    assert tags[SINK_TABLE_TAG] == tags[SINK_TAG].split(":", 1)[1]


def test_mismatch_is_one_line_naming_the_settings() -> None:
    assert mismatch({}, SOURCE_TAG, "csv:/a.csv") is None  # an in-process run: no tag
    assert mismatch({SOURCE_TAG: "csv:/a.csv"}, SOURCE_TAG, "csv:/a.csv") is None
    line = mismatch({SINK_TAG: "mysql:m#t"}, SINK_TAG, "sqlite:sqlite:///x.sqlite#records")
    assert line is not None and "\n" not in line
    assert "DB_URL" in line and "ES_MYSQL_PIPELINE_ENV" in line and "'mysql:m#t'" in line


def _run(tmp_path: Path, tags: dict[str, str]) -> tuple[dg.ExecuteInProcessResult, str]:
    src = tmp_path / "in.csv"
    src.write_text(CSV, encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    resources = make_resources(str(tmp_path), source=FileSource(path=str(src)))
    resources["sink"] = SqlSink(url=url)
    result = dg.materialize(
        build_assets(None), resources=resources, tags=tags, raise_on_error=False
    )
    return result, url


def test_a_step_whose_source_differs_from_the_launch_fails_at_once(tmp_path: Path) -> None:
    launched = target_tags(FileSource(path="/shared/events.csv"), SqlSink(url="sqlite:///x"))
    result, url = _run(tmp_path, launched)
    assert not result.success
    starts = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_START]
    assert [e.step_key for e in starts] == ["raw_records"]  # no retry, nothing further
    failure = result.failure_data_for_node("raw_records")
    assert failure is not None and failure.error is not None
    assert "/shared/events.csv" in failure.error.message and "CSV_FILE" in failure.error.message
    assert not os.path.exists(url.removeprefix("sqlite:///"))  # nothing written


def test_a_step_whose_sink_differs_from_the_launch_fails_before_writing(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    tags = {SINK_TAG: "mysql:mysql+pymysql://root@127.0.0.1:3306/test#events"}
    result, url = _run(tmp_path, tags)
    assert not result.success
    failure = result.failure_data_for_node("loaded_records")
    assert failure is not None and failure.error is not None and "DB_URL" in failure.error.message
    assert src.exists() and not os.path.exists(url.removeprefix("sqlite:///"))


def test_matching_targets_load(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    tags = target_tags(FileSource(path=str(src)), SqlSink(url=url))
    result, _ = _run(tmp_path, tags)
    assert result.success
    assert set(table_rows(url, "records")) == {"e1", "e2"}


def test_records_job_runs_carry_the_code_servers_targets(tmp_path: Path) -> None:
    """The job's run tags come from the environment of the process that loads the code
    (the code server launching UI runs, schedules and backfills), not a worker's."""
    env = {
        **os.environ,
        "ES_MYSQL_PIPELINE_ENV": "mysql",
        "CSV_FILE": "/shared/events.csv",
        "DB_URL": "mysql+pymysql://loader@db:3306/prod",
        "DB_TABLE": "events",
    }
    code = (
        "import json; from es_mysql_pipeline.definitions import defs;"
        "print(json.dumps(dict(defs.resolve_job_def('records_job').run_tags)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    import json

    tags = json.loads(out.strip().splitlines()[-1])
    assert tags[SOURCE_TAG] == "csv:/shared/events.csv"
    assert tags[SINK_TAG] == "mysql:mysql+pymysql://loader@db:3306/prod#events"
    assert tags[SINK_TABLE_TAG] == "mysql+pymysql://loader@db:3306/prod#events"


def test_describe_target_of_the_bundled_sample_is_its_full_path() -> None:
    assert describe_target(FileSource(path=SAMPLE)) == f"csv:{SAMPLE}"
