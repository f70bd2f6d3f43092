"""Worker processes: spawned clean, and without the modules a pool marks unused."""

from __future__ import annotations

import importlib
import sys

import pytest

from es_mysql_pipeline.worker_processes import spawn_pool, stop_signals_blocked


def importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def loaded(prefix: str) -> list[str]:
    return sorted(k for k in sys.modules if k.split(".")[0] == prefix and sys.modules[k])


def test_modules_marked_unused_cannot_be_imported_in_the_workers() -> None:
    pytest.importorskip("requests")
    with spawn_pool(1, unused=("requests",)) as pool, stop_signals_blocked():
        assert pool.submit(importable, "requests").result() is False
        assert pool.submit(importable, "json").result() is True
    with spawn_pool(1) as pool, stop_signals_blocked():
        assert pool.submit(importable, "requests").result() is True


def test_an_elasticsearch_client_works_without_the_unused_http_stacks() -> None:
    from es_mysql_pipeline.resources.sources.elasticsearch import slice_parts

    unused = slice_parts._UNUSED_HTTP_STACKS
    with spawn_pool(1, unused=unused) as pool, stop_signals_blocked():
        assert pool.submit(_client_and_stacks).result() == ("Urllib3HttpNode", [])


def _client_and_stacks() -> tuple[str, list[str]]:
    from elasticsearch import Elasticsearch

    client = Elasticsearch("http://127.0.0.1:9")
    node = type(next(iter(client.transport.node_pool.all()))).__name__
    return node, loaded("aiohttp") + loaded("requests")
