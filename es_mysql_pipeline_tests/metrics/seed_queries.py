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
