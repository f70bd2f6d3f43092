"""The test server is only useful if it is as strict as Elasticsearch: check that it is."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from elasticsearch import ApiError, BadRequestError, Elasticsearch, NotFoundError

from es_mysql_pipeline_tests.es_server import EsTestServer


@pytest.fixture
def es(es_server: EsTestServer) -> Iterator[Elasticsearch]:
    es_server.create_index("logs-a", shards=2)
    es_server.add_docs(
        "logs-a",
        ((str(i), {"n": i, "@timestamp": f"2024-01-0{1 + i % 3}T00:00:00Z"}) for i in range(30)),
    )
    with Elasticsearch(es_server.url) as client:
        yield client


def error_type(exc: ApiError) -> str:
    return str(exc.body["error"]["root_cause"][0]["type"])


def test_info_and_product_header(es: Elasticsearch) -> None:
    resp = es.info()
    assert resp.meta.headers["X-Elastic-Product"] == "Elasticsearch"
    assert resp["version"]["number"].startswith("9.")
    assert "compatible-with=9" in resp.meta.headers["Content-Type"]


def test_pit_search_after_pages_every_doc_once(es: Elasticsearch, es_server: EsTestServer) -> None:
    pit = es.open_point_in_time(index="logs-*", keep_alive="1m")
    assert pit["_shards"]["total"] == 2
    pit_id, after, ids = pit["id"], None, []
    while True:
        body = {"size": 4, "sort": [{"_shard_doc": "asc"}], "pit": {"id": pit_id}}
        if after is not None:
            body["search_after"] = after
        resp = es.search(body=body)
        assert resp["pit_id"] != pit_id  # rotates per response, as the client must handle
        pit_id = resp["pit_id"]
        hits = resp["hits"]["hits"]
        if not hits:
            break
        ids += [h["_id"] for h in hits]
        after = hits[-1]["sort"]
    assert sorted(ids, key=int) == [str(i) for i in range(30)]
    es.close_point_in_time(id=pit_id)
    assert es_server.open_pits == 0 and es_server.stats.stale_pit_ids == 0


AVE = "action_request_validation_exception"


def test_rejects_what_real_elasticsearch_rejects(es: Elasticsearch) -> None:
    pit = es.open_point_in_time(index="logs-a", keep_alive="1m")["id"]
    cases = [
        (dict(body={"bogus": 1}), 400, "parsing_exception"),
        (dict(body={"pit": {"id": pit}, "search_after": [1]}), 400, "illegal_argument_exception"),
        (dict(index="logs-a", body={"pit": {"id": pit}}), 400, AVE),
        (dict(body={"pit": {"id": "bm8tc3VjaC1waXQ"}}), 404, "search_context_missing_exception"),
        (dict(index="logs-a", body={"size": 10_001}), 400, "illegal_argument_exception"),
        (dict(index="logs-a", body={"sort": ["_shard_doc"]}), 400, "illegal_argument_exception"),
        (dict(index="logs-a", body={"slice": {"id": 0, "max": 2}}), 400, AVE),
        (dict(index="logs-a", body={"query": {"nope": {}}}), 400, "parsing_exception"),
        (dict(index="missing"), 404, "index_not_found_exception"),
    ]  # fmt: skip
    for kwargs, status, etype in cases:
        with pytest.raises(ApiError) as info:
            es.search(**kwargs)  # type: ignore[arg-type]
        assert (info.value.meta.status, error_type(info.value)) == (status, etype), kwargs


def test_expired_pit_is_404(es: Elasticsearch, es_server: EsTestServer) -> None:
    pit = es.open_point_in_time(index="logs-a", keep_alive="1m")["id"]
    es_server.expire_all_contexts()
    with pytest.raises(NotFoundError, match="search_context_missing_exception"):
        es.search(pit={"id": pit}, size=1)


def test_range_and_source_filtering(es: Elasticsearch) -> None:
    resp = es.search(
        index="logs-*",
        size=100,
        query={"range": {"@timestamp": {"gte": "2024-01-02T00:00:00Z", "lt": "2024-01-03"}}},
        source_includes=["n"],
    )
    assert resp["hits"]["total"] == {"value": 10, "relation": "eq"}
    assert sorted(h["_source"]["n"] for h in resp["hits"]["hits"]) == list(range(1, 30, 3))
    assert all(set(h["_source"]) == {"n"} for h in resp["hits"]["hits"])


def test_client_of_other_major_is_refused() -> None:
    with EsTestServer(version="8.15.0") as server, Elasticsearch(server.url) as es:
        with pytest.raises(BadRequestError) as info:
            es.info()
        assert error_type(info.value) == "media_type_header_exception"


def test_auth_modes() -> None:
    with EsTestServer(api_key="k3y") as server:
        with Elasticsearch(server.url) as anon, pytest.raises(ApiError) as info:
            anon.info()
        assert info.value.meta.status == 401
        with Elasticsearch(server.url, api_key="k3y") as ok:
            assert ok.info()["tagline"] == "You Know, for Search"


def test_faults_fire_as_configured(es: Elasticsearch, es_server: EsTestServer) -> None:
    es = es.options(max_retries=0)  # the client's own retries would hide the faults
    es_server.fail_with_429(1, retry_after="7", match="_count")
    with pytest.raises(ApiError) as info:
        es.count(index="logs-a")
    assert info.value.meta.status == 429 and info.value.meta.headers["Retry-After"] == "7"
    assert es.count(index="logs-a")["count"] == 30
    es_server.inject("drop", 1, match="_count")
    with pytest.raises(Exception, match="Connection"):
        es.count(index="logs-a")
    assert es_server.stats.faults_fired == 2
    assert es_server.stats.serving_seconds > 0


def test_pages_of_whole_sources_match_filtered_pages(es_server: EsTestServer) -> None:
    """Whole sources are served as text encoded once at indexing; filtered ones are built per
    hit: both must give the same hits, sort values and escapes included."""
    docs = [
        ('a"1', {"msg": 'quote " backslash \\ tab \t ✓ \u2028', "n": 1.5, "o": {"x": [1, None]}}),
        ("b/2", {"msg": "", "n": -(2**40), "big": 2**70, "t": True}),
        ("ü3", {}),
    ]
    es_server.create_index("enc", shards=2)
    es_server.add_docs("enc", docs)
    with Elasticsearch(es_server.url) as client:
        for sort in ([{"_shard_doc": "asc"}], [{"n": "desc"}, {"_shard_doc": "asc"}]):
            pit = client.open_point_in_time(index="enc", keep_alive="1m")["id"]
            body = {"size": 10, "sort": sort, "pit": {"id": pit}}
            whole = client.search(body=body)["hits"]["hits"]
            filtered = client.search(body={**body, "_source": {"includes": ["*"]}})["hits"]["hits"]
            assert whole == filtered
            assert {h["_id"]: h["_source"] for h in whole} == dict(docs)
            assert all(len(h["sort"]) == len(sort) for h in whole)
            client.close_point_in_time(id=pit)


def _pit_read(client: Elasticsearch, sort: list[Any], extra: dict[str, Any]) -> list[Any]:
    """Every hit's id and first sort value, paged through a PIT with search_after."""
    pit = client.open_point_in_time(index="order", keep_alive="1m")["id"]
    seen, after = [], None
    while True:
        body = {"size": 7, "sort": sort, "pit": {"id": pit}, **extra}
        if after is not None:
            body["search_after"] = after
        resp = client.search(body=body)
        pit = resp["pit_id"]
        hits = resp["hits"]["hits"]
        if not hits:
            break
        seen += [(h["_id"], h["sort"][0]) for h in hits]
        after = hits[-1]["sort"]
    client.close_point_in_time(id=pit)
    return seen


