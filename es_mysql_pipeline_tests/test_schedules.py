"""``records_daily_schedule``: each tick asks for the previous UTC day with valid run config.

``test_definitions.py`` checks one ordinary tick's partition key; these cover calendar edges,
the run config and tags a tick carries, the first day, and that a tick's request really loads
that day (and only it) when executed.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import pytest

from es_mysql_pipeline.definitions import ASSETS, env_defs, records_job, resources_for
from es_mysql_pipeline.records import parse_timestamp
from es_mysql_pipeline.targets import target_tags
from es_mysql_pipeline_tests.helpers import metadata, sample_rows, table_rows

#: The environment-variable deployment: one pipeline, ``records_job``.
defs = env_defs()

SCHEDULE = defs.resolve_schedule_def("records_daily_schedule")


def tick(when: datetime) -> list[dg.RunRequest]:
    ctx = dg.build_schedule_context(scheduled_execution_time=when)
    result = SCHEDULE.evaluate_tick(ctx)
    return list(result.run_requests or [])


def test_schedule_runs_records_job_daily_at_00_15_utc() -> None:
    assert SCHEDULE.job_name == "records_job"
    assert SCHEDULE.cron_schedule == "15 0 * * *"
    assert SCHEDULE.execution_timezone == "UTC"


@pytest.mark.parametrize(
    ("scheduled", "expected"),
    [
        (datetime(2024, 1, 4, 0, 15, tzinfo=timezone.utc), "2024-01-03"),
        (datetime(2024, 3, 1, 0, 15, tzinfo=timezone.utc), "2024-02-29"),  # leap day
        (datetime(2025, 1, 1, 0, 15, tzinfo=timezone.utc), "2024-12-31"),  # year boundary
        (datetime(2024, 6, 30, 23, 59, tzinfo=timezone.utc), "2024-06-29"),  # late tick
    ],
)
def test_tick_requests_the_previous_day_with_valid_run_config(
    scheduled: datetime, expected: str
) -> None:
    (request,) = tick(scheduled)
    assert request.partition_key == expected
    assert request.tags.get("dagster/partition") == expected
    job = defs.resolve_job_def("records_job")
    validated = dg.validate_run_config(job, request.run_config)
    # The assets' window config is optional: a partitioned run takes its window from the key.
    ops = validated.get("ops", {})
    for asset in ("raw_records", "clean_records", "loaded_records"):
        config = ops.get(asset, {}).get("config", {})
        assert config.get("start") is None and config.get("end") is None, validated


def test_tick_on_the_first_day_requests_nothing() -> None:
    # 2024-01-01 is the first partition: the day before it does not exist.
    assert tick(datetime(2024, 1, 1, 0, 15, tzinfo=timezone.utc)) == []


def test_tick_request_loads_exactly_that_day(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (request,) = tick(datetime(2024, 1, 4, 0, 15, tzinfo=timezone.utc))
    monkeypatch.setenv("ES_MYSQL_PIPELINE_DATA", str(tmp_path))
    for name in ("DB_URL", "DB_TABLE", "CSV_FILE", "STAGING_PATH", "PUSHGATEWAY_URL"):
        monkeypatch.delenv(name, raising=False)
    resources = resources_for("local")
    job = dg.Definitions(assets=ASSETS, jobs=[records_job], resources=resources).resolve_job_def(
        "records_job"
    )
    # a code server started with this environment tags the job's runs with these targets
    launched = target_tags(resources["source"], resources["sink"])
    result = job.execute_in_process(
        run_config=request.run_config,
        tags={**dict(request.tags), **launched},
        raise_on_error=False,
    )
    assert result.success
    assert result.dagster_run.tags["dagster/partition"] == "2024-01-03"

    want = set()
    for row in sample_rows():
        if not row["id"] or None in row.values():
            continue
        try:
            if parse_timestamp(row["timestamp"]).strftime("%Y-%m-%d") == "2024-01-03":
                want.add(row["id"])
        except ValueError:
            continue
    rows = table_rows(f"sqlite:///{tmp_path / 'es_mysql_pipeline.sqlite'}", "records")
    assert want and set(rows) == want
    assert {r["timestamp"].strftime("%Y-%m-%d") for r in rows.values()} == {"2024-01-03"}
    assert metadata(result, "loaded_records")["inserted"] == len(want)
