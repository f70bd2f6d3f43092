"""Database restart mid-load: the server goes away (clean shutdown, or ``kill -9``) while
batches are in flight, and comes back. Batches that failed with connection-class errors
are retried as whole transactions with backoff; the load completes with exact contents, and
the load's ``retries`` metadata equals what ``pipeline_retries_total`` counted.

A private MariaDB (own datadir and port) is stopped, not the shared test server, so tests
running at the same time are not disturbed; the fixture removes it even on failure.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import dagster as dg
import pytest
from prometheus_client import CollectorRegistry

from es_mysql_pipeline.metrics.catalog import PrometheusRecorder
from es_mysql_pipeline.metrics.recorder import set_recorder
from es_mysql_pipeline.resources.sinks import SqlSink
from es_mysql_pipeline.resources.sources import FileSource
from es_mysql_pipeline_tests.chaos import common
from es_mysql_pipeline_tests.chaos.conftest import CsvFactory
from es_mysql_pipeline_tests.helpers import make_resources, metadata, run_unpartitioned

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.slow]

#: Enough rows that the load is still going when the server stops (at ROWS // 20 rows
#: committed): at 60,000 the column-staged load could finish before a clean shutdown landed.
ROWS = 200_000


def step_retries(result: dg.ExecuteInProcessResult) -> int:
    """Dagster-level step retries (the sink's own retries must have been enough)."""
    return sum(1 for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY")


@pytest.mark.parametrize("how", ["shutdown", "kill -9"])
def test_database_restart_mid_load(
    how: str, private_mariadb: common.PrivateMariaDB, csv_factory: CsvFactory, tmp_path: Path
) -> None:
    server = private_mariadb
    table = f"restart_{how.split()[0]}"
    source = csv_factory(ROWS, 6)
    expected = common.expected_rows(source)
    sink = SqlSink(
        url=server.url,
        table=table,
        batch_size=1000,
        workers=2,
        max_retries=8,
        retry_backoff_seconds=0.5,
    )
    events: list[str] = []

    def outage() -> None:
        deadline = time.monotonic() + 120
        while common.row_count(table, server.port) < ROWS // 20:
            if time.monotonic() > deadline:
                events.append("load never reached a twentieth")
                return
            time.sleep(0.05)
        events.append(f"stopping at {common.row_count(table, server.port)} rows")
        server.shutdown() if how == "shutdown" else server.kill()
        time.sleep(2.0)  # down for a while: connects are refused
        server.start()
        events.append("started again")

    registry = CollectorRegistry()
    recorder = PrometheusRecorder("chaos", registry)
    previous = set_recorder(recorder)
    thread = threading.Thread(target=outage, daemon=True)
    try:
        thread.start()
        result = run_unpartitioned(
            make_resources(str(tmp_path), sink=sink, source=FileSource(path=str(source)))
        )
        thread.join(180)
    finally:
        set_recorder(previous)
        if not server.alive():
            server.start()
    comparison = common.compare_table(table, expected, port=server.port)
    load = metadata(result, "loaded_records") if result.success else {}
    counted = registry.get_sample_value(
        "pipeline_retries_total", {"pipeline_id": "chaos", "stage": "load"}
    )
    ok = (
        result.success
        and comparison.exact
        and int(load.get("retries", 0)) >= 1
        and counted == load.get("retries")
        and step_retries(result) == 0
    )
    common.report(
        f"database restart mid-load ({how})",
        1,
        comparison,
        load.get("retries", "-"),
        ok,
        "; ".join(events),
    )
    assert events[-1:] == ["started again"], events
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    assert comparison.exact, str(comparison)
    assert load["retries"] >= 1, load
    assert counted == load["retries"]
    assert step_retries(result) == 0
    assert (
        load["processed"] == load["inserted"] + load["updated"] + load["skipped"] + load["failed"]
    )