@pytest.mark.parametrize("shards", [1, 3])
@pytest.mark.parametrize("slice_max", [None, 2, 5])
@pytest.mark.parametrize("query", [None, {"range": {"n": {"gte": 10}}}])
def test_shard_doc_reads_as_a_full_sort_does(
    es_server: EsTestServer, shards: int, slice_max: int | None, query: dict[str, Any] | None
) -> None:
    """A plain ``_shard_doc`` sort is served from a view of the shards' document lists, not
    sorted per search: its pages must be those of a sort the server does carry out."""
    es_server.create_index("order", shards=shards)
    es_server.add_docs("order", ((f"d{i}", {"n": i}) for i in range(60)))
    es_server.add_docs("order", ((f"d{i}", {"n": 100 + i}) for i in range(0, 60, 7)))  # updated
    extra: dict[str, Any] = {} if query is None else {"query": query}
    with Elasticsearch(es_server.url) as client:
        client.bulk(operations=[{"delete": {"_index": "order", "_id": "d5"}}], refresh=True)
        for slice_id in range(slice_max or 1):
            if slice_max is not None:
                extra["slice"] = {"id": slice_id, "max": slice_max}
            fast = _pit_read(client, [{"_shard_doc": "asc"}], extra)
            full = _pit_read(client, [{"_shard_doc": "asc"}, {"_doc": "asc"}], extra)
            assert fast == full
            assert [value for _, value in fast] == sorted(value for _, value in fast)


def test_a_closed_or_expired_pit_leaves_no_cached_matches(
    es: Elasticsearch, es_server: EsTestServer
) -> None:
    """The server caches a PIT's matches, which hold its shard snapshots: they must go with
    the PIT, or every read of a long-lived server keeps its index alive once more."""
    for ending in ("close", "expire"):
        pit = es.open_point_in_time(index="logs-a", keep_alive="1m")["id"]
        body = {"size": 5, "sort": [{"_shard_doc": "asc"}], "pit": {"id": pit}}
        es.search(body=body)
        es.search(body={**body, "sort": [{"n": "desc"}]})
        assert len(es_server._match_cache) == 2
        if ending == "close":
            es.close_point_in_time(id=pit)
        else:
            es_server.pits[next(iter(es_server.pits))].expires = 0.0
        assert es_server.open_pits == 0
        assert es_server._match_cache == {}
