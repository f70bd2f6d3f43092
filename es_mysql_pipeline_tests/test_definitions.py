from __future__ import annotations

import os
import subprocess
import sys

import dagster as dg
import pytest

from es_mysql_pipeline.definitions import env_defs

#: The environment-variable deployment: one pipeline, ``records_job``.
defs = env_defs()


def test_definitions_load_and_job_resolves() -> None:
    job = defs.resolve_job_def("records_job")
    assert {n.name for n in job.nodes} == {"raw_records", "clean_records", "loaded_records"}
    graph = defs.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == {
        "raw_records",
        "clean_records",
        "loaded_records",
        "unplaced_records",  # unpartitioned, beside the chain: records of no day
    }
    for key in graph.get_all_asset_keys():
        if key.path[-1] != "unplaced_records":
            assert graph.get(key).backfill_policy == dg.BackfillPolicy.single_run()


def test_schedule_materializes_the_previous_day() -> None:
    from datetime import datetime, timezone

    schedule = defs.resolve_schedule_def("records_daily_schedule")
    ctx = dg.build_schedule_context(
        scheduled_execution_time=datetime(2024, 3, 5, 0, 15, tzinfo=timezone.utc)
    )
    (request,) = list(schedule.evaluate_tick(ctx).run_requests or [])
    assert request.partition_key == "2024-03-04"


def test_dagster_definitions_validate() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dagster",
            "definitions",
            "validate",
            "-m",
            "es_mysql_pipeline.definitions",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("env", ["local", "mysql", "file", "elasticsearch"])
def test_every_environment_builds_its_resources(env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from es_mysql_pipeline.definitions import ASSETS, resources_for

    monkeypatch.setenv("DB_PASSWORD", "Sentinel-Pw-77")
    resources = resources_for(env)
    assert set(resources) == {"source", "sink", "settings", "io_manager", "pushgateway"}
    # The password travels as an EnvVar (resolved at launch, hidden in the UI), not a value.
    if env in ("mysql", "elasticsearch"):
        assert isinstance(resources["sink"].password, dg.EnvVar)
    dg.Definitions.validate_loadable(dg.Definitions(assets=ASSETS, resources=resources))


def test_unknown_environment_is_named() -> None:
    from es_mysql_pipeline.definitions import resources_for

    with pytest.raises(ValueError, match="ES_MYSQL_PIPELINE_ENV='prod'"):
        resources_for("prod")


@pytest.mark.parametrize(
    ("per_run", "expected"),
    [("", "single"), ("0", "single"), ("3", "multi 3")],
)
def test_backfill_partitions_per_run_sets_the_assets_policy(per_run: str, expected: str) -> None:
    """BACKFILL_PARTITIONS_PER_RUN is read when the definitions load: a fresh interpreter."""
    code = (
        "import dagster as dg\n"
        "from es_mysql_pipeline.definitions import env_defs\n"
        "defs = env_defs()\n"
        "g = defs.resolve_asset_graph()\n"
        "keys = [k for k in g.get_all_asset_keys() if k.path[-1] != 'unplaced_records']\n"
        "ps = {g.get(k).backfill_policy for k in keys}\n"
        "assert len(ps) == 1, ps\n"
        "p = ps.pop()\n"
        "single = p == dg.BackfillPolicy.single_run()\n"
        "print('single' if single else f'multi {p.max_partitions_per_run}')\n"
    )
    env = {**os.environ, "BACKFILL_PARTITIONS_PER_RUN": per_run}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == expected


def test_backfill_partitions_per_run_rejects_nonsense() -> None:
    from es_mysql_pipeline.definitions import backfill_policy

    assert backfill_policy("2") == dg.BackfillPolicy.multi_run(2)
    assert backfill_policy(None) == dg.BackfillPolicy.single_run()
    with pytest.raises(ValueError, match="whole number"):
        backfill_policy("many")
    with pytest.raises(ValueError, match="0 or more"):
        backfill_policy("-1")


def test_celery_location_serves_the_env_deployment_with_its_executor() -> None:
    """The celery code location is the env-var deployment, unplaced records included, with
    only the executor changed."""
    pytest.importorskip("dagster_celery", reason="the distributed extra (make provision)")
    from es_mysql_pipeline import jobs

    keys = set(jobs.defs.resolve_asset_graph().get_all_asset_keys())
    assert keys == set(defs.resolve_asset_graph().get_all_asset_keys())
    assert dg.AssetKey("unplaced_records") in keys
    assert jobs.defs.resolve_job_def("records_job").executor_def.name == "celery"
