"""The seed's four PromQL queries, verbatim, and what known record counts imply for them."""

from __future__ import annotations

from es_mysql_pipeline_tests.fixtures.prometheus import PrometheusServer

RECORDS_PER_SECOND = "rate(pipeline_records_processed_total[1m])"
SUCCESS_RATE = (
    "sum(rate(pipeline_records_inserted_total[5m])) / "
    "sum(rate(pipeline_records_processed_total[5m])) * 100"
)
P95_LATENCY = "histogram_quantile(0.95, rate(pipeline_insert_duration_seconds_bucket[5m]))"
ERROR_RATE = "rate(pipeline_records_failed_total[5m])"

#: The seed's four queries answering per pipeline (METRICS.md, "Several pipelines"): the
#: same expressions, aggregated ``by (pipeline_id)`` (the seed's success rate sums every
#: pipeline into one number).
BY_PIPELINE = {
    "records_per_second": "sum by (pipeline_id) (rate(pipeline_records_processed_total[1m]))",
    "success_rate": (
        "sum by (pipeline_id) (rate(pipeline_records_inserted_total[5m])) / "
        "sum by (pipeline_id) (rate(pipeline_records_processed_total[5m])) * 100"
    ),
    "p95_insert": (
        "histogram_quantile(0.95, "
        "sum by (pipeline_id, le) (rate(pipeline_insert_duration_seconds_bucket[5m])))"
    ),
    "error_rate": "sum by (pipeline_id) (rate(pipeline_records_failed_total[5m]))",
}


def check_seed_queries(
    prom: PrometheusServer,
    selector: str,
    *,
    processed: int,
    inserted: int,
    failed: int,
    p95_insert: float,
    at: float,
) -> None:
    """Evaluate the seed's queries at ``at`` (all counts happened within the last minute).

    ``rate(x[w])`` is the increase inside the window over ``w`` seconds; Prometheus
    extrapolates a little past the first and last sample, so allow +15 %.
    """

    def series(expr: str) -> list[float]:
        return [float(r["value"][1]) for r in prom.query(expr, at) if selector_matches(r, selector)]

    per_second = sum(series(RECORDS_PER_SECOND))
    assert processed / 60 <= per_second * 1.0001 and per_second <= processed / 60 * 1.15, per_second
    errors = sum(series(ERROR_RATE))
    assert failed / 300 <= errors * 1.0001 and errors <= failed / 300 * 1.15, errors
    success = prom.scalar(SUCCESS_RATE, at)
    assert abs(success - 100 * inserted / processed) < 1e-6, success
    p95 = series(P95_LATENCY)
    assert len(p95) == 1 and abs(p95[0] - p95_insert) < 1e-6, p95


def selector_matches(result: dict[str, object], selector: dict[str, str] | str) -> bool:
    metric = result["metric"]
    assert isinstance(metric, dict)
    if isinstance(selector, str):
        key, _, value = selector.partition("=")
        return metric.get(key) == value
    return all(metric.get(k) == v for k, v in selector.items())


# The queries a user should watch (METRICS.md, "Queries to watch"; the dashboard's panels of
# the same names). Every record read ends inserted, updated, skipped or failed, so success
# counts the three first: a re-run in skip mode is 100 %, not the seed's ratio of inserts.
SUCCESS_COUNTING_SKIPS = (
    "100 * (sum by (pipeline_id) (increase(pipeline_records_inserted_total[1d])) "
    "+ sum by (pipeline_id) (increase(pipeline_records_updated_total[1d])) "
    "+ sum by (pipeline_id) (increase(pipeline_records_skipped_total[1d]))) "
    '/ sum by (pipeline_id) (increase(pipeline_records_processed_total{stage="fetch"}[1d]))'
)
#: Records per second of run time: pushed counters move in steps, the runs' time does not.
RUN_THROUGHPUT = (
    'sum by (pipeline_id) (increase(pipeline_records_processed_total{stage="fetch"}[1d])) '
    "/ sum by (pipeline_id) (increase(pipeline_run_duration_seconds_sum[1d]))"
)
WATCH_QUERIES = (SUCCESS_COUNTING_SKIPS, RUN_THROUGHPUT)


def check_watch_queries(
    prom: PrometheusServer,
    pipeline_id: str,
    *,
    processed: int,
    succeeded: int,
    run_seconds: float,
    at: float,
) -> None:
    """Both ratios at ``at``: each is one increase over another of series scraped together,
    so Prometheus' extrapolation cancels out."""

    def value(expr: str) -> float:
        (found,) = [
            float(r["value"][1])
            for r in prom.query(expr, at)
            if selector_matches(r, f"pipeline_id={pipeline_id}")
        ]
        return found

    success = value(SUCCESS_COUNTING_SKIPS)
    assert abs(success - 100 * succeeded / processed) < 0.01, success
    throughput = value(RUN_THROUGHPUT)
    assert abs(throughput - processed / run_seconds) < 0.01 * processed / run_seconds, throughput
