"""Connection cut and slow network: the fault proxy between the pipeline and MariaDB, and
between the pipeline and the Elasticsearch test server.

Each fault is injected mid-load (once rows are arriving, or once ES pages are being read):
cut every open connection once mid-stream, 200 ms latency, a 5 s blackhole. Afterwards the
table equals the source exactly. With a small retry limit and every connection cut, the run
fails with one clear line naming what gave up.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from prometheus_client import CollectorRegistry

from es_mysql_pipeline.metrics.catalog import PrometheusRecorder
from es_mysql_pipeline.metrics.recorder import set_recorder
from es_mysql_pipeline.resources.sinks import SqlSink
from es_mysql_pipeline.resources.sources import FileSource
from es_mysql_pipeline.resources.sources.elasticsearch import ElasticsearchSource
from es_mysql_pipeline_tests.chaos import common
from es_mysql_pipeline_tests.chaos.conftest import CsvFactory
from es_mysql_pipeline_tests.es_server import EsTestServer
from es_mysql_pipeline_tests.faultproxy import FaultProxy
from es_mysql_pipeline_tests.helpers import make_resources, metadata, run_unpartitioned
from es_mysql_pipeline_tests.support.mysql import mysql_url

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.slow]

ROWS = 20_000
INDEX = "events"


@pytest.fixture
def mysql_proxy(mysql_url: str) -> Iterator[FaultProxy]:
    with FaultProxy(common.MYSQL_HOST, common.MYSQL_PORT) as proxy:
        yield proxy


def _when(
    condition: Callable[[], bool], action: Callable[[], Any], log: list[str]
) -> threading.Thread:
    """Run ``action`` once ``condition`` holds (checked every 50 ms, for at most 2 min)."""

    def watch() -> None:
        deadline = time.monotonic() + 120
        while not condition():
            if time.monotonic() > deadline:
                log.append("fault never injected")
                return
            time.sleep(0.05)
        action()
        log.append("fault injected")

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _run(
    tmp_path: Path, source: Any, sink: SqlSink
) -> tuple[dg.ExecuteInProcessResult, float, float]:
    """One unpartitioned run; returns the result, its seconds and the counted retries."""
    registry = CollectorRegistry()
    previous = set_recorder(PrometheusRecorder("chaos", registry))
    started = time.monotonic()
    try:
        result = run_unpartitioned(make_resources(str(tmp_path), sink=sink, source=source))
    finally:
        set_recorder(previous)
    retries = sum(
        registry.get_sample_value("pipeline_retries_total", {"pipeline_id": "chaos", "stage": s})
        or 0
        for s in ("fetch", "load")
    )
    return result, time.monotonic() - started, retries


def _check(
    scenario: str,
    result: dg.ExecuteInProcessResult,
    comparison: common.Comparison,
    retries: float | None,
    extra_ok: bool,
    note: str,
) -> None:
    ok = result.success and comparison.exact and extra_ok
    common.report(scenario, 1, comparison, int(retries or 0), ok, note)
    assert result.success, common.failure_message(result)
    assert comparison.exact, str(comparison)
    assert extra_ok, note


# -- pipeline <-> MariaDB ------------------------------------------------------------------


def _proxied_sink(proxy: FaultProxy, table: str, **kwargs: Any) -> SqlSink:
    args: dict[str, Any] = {"batch_size": 1000, "workers": 2, "retry_backoff_seconds": 0.2}
    args.update(kwargs)
    return SqlSink(url=mysql_url(proxy.port), table=table, **args)


@pytest.mark.parametrize("seed", [1, 2])
def test_mysql_connections_cut_once_mid_stream(
    seed: int, mysql_proxy: FaultProxy, chaos_table: str, csv_factory: CsvFactory, tmp_path: Path
) -> None:
    source = csv_factory(ROWS, 6)
    after = random.Random(seed).randint(1, 40_000)  # mid-packet, mid-batch
    log: list[str] = []
    _when(
        lambda: common.row_count(chaos_table) >= ROWS // 5,
        lambda: log.append(f"{mysql_proxy.cut_open_connections(after)} connections armed"),
        log,
    )
    result, _, retries = _run(
        tmp_path, FileSource(path=str(source)), _proxied_sink(mysql_proxy, chaos_table)
    )
    comparison = common.compare_table(chaos_table, common.expected_rows(source))
    cuts = mysql_proxy.counters.cuts
    load = metadata(result, "loaded_records") if result.success else {}
    _check(
        f"MySQL connections cut once mid-stream (seed {seed})",
        result,
        comparison,
        retries,
        cuts >= 1 and load.get("retries") == retries and retries >= 1,
        f"cut after {after} B; cuts={cuts}; retries: metadata {load.get('retries')}, "
        f"counted {retries}; {log}",
    )


def test_mysql_latency_200ms(
    mysql_proxy: FaultProxy, chaos_table: str, csv_factory: CsvFactory, tmp_path: Path
) -> None:
    source = csv_factory(5_000, 6)
    mysql_proxy.set_latency(0.2)
    result, seconds, retries = _run(
        tmp_path, FileSource(path=str(source)), _proxied_sink(mysql_proxy, chaos_table)
    )
    comparison = common.compare_table(chaos_table, common.expected_rows(source))
    # every round trip costs >= 400 ms: connect, inspect, create, load
    _check(
        "MySQL 200 ms latency",
        result,
        comparison,
        retries,
        seconds >= 4.0 and retries == 0,
        f"{seconds:.1f}s",
    )


def test_mysql_blackhole_5s(
    mysql_proxy: FaultProxy, chaos_table: str, csv_factory: CsvFactory, tmp_path: Path
) -> None:
    source = csv_factory(ROWS, 6)
    log: list[str] = []
    _when(lambda: common.row_count(chaos_table) >= ROWS // 5, lambda: mysql_proxy.blackhole(5), log)
    result, seconds, retries = _run(
        tmp_path, FileSource(path=str(source)), _proxied_sink(mysql_proxy, chaos_table)
    )
    comparison = common.compare_table(chaos_table, common.expected_rows(source))
    held = mysql_proxy.counters.held_chunks
    _check(
        "MySQL blackhole 5 s",
        result,
        comparison,
        retries,
        held >= 1 and seconds >= 5 and log == ["fault injected"],
        f"{seconds:.1f}s, held chunks={held}",
    )


def test_mysql_retries_run_out_with_a_clear_error(
    mysql_proxy: FaultProxy, chaos_table: str, csv_factory: CsvFactory, tmp_path: Path
) -> None:
    source = csv_factory(ROWS, 6)
    log: list[str] = []

    def cut_everything() -> None:
        mysql_proxy.cut_new_connections(after_bytes=300)  # every reconnect dies in handshake
        mysql_proxy.cut_open_connections(0)

    _when(lambda: common.row_count(chaos_table) >= ROWS // 5, cut_everything, log)
    sink = _proxied_sink(mysql_proxy, chaos_table, max_retries=2, retry_backoff_seconds=0.05)
    result, seconds, retries = _run(tmp_path, FileSource(path=str(source)), sink)
    message = common.failure_message(result)
    # The sink gives up after max_retries; the asset's RetryPolicy then repeats the load,
    # whose last attempt may fail earlier (preparing the table): either message is fine as
    # long as it is one line naming the target or the retries, with the MySQL cause.
    clear = (
        not result.success
        and "\n" not in message
        and "Traceback" not in message
        and (message.startswith("gave up after 2 retries") or f"#{chaos_table}:" in message)
        and any(c in message for c in ("2013", "2006", "Lost connection", "gave up"))
        and seconds < 120
    )
    common.report(
        "MySQL cut forever, max_retries=2", 1, None, int(retries or 0), clear, message[:100]
    )
    assert clear, message
    assert retries is not None and retries >= 2


# -- pipeline <-> Elasticsearch ------------------------------------------------------------


@pytest.fixture
def es_proxy(es_server: EsTestServer, csv_factory: CsvFactory) -> Iterator[FaultProxy]:
    es_server.add_docs(INDEX, common.es_docs(csv_factory(ROWS, 6)))
    port = int(es_server.url.rsplit(":", 1)[1])
    with FaultProxy("127.0.0.1", port) as proxy:
        yield proxy


def _es_source(proxy: FaultProxy, **kwargs: Any) -> ElasticsearchSource:
    args: dict[str, Any] = {"page_size": 1000, "retry_backoff": 0.1, "request_timeout": 30}
    args.update(kwargs)
    return ElasticsearchSource(hosts=[f"http://127.0.0.1:{proxy.port}"], index=INDEX, **args)


def _mysql_sink(table: str) -> SqlSink:
    return SqlSink(url=common_url(), table=table, batch_size=1000)


def common_url() -> str:
    return mysql_url()


@pytest.mark.parametrize("seed", [1, 2])
def test_es_connections_cut_once_mid_stream(
    seed: int,
    es_proxy: FaultProxy,
    es_server: EsTestServer,
    chaos_table: str,
    csv_factory: CsvFactory,
    tmp_path: Path,
) -> None:
    after = random.Random(seed).randint(1, 200_000)
    log: list[str] = []
    _when(
        lambda: es_server.stats.by_endpoint.get("search", 0) + es_server.stats.requests >= 6,
        lambda: log.append(f"{es_proxy.cut_open_connections(after)} connections armed"),
        log,
    )
    result, _, retries = _run(tmp_path, _es_source(es_proxy), _mysql_sink(chaos_table))
    comparison = common.compare_table(chaos_table, common.expected_rows(csv_factory(ROWS, 6)))
    cuts = es_proxy.counters.cuts
    _check(
        f"ES connections cut once mid-stream (seed {seed})",
        result,
        comparison,
        retries,
        cuts >= 1 and (retries or 0) >= 1,
        f"cut after {after} B; cuts={cuts}; {log}",
    )


def test_es_latency_200ms(
    es_proxy: FaultProxy, chaos_table: str, csv_factory: CsvFactory, tmp_path: Path
) -> None:
    es_proxy.set_latency(0.2)
    result, seconds, retries = _run(tmp_path, _es_source(es_proxy), _mysql_sink(chaos_table))
    comparison = common.compare_table(chaos_table, common.expected_rows(csv_factory(ROWS, 6)))
    _check(
        "ES 200 ms latency",
        result,
        comparison,
        retries,
        seconds >= 0.4 * (ROWS // 1000) and retries == 0,
        f"{seconds:.1f}s",
    )


def test_es_blackhole_5s(
    es_proxy: FaultProxy,
    es_server: EsTestServer,
    chaos_table: str,
    csv_factory: CsvFactory,
    tmp_path: Path,
) -> None:
    log: list[str] = []
    _when(lambda: es_server.stats.requests >= 6, lambda: es_proxy.blackhole(5), log)
    result, seconds, retries = _run(tmp_path, _es_source(es_proxy), _mysql_sink(chaos_table))
    comparison = common.compare_table(chaos_table, common.expected_rows(csv_factory(ROWS, 6)))
    held = es_proxy.counters.held_chunks
    _check(
        "ES blackhole 5 s",
        result,
        comparison,
        retries,
        held >= 1 and seconds >= 5,
        f"{seconds:.1f}s, held chunks={held}",
    )


def test_es_retries_run_out_with_a_clear_error(
    es_proxy: FaultProxy, es_server: EsTestServer, chaos_table: str, tmp_path: Path
) -> None:
    log: list[str] = []

    def cut_everything() -> None:
        es_proxy.cut_new_connections(after_bytes=50)
        es_proxy.cut_open_connections(0)

    _when(lambda: es_server.stats.requests >= 6, cut_everything, log)
    result, seconds, retries = _run(
        tmp_path, _es_source(es_proxy, max_retries=2), _mysql_sink(chaos_table)
    )
    message = common.failure_message(result)
    clear = (
        not result.success
        and "still failing after 2 retries" in message
        and "\n" not in message
        and seconds < 60
    )
    common.report("ES cut forever, max_retries=2", 1, None, int(retries or 0), clear, message[:80])
    assert not result.success
    assert "still failing after 2 retries" in message, message
    assert "\n" not in message and "Traceback" not in message
