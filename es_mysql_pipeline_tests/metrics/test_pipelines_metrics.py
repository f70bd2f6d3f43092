"""Issue 26 item 3: two YAML pipelines in one code location, each run counted once under
its own pipeline, whatever launched it: the pipeline's job (run tag), the asset graph or a
backfill (Dagster's implicit asset job: no pipeline run tag), or one run of every asset
(split by step). Materialized through Dagster, pushed by the location's own sensor to the
real Pushgateway and read back from the real Prometheus with the seed's PromQL."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path

import dagster as dg
import pytest

from es_mysql_pipeline import component
from es_mysql_pipeline.targets import PIPELINE_TAG
from es_mysql_pipeline_tests.fixtures.prometheus import PrometheusServer, PushgatewayServer

from .seed_queries import (
    BY_PIPELINE,
    ERROR_RATE,
    P95_LATENCY,
    RECORDS_PER_SECOND,
    selector_matches,
)
from .test_hooks_sensor import gateway_samples
from .test_prometheus import dashboard_queries, grafana_to_promql
from .two_pipelines import NEWEST, ORDERS, PAYMENTS, chain, pipelines_defs, tick

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAY, NEXT = "2024-01-02", "2024-01-03"
BY_PID_LOAD = 'sum by (pipeline_id) (pipeline_records_inserted_total{stage="load"})'
BY_PID_FETCH = 'sum by (pipeline_id) (pipeline_records_processed_total{stage="fetch"})'


@pytest.fixture
def defs(
    pushgateway: PushgatewayServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dg.Definitions]:
    """The location ``ES_MYSQL_PIPELINE_DEFS`` gives, with ``PUSHGATEWAY_URL`` set (the
    component's one ``pushgateway`` resource is cached per process: built afresh here)."""
    monkeypatch.setenv("PUSHGATEWAY_URL", pushgateway.url)
    monkeypatch.setenv("ES_MYSQL_PIPELINE_DATA", str(tmp_path))
    component.shared_pushgateway.cache_clear()
    try:
        yield pipelines_defs(tmp_path)
    finally:
        component.shared_pushgateway.cache_clear()


def by_pid(prom: PrometheusServer, expr: str, at: float | None = None) -> dict[str, float]:
    return {r["metric"]["pipeline_id"]: float(r["value"][1]) for r in prom.query(expr, at)}


def wait_by_pid(prom: PrometheusServer, expr: str, want: Mapping[str, float]) -> None:
    prom.wait_for(expr, lambda result: {
        r["metric"]["pipeline_id"]: float(r["value"][1]) for r in result
    } == want)  # fmt: skip


def test_each_pipeline_counts_its_own_runs_once_whatever_launched_them(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    pushgateway: PushgatewayServer,
    prometheus: PrometheusServer,
) -> None:
    cursor, said = tick(defs, instance, None)  # every pipeline's totals at zero
    assert "for pipeline orders" in said and "for pipeline payments" in said, said
    wait_by_pid(prometheus, BY_PID_FETCH, {"orders": 0, "payments": 0})

    # orders: its schedule's job (carries the pipeline run tag)
    orders_run = defs.resolve_job_def("orders_job").execute_in_process(
        instance=instance, partition_key=DAY
    )
    assert orders_run.success and orders_run.dagster_run.tags[PIPELINE_TAG] == "orders"
    # payments: launched from the asset graph (the implicit asset job, no pipeline run tag)
    asset_job = defs.resolve_implicit_global_asset_job_def()
    payments_run = asset_job.execute_in_process(
        instance=instance, partition_key=DAY, asset_selection=chain("payments")
    )
    assert payments_run.success and PIPELINE_TAG not in payments_run.dagster_run.tags
    cursor, said = tick(defs, instance, cursor)
    assert "pushed totals of 1 run(s) (1 new this tick) for pipeline orders" in said, said
    assert "pushed totals of 1 run(s) (1 new this tick) for pipeline payments" in said, said
    assert "other pipelines" not in said

    # Prometheus, scraping the Pushgateway: each pipeline its own count, never the sum.
    wait_by_pid(prometheus, BY_PID_LOAD, {"orders": ORDERS[DAY], "payments": PAYMENTS[DAY]})
    wait_by_pid(prometheus, BY_PID_FETCH, {"orders": ORDERS[DAY], "payments": PAYMENTS[DAY]})
    runs = 'sum by (pipeline_id) (pipeline_runs_total{result="success"})'
    assert by_pid(prometheus, runs) == {"orders": 1, "payments": 1}
    # The step groups: each pipeline's steps under its own pipeline_id only.
    steps = prometheus.query("count by (pipeline_id, step) (pipeline_step_success)")
    assert {(r["metric"]["pipeline_id"], r["metric"]["step"]) for r in steps} == {
        (pid, f"{pid}__{step}")
        for pid in ("orders", "payments")
        for step in ("raw", "clean", "loaded")
    }
    # pipeline_info: each pipeline's own source and sink types (the shared resource's are
    # "unknown"), as the CLI and the environment deployment name them
    info = prometheus.query("count by (pipeline_id, source_type, sink_type) (pipeline_info)")
    assert {
        (r["metric"]["pipeline_id"], r["metric"]["source_type"], r["metric"]["sink_type"])
        for r in info
    } == {("orders", "csv", "sqlite"), ("payments", "csv", "sqlite")}

    # The seed's queries answer per pipeline_id (evaluated at the newest scrape, where the
    # one-minute window holds the zero the first tick pushed and the counts: exact).
    time.sleep(1.5)
    selector = 'pipeline_records_processed_total{stage="fetch"}'
    at = max(float(r["value"][1]) for r in prometheus.query(f"timestamp({selector})"))
    per_second = {
        pid: sum(
            float(r["value"][1])
            for r in prometheus.query(RECORDS_PER_SECOND, at)
            if selector_matches(r, f"pipeline_id={pid}")
        )
        for pid in ("orders", "payments")
    }
    assert per_second == pytest.approx(
        {"orders": ORDERS[DAY] / 60, "payments": PAYMENTS[DAY] / 60}, rel=1e-9
    )
    assert by_pid(prometheus, BY_PIPELINE["records_per_second"], at) == pytest.approx(
        per_second, rel=1e-9
    )
    assert by_pid(prometheus, BY_PIPELINE["success_rate"], at) == pytest.approx(
        {"orders": 100.0, "payments": 100.0}
    )
    for expr in (ERROR_RATE, BY_PIPELINE["error_rate"]):
        failed = [r for r in prometheus.query(expr, at) if float(r["value"][1]) != 0]
        assert failed == [], expr
    assert {r["metric"]["pipeline_id"] for r in prometheus.query(ERROR_RATE, at)} == {
        "orders",
        "payments",
    }
    for expr in (P95_LATENCY, BY_PIPELINE["p95_insert"]):
        p95 = prometheus.query(expr, at)
        assert sorted(r["metric"]["pipeline_id"] for r in p95) == ["orders", "payments"], expr
        assert all(0 < float(r["value"][1]) < 60 for r in p95), p95

    # One run of every asset (Dagster's all-assets job, as a backfill of both launches):
    # counted once for each pipeline, each step's records under its own pipeline.
    both = asset_job.execute_in_process(instance=instance, partition_key=NEXT)
    assert both.success
    assert {e.asset_key for e in both.get_asset_materialization_events()} == {
        *chain("orders"),
        *chain("payments"),
        dg.AssetKey(["orders", "unplaced"]),  # every asset: the counts of records of no day
        dg.AssetKey(["payments", "unplaced"]),
    }
    cursor, said = tick(defs, instance, cursor)
    assert "pushed totals of 2 run(s) (1 new this tick) for pipeline orders" in said, said
    assert "pushed totals of 2 run(s) (1 new this tick) for pipeline payments" in said, said
    both_days = {"orders": sum(ORDERS.values()), "payments": sum(PAYMENTS.values())}
    wait_by_pid(prometheus, BY_PID_LOAD, both_days)
    assert by_pid(prometheus, BY_PID_FETCH) == both_days
    assert by_pid(prometheus, runs) == {"orders": 2, "payments": 2}
    # Freshness per pipeline: its own newest record, not the other pipeline's. It is in the
    # load step's group, pushed after the totals: a scrape may fall between the two PUTs.
    fresh = "max by (pipeline_id) (pipeline_last_record_timestamp_seconds)"
    wait_by_pid(prometheus, fresh, {
        pid: datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
        for pid, ts in NEWEST.items()
    })  # fmt: skip
    # Every dashboard panel answers per pipeline: each series it finds is one pipeline's.
    for expr in dashboard_queries():
        result = prometheus.query(grafana_to_promql(expr))
        if result:  # errors, retries…: no such records in these runs
            assert {r["metric"].get("pipeline_id") for r in result} == {"orders", "payments"}, (
                expr,
                result,
            )
    # Nothing under the resource's default pipeline_id: every run went to its pipeline.
    assert gateway_samples(pushgateway, "pipeline_runs_total", pipeline_id="default") == []
