"""Metadata values the assets share: paths a user can open, text where there is none."""

from __future__ import annotations

import os

import dagster as dg

from es_mysql_pipeline import metadata_keys as keys


def path_value(path: str | None) -> dg.MetadataValue:
    """An absolute path (or the URL as given); text, never a path, when there is none.

    The steps write relative to the directory the code server runs in, which the UI does
    not show, so a relative path would not say where to look.
    """
    if not path:
        return dg.MetadataValue.text(keys.NOTHING)
    if "://" in path:
        return dg.MetadataValue.path(path)
    return dg.MetadataValue.path(os.path.abspath(path))


def timing(rows: int, elapsed: float) -> dict[str, float]:
    return {
        keys.DURATION_SECONDS: round(elapsed, 3),
        "rows_per_second": round(rows / elapsed, 1) if elapsed > 0 else 0.0,
    }
