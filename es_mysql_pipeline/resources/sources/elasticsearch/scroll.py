"""The fallback for servers without a point-in-time API: scroll, restarted on failure.

A scroll page cannot be asked for twice, so a failure restarts the scroll and the documents
already yielded (by index and id) are skipped.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Generator, Iterator
from typing import Any

from elasticsearch import ApiError

from es_mysql_pipeline.errors import SourceError
from es_mysql_pipeline.metrics.recorder import get_recorder
from es_mysql_pipeline.records import Record
from es_mysql_pipeline.resources.sources.elasticsearch.errors import (
    ContextMissing,
    Retry,
    Transient,
    error_reason,
    error_type,
)
from es_mysql_pipeline.resources.sources.elasticsearch.paging import Paging
from es_mysql_pipeline.resources.sources.fan_in import fan_in

log = logging.getLogger(__name__)


def scroll_pages(paging: Paging) -> Generator[list[Record], None, None]:
    stop = threading.Event()
    query = paging.query()
    n = paging.slices
    if n > 1:
        count = paging.policy.call(
            "count",
            paging.policy.retry(stop),
            lambda: paging.client.count(index=paging.index, query=query),
        )
        shards = int((count.get("_shards") or {}).get("total") or 0)
        n = max(1, min(n, shards)) if shards else n
    producers = [functools.partial(_scroll_slice, paging, query, i, n) for i in range(n)]
    try:
        yield from fan_in(producers, stop, name="es-slice")
    finally:
        stop.set()


def _scroll_slice(
    paging: Paging,
    query: dict[str, Any],
    slice_id: int,
    nslices: int,
    stop: threading.Event,
) -> Iterator[list[Record]]:
    policy, client = paging.policy, paging.client
    retry = policy.retry(stop)
    seen: set[tuple[str, str]] = set()
    body = paging.search_body(query)
    body["sort"] = ["_doc"]
    body.pop("track_total_hits")
    if nslices > 1:
        body["slice"] = {"id": slice_id, "max": nslices}
    restarts = 0
    while not stop.is_set():
        scroll_id: str | None = None
        if restarts > policy.max_retries:
            raise SourceError(
                f"Elasticsearch scroll on {policy.target} keeps failing after "
                f"{policy.max_retries} restarts; check the cluster's health or raise keep_alive"
            )
        restarts += 1
        try:
            resp = policy.call(
                "scroll search",
                retry,
                lambda: client.search(index=paging.index, scroll=paging.keep_alive, body=body),
            )
            while not stop.is_set():
                scroll_id = resp.get("_scroll_id") or scroll_id
                hits = resp["hits"]["hits"]
                if not hits:
                    return
                fresh = [h for h in hits if (h.get("_index", ""), h["_id"]) not in seen]
                seen.update((h.get("_index", ""), h["_id"]) for h in fresh)
                if fresh:
                    yield paging.records(fresh)
                resp = _scroll_next(paging, scroll_id, retry)
        except (ContextMissing, Transient) as exc:
            log.warning("Elasticsearch scroll interrupted (%s); restarting it", exc)
        finally:
            if scroll_id:
                try:
                    client.clear_scroll(scroll_id=scroll_id)
                except Exception as exc:
                    log.info("clearing the scroll failed (%s)", type(exc).__name__)


def _scroll_next(paging: Paging, scroll_id: str | None, retry: Retry) -> Any:
    started = time.perf_counter()
    try:
        resp = paging.client.scroll(scroll_id=scroll_id, scroll=paging.keep_alive)
    except ApiError as exc:
        if exc.meta.status == 404 and error_type(exc) == "search_context_missing_exception":
            get_recorder().retry("fetch")
            raise ContextMissing(error_reason(exc)) from None
        retry.wait_or_raise(exc, "scroll")
        raise Transient(error_type(exc)) from None
    except Exception as exc:
        retry.wait_or_raise(exc, "scroll")
        raise Transient(type(exc).__name__) from None
    retry.ok()
    get_recorder().duration("fetch", time.perf_counter() - started)
    return resp
