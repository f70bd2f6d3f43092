"""The run's worker processes, started before Dagster is imported: they import on the
second core while this process imports Dagster, and the fetch, transform and load borrow
them in turn instead of each starting its own pool (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator

from es_mysql_pipeline.worker_processes import may_spawn, process_count, shared_pool

_FILE_READING = "es_mysql_pipeline.readers.file_reading"
_SLICE_PARTS = "es_mysql_pipeline.readers.elasticsearch.slice_parts"
_TRANSFORM = "es_mysql_pipeline.transform_engine"


@contextlib.contextmanager
def run_workers(args: argparse.Namespace) -> Iterator[None]:
    """The shared pool for a run that will use worker processes; nothing for one that
    will not (a small file, one process asked for)."""
    workers = max(process_count(args.fetch_processes), process_count(args.transform_processes))
    preload = _fetch_modules(args)
    if workers < 2 or preload is None or not may_spawn():
        yield
        return
    # Not the load's modules (SQLAlchemy): the first load job imports them, rather than
    # every worker holding them through the fetch, which raises an Elasticsearch run's peak.
    preload.append(_TRANSFORM)
    with shared_pool(workers, preload, _unused(args)):
        yield


def _fetch_modules(args: argparse.Namespace) -> list[str] | None:
    if args.source_type == "elasticsearch":
        return None if args.es_slices == 1 else [_SLICE_PARTS]
    from es_mysql_pipeline.readers.file_reading import PARALLEL_MIN_BYTES

    try:
        big = os.path.getsize(args.csv_file or "") >= PARALLEL_MIN_BYTES
    except OSError:  # the source's own check reports it
        return None
    return [_FILE_READING] if big else None


def _unused(args: argparse.Namespace) -> tuple[str, ...]:
    """The HTTP stacks the Elasticsearch client imports but never uses, unless staging is
    remote (reading it back may need them)."""
    if args.source_type != "elasticsearch" or "://" in (args.staging_dir or ""):
        return ()
    from es_mysql_pipeline.readers.elasticsearch import UNUSED_HTTP_STACKS

    return UNUSED_HTTP_STACKS
