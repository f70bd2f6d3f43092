"""The lead's real pipeline (records_job on the bundled sample CSV into SQLite) with the
metrics hooks, sensor and Pushgateway, scraped by real Prometheus.

The assets, resources and partitions come from ``es_mysql_pipeline.definitions``; the job
is rebuilt here with the metrics hooks and a Pushgateway resource pointing at the test
Pushgateway. ``test_defs_are_wired_for_metrics`` checks the shipped ``defs`` itself.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from es_mysql_pipeline.hooks import PIPELINE_METRICS_HOOKS
from es_mysql_pipeline.metrics.pushgateway import PushgatewayResource
from es_mysql_pipeline.records import TimeWindow
from es_mysql_pipeline.sensors import WATCHED_ASSETS, build_pipeline_metrics_sensor, read_run
from es_mysql_pipeline_tests.fixtures.prometheus import PrometheusServer, PushgatewayServer

from .seed_queries import P95_LATENCY, RECORDS_PER_SECOND, SUCCESS_RATE, selector_matches

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = ("2024-01-01", "2024-01-02", "2024-01-03")


@pytest.mark.parametrize("job_name", ["records_job", "__ASSET_JOB"])
def test_step_hooks_run_however_the_assets_are_launched(
    job_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hooks sit on the assets, so the schedule's job and launches from the asset graph
    or as a backfill (Dagster's implicit asset job) all push step metrics."""
    monkeypatch.setenv("ES_MYSQL_PIPELINE_DATA", str(tmp_path))
    from es_mysql_pipeline import definitions as d
    from es_mysql_pipeline.targets import target_tags

    resources = d.resources_for("local")
    defs = dg.Definitions(
        assets=d.ASSETS,
        jobs=[d.records_job],
        sensors=[d.pipeline_metrics_sensor],
        resources=resources,
    )
    job = (
        defs.resolve_implicit_global_asset_job_def()
        if job_name == "__ASSET_JOB"
        else defs.resolve_job_def(job_name)
    )
    assert job.name == job_name
    instance = dg.DagsterInstance.ephemeral()
    # the targets a code server started with this environment tags records_job's runs with
    launched = target_tags(resources["source"], resources["sink"])
    result = job.execute_in_process(partition_key="2024-01-02", instance=instance, tags=launched)
    assert result.success
    hooked = {e.step_key for e in result.all_events if e.event_type_value == "HOOK_COMPLETED"}
    assert hooked == {"raw_records", "clean_records", "loaded_records"}
    planned, _, _ = read_run(instance, result.dagster_run)
    assert not planned.keys().isdisjoint(WATCHED_ASSETS)  # the sensor counts it


def test_real_pipeline_seed_queries(
    prometheus: PrometheusServer,
    pushgateway: PushgatewayServer,
    instance: dg.DagsterInstance,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ES_MYSQL_PIPELINE_DATA", str(tmp_path))
    from es_mysql_pipeline import definitions as d

    resources = d.resources_for("local")
    pg = PushgatewayResource(
        url=pushgateway.url, pipeline_id="real", source_type="csv", sink_type="sqlite"
    )
    job = dg.define_asset_job(
        "records_job", selection=d.ASSETS, partitions_def=d.DAILY, hooks=PIPELINE_METRICS_HOOKS
    )
    sensor = build_pipeline_metrics_sensor()
    defs = dg.Definitions(
        assets=d.ASSETS, jobs=[job], sensors=[sensor], resources={**resources, "pushgateway": pg}
    )

    def tick(cursor: str | None) -> str:
        with dg.build_sensor_context(
            instance=instance, cursor=cursor, resources={"pushgateway": pg}
        ) as ctx:
            sensor.evaluate_tick(ctx)
            assert ctx.cursor is not None
            return ctx.cursor

    cursor = tick(None)
    prometheus.wait_for('pipeline_records_processed_total{pipeline_id="real"}')
    for key in PARTITIONS:
        result = defs.resolve_job_def("records_job").execute_in_process(
            instance=instance, partition_key=key
        )
        assert result.success
        cursor = tick(cursor)
        time.sleep(1.5)

    # Known counts, computed without the pipeline: rows of the CSV in the three days, and
    # rows the sink table holds afterwards.
    source: Any = resources["source"]
    sink: Any = resources["sink"]
    window = TimeWindow.from_dates(PARTITIONS[0], "2024-01-04")
    processed = sum(len(b) for b in source.read_batches(window, 1000))
    engine = sa.create_engine(sink.url)
    with engine.connect() as conn:
        inserted = conn.execute(sa.text(f"SELECT COUNT(*) FROM {sink.table}")).scalar_one()
    engine.dispose()
    assert processed > 0 and inserted > 0

    prometheus.wait_for(
        f'sum(pipeline_records_processed_total{{pipeline_id="real"}}) == {processed}'
    )
    prometheus.wait_for(f'sum(pipeline_records_inserted_total{{pipeline_id="real"}}) == {inserted}')
    # Evaluate at the newest scrape: rate() then has nothing to extrapolate at the end, and
    # since every series starts at the zero the first tick published (checked here), nothing
    # at the start either, so the seed's records-per-second is exactly the count over 60 s.
    selector = 'pipeline_records_processed_total{pipeline_id="real"}'
    at = max(float(r["value"][1]) for r in prometheus.query(f"timestamp({selector})"))
    samples = prometheus.query(f"{selector}[1m]", at)
    assert samples and all(r["values"][0][1] == "0" for r in samples), samples
    per_second = sum(
        float(r["value"][1])
        for r in prometheus.query(RECORDS_PER_SECOND, at)
        if selector_matches(r, "pipeline_id=real")
    )
    assert per_second == pytest.approx(processed / 60, rel=1e-9)
    assert abs(prometheus.scalar(SUCCESS_RATE, at) - 100 * inserted / processed) < 1e-6
    p95 = [float(r["value"][1]) for r in prometheus.query(P95_LATENCY, at)]
    assert len(p95) == 1 and 0 < p95[0] < 60
    runs = prometheus.query('pipeline_runs_total{pipeline_id="real",result="success"}', at)
    assert [float(r["value"][1]) for r in runs] == [len(PARTITIONS)]
