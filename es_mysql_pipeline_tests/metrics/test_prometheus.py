"""Proven against real Prometheus: promtool, the seed's queries, and the Grafana dashboard."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import dagster as dg
import pytest
from prometheus_client import CollectorRegistry

from es_mysql_pipeline.metrics.catalog import PrometheusRecorder
from es_mysql_pipeline.metrics.endpoint import start_metrics_server
from es_mysql_pipeline.metrics.pushgateway import PushgatewayResource
from es_mysql_pipeline_tests.fixtures.prometheus import REPO, PrometheusServer, PushgatewayServer

from .metrics_job import FAILED, INSERTED, P95_INSERT, PROCESSED, make_defs, run, tick
from .seed_queries import WATCH_QUERIES, check_seed_queries, check_watch_queries

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DASHBOARD = REPO / "deploy" / "grafana-dashboard.json"


def promtool_ok(promtool: str, *args: str, cwd: Path = REPO) -> str:
    proc = subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def test_promtool_check_config(promtool: str) -> None:
    assert "SUCCESS" in promtool_ok(promtool, "check", "config", "prometheus.example.yml")


def test_promtool_check_rules(promtool: str) -> None:
    assert "SUCCESS: 7 rules found" in promtool_ok(promtool, "check", "rules", "deploy/alerts.yml")


def test_promtool_test_rules_covers_every_alert(promtool: str) -> None:
    assert "SUCCESS" in promtool_ok(promtool, "test", "rules", "deploy/alerts_test.yml")
    alerts = set(re.findall(r"- alert: (\w+)", (REPO / "deploy/alerts.yml").read_text()))
    tested = set(re.findall(r"alertname: (\w+)", (REPO / "deploy/alerts_test.yml").read_text()))
    assert alerts and alerts == tested


def dashboard_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    assert len(exprs) >= 20
    return exprs


def grafana_to_promql(expr: str) -> str:
    return (
        expr.replace("$pipeline_id", ".+")
        .replace("$__rate_interval", "1m")
        .replace("$__range", "5m")
    )


def test_dagster_runs_seed_queries_and_dashboard(
    prometheus: PrometheusServer, pushgateway: PushgatewayServer, instance: dg.DagsterInstance
) -> None:
    """Runs through Dagster (hooks + sensor), Pushgateway, Prometheus: exact values."""
    defs = make_defs(PushgatewayResource(url=pushgateway.url, pipeline_id="dag"))
    cursor = tick(defs, instance, None)  # pushes the totals at zero
    prometheus.wait_for('pipeline_records_processed_total{pipeline_id="dag",stage="fetch"}')
    for fail in (False, False, True):
        run(defs, instance, fail=fail)
        cursor = tick(defs, instance, cursor)
        time.sleep(1.5)  # at least one scrape per run
    prometheus.wait_for('pipeline_runs_total{result="failure"} == 1')
    prometheus.wait_for('pipeline_records_processed_total{stage="fetch"} == 300')
    # increase() needs two samples of a series: wait until the newest ones have them.
    for series in ("pipeline_errors_total", "pipeline_retries_total"):
        prometheus.wait_for(f'count_over_time({series}{{pipeline_id="dag"}}[5m]) >= 2')
    at = time.time()
    check_seed_queries(
        prometheus,
        "pipeline_id=dag",
        processed=3 * PROCESSED,
        inserted=3 * INSERTED,
        failed=3 * FAILED,
        p95_insert=P95_INSERT,
        at=at,
    )
    # Every dashboard query is valid PromQL for real Prometheus and finds data.
    empty = [e for e in dashboard_queries() if not prometheus.query(grafana_to_promql(e), at)]
    assert empty == []
    # The alert rules loaded into this Prometheus, and the failed run's alert is pending/firing.
    rules = prometheus.api("rules")["groups"][0]["rules"]
    assert {r["name"] for r in rules} >= {"PipelineRunFailed", "PipelineInErrorState"}
    assert all(r["health"] == "ok" for r in rules)


def test_cli_endpoint_seed_queries(prometheus: PrometheusServer) -> None:
    """The CLI's /metrics, scraped every second: the seed's queries give the known values."""
    recorder = PrometheusRecorder("cli", CollectorRegistry(), source_type="csv", sink_type="jsonl")
    server = start_metrics_server(
        "127.0.0.1", 0, recorder.registry, {"pipeline_id": "cli"}, recorder=recorder
    )
    try:
        prometheus.add_target(f"127.0.0.1:{server.port}")
        prometheus.wait_for('pipeline_records_processed_total{pipeline_id="cli",stage="fetch"}')
        for _ in range(8):
            recorder.records("processed", 50, "fetch")
            recorder.records("inserted", 45, "load")
            recorder.records("failed", 5, "load")
            recorder.duration("insert", 0.3)
            time.sleep(0.5)
        prometheus.wait_for(
            'pipeline_records_processed_total{pipeline_id="cli",stage="fetch"} == 400'
        )
        time.sleep(1.2)
        check_seed_queries(
            prometheus,
            "pipeline_id=cli",
            processed=400,
            inserted=360,
            failed=40,
            p95_insert=P95_INSERT,
            at=time.time(),
        )
    finally:
        server.stop()


def test_watch_queries_count_skips_as_success_and_run_time_as_throughput(
    prometheus: PrometheusServer,
) -> None:
    """A first load, then a re-run in skip mode with no failure: the seed's success rate
    falls to about half, the watched one stays at what succeeded (issue 27)."""
    recorder = PrometheusRecorder("watch", CollectorRegistry(), source_type="csv", sink_type="sql")
    server = start_metrics_server(
        "127.0.0.1", 0, recorder.registry, {"pipeline_id": "watch"}, recorder=recorder
    )
    try:
        prometheus.add_target(f"127.0.0.1:{server.port}")
        prometheus.wait_for('pipeline_records_processed_total{pipeline_id="watch",stage="fetch"}')
        time.sleep(1.2)  # a scrape of the zeros first: increase() sees the whole of each run
        for inserted, updated, skipped, failed, seconds in [
            (80, 5, 10, 5, 4.0),
            (0, 0, 100, 0, 1.0),
        ]:
            recorder.records("processed", 100, "fetch")
            recorder.records("inserted", inserted, "load")
            recorder.records("updated", updated, "load")
            recorder.records("skipped", skipped, "load")
            recorder.records("failed", failed, "load")
            recorder.duration("run", seconds)
            time.sleep(1.2)
        prometheus.wait_for(
            'pipeline_records_skipped_total{pipeline_id="watch",stage="load"} == 110'
        )
        prometheus.wait_for('pipeline_run_duration_seconds_count{pipeline_id="watch"} == 2')
        check_watch_queries(
            prometheus, "watch", processed=200, succeeded=195, run_seconds=5.0, at=time.time()
        )
    finally:
        server.stop()


def test_dashboard_and_metrics_md_show_the_watch_queries() -> None:
    """The tested queries are the ones a user reads: in METRICS.md verbatim, and on the
    dashboard with its ``pipeline_id`` filter and the dashboard's range."""
    unfiltered = {
        re.sub(r'pipeline_id=~"\$pipeline_id",?', "", e).replace("{}", "").replace("$__range", "1d")
        for e in dashboard_queries()
    }
    metrics_md = (REPO / "METRICS.md").read_text(encoding="utf-8")
    for query in WATCH_QUERIES:
        assert query in unfiltered
        assert query in metrics_md
