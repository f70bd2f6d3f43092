"""The bundled sample CSV parsed independently of the pipeline: what a load must produce."""

from __future__ import annotations

import csv
import importlib.resources as pkg_resources

from es_mysql_pipeline.records import parse_timestamp

#: The bundled CSV (the same file ``definitions.sample_csv_path()`` names; no Dagster import).
SAMPLE = str(pkg_resources.files("es_mysql_pipeline") / "data" / "sample_events.csv")


def sample_rows() -> list[dict[str, str]]:
    """Every row of the bundled CSV, as text."""
    with open(SAMPLE, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def expected_rows(days: set[str] | None = None) -> dict[str, dict[str, str]]:
    """Good rows of the sample (first occurrence of each id), optionally only those whose UTC
    day is in ``days``."""
    out: dict[str, dict[str, str]] = {}
    for row in sample_rows():
        if not row["id"] or None in row.values():
            continue
        try:
            day = parse_timestamp(row["timestamp"]).strftime("%Y-%m-%d")
        except ValueError:
            continue
        if days is None or day in days:
            out.setdefault(row["id"], row)
    return out
