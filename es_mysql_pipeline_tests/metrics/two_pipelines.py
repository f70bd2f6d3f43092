"""Two YAML pipelines with known counts per day: CSV orders and JSON Lines payments into SQLite.

Both are daily from the same start, so Dagster's implicit asset job spans both (a run of
every asset touches two pipelines). The counts are the files' rows, nothing the pipeline
computes: ``ORDERS`` and ``PAYMENTS`` map a day to its number of records.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import dagster as dg

from es_mysql_pipeline.metrics.pushgateway import PushgatewayResource

ORDERS = {"2024-01-02": 103, "2024-01-03": 40}
PAYMENTS = {"2024-01-02": 72, "2024-01-03": 25}
#: The newest record of each pipeline on 2024-01-03 (its data freshness after that day).
NEWEST = {"orders": "2024-01-03T20:00:00Z", "payments": "2024-01-03T21:00:00Z"}


def _times(day: str, n: int, last: str) -> Iterator[str]:
    """``n`` timestamps on ``day``, the last one ``last`` (when it is on that day)."""
    for i in range(n - 1):
        yield f"{day}T{i % 20:02d}:{i % 60:02d}:00Z"
    yield last if last.startswith(day) else f"{day}T19:00:00Z"


def write_sources(root: Path) -> tuple[Path, Path]:
    orders, payments = root / "orders.csv", root / "payments.jsonl"
    with orders.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["id", "timestamp", "customer", "amount"])
        for day, n in ORDERS.items():
            for i, ts in enumerate(_times(day, n, NEWEST["orders"])):
                writer.writerow([f"o-{day}-{i}", ts, f"c{i % 7}", f"{i * 1.5:.2f}"])
    with payments.open("w") as out:
        for day, n in PAYMENTS.items():
            for i, ts in enumerate(_times(day, n, NEWEST["payments"])):
                record = {"id": f"p-{day}-{i}", "timestamp": ts, "method": "card", "cents": i}
                out.write(json.dumps(record) + "\n")
    return orders, payments


def write_defs(root: Path) -> Path:
    """A defs.yaml declaring the two pipelines; sources and sinks under ``root``."""
    orders, payments = write_sources(root)
    defs = root / "defs.yaml"
    defs.write_text(
        f"""\
type: es_mysql_pipeline.EsMysqlPipelines
attributes:
  data_dir: "{root}"
  defaults:
    partitions: {{type: daily, start: "2024-01-01"}}
    schedule: "15 0 * * *"
  pipelines:
    - name: orders
      source: {{path: "{orders}"}}
      sink: {{sqlite: "{root / "shop.sqlite"}", table: orders}}
    - name: payments
      source: {{path: "{payments}", format: jsonl}}
      sink: {{sqlite: "{root / "shop.sqlite"}", table: payments}}
"""
    )
    return defs


def pipelines_defs(root: Path) -> dg.Definitions:
    """The code location ``ES_MYSQL_PIPELINE_DEFS=<root>/defs.yaml`` gives, as loaded."""
    from es_mysql_pipeline.definitions import pipelines_defs as load

    return load(str(write_defs(root)))


def tick(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None) -> tuple[str, str]:
    """One evaluation of the location's metrics sensor as the daemon does it."""
    sensor = defs.resolve_sensor_def("pipeline_metrics_sensor")
    pushgateway = (defs.resources or {})["pushgateway"]
    assert isinstance(pushgateway, PushgatewayResource) and pushgateway.enabled
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"pushgateway": pushgateway}
    ) as context:
        data = sensor.evaluate_tick(context)
        assert context.cursor is not None and not data.run_requests
        return context.cursor, data.skip_message or ""


def chain(pipeline: str) -> list[dg.AssetKey]:
    return [dg.AssetKey([pipeline, step]) for step in ("raw", "clean", "loaded")]
