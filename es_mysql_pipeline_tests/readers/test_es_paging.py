"""A page of search hits as a frame: the same records, in the same order with the same keys,
as one record per hit; as columns when the sources share one shape."""

from __future__ import annotations

import sys
import threading
from typing import Any

import hypothesis
from elasticsearch import Elasticsearch
from hypothesis import strategies as st

from es_mysql_pipeline.readers.elasticsearch.errors import ErrorPolicy
from es_mysql_pipeline.readers.elasticsearch.paging import PageSettings, Paging
from es_mysql_pipeline.readers.elasticsearch.slice_parts import SliceCursor
from es_mysql_pipeline.records import as_rows
from es_mysql_pipeline_tests.es_server import EsTestServer


def paging(include_index: bool) -> Paging:
    settings = PageSettings("i", "1m", 100, include_index, None, None)
    policy = ErrorPolicy("http://h", "i", 1.0, 0, 0.0, 0.0, str)
    return Paging(settings, None, policy, 1, dict)  # type: ignore[arg-type]


values = st.none() | st.integers() | st.text(max_size=3) | st.lists(st.integers(), max_size=2)
names = st.sampled_from(["a", "b", "user", "_id", "_index", "@timestamp"])
sources = st.dictionaries(names, values, max_size=4)


@st.composite
def hits(draw: Any) -> list[dict[str, Any]]:
    """Pages where most hits share one source shape (that of the first) and some do not."""
    first = draw(sources)
    n = draw(st.integers(1, 6))
    page = []
    for i in range(n):
        if draw(st.booleans()) or i == 0:
            source = {k: draw(values) for k in first}
        else:
            source = draw(sources)
        hit: dict[str, Any] = {"_id": f"d{i}", "_index": f"ix{i % 2}", "sort": [i]}
        kind = draw(st.integers(0, 19))  # now and then a hit without its source, or null
        if kind:
            hit["_source"] = source if kind > 1 else None
        page.append(hit)
    return page


@hypothesis.settings(max_examples=400, deadline=None)
@hypothesis.given(page=hits(), include_index=st.booleans())
def test_a_frame_holds_the_records_a_hit_at_a_time_gives(
    page: list[dict[str, Any]], include_index: bool
) -> None:
    p = paging(include_index)
    want = [p.record(h) for h in page]
    got = as_rows(p.frame(page))
    assert got == want
    assert [list(r) for r in got] == [list(r) for r in want]  # the same key order


def test_sources_of_one_shape_become_columns() -> None:
    page = [{"_id": f"d{i}", "_index": "x", "_source": {"a": i, "b": {"c": i}}} for i in range(3)]
    frame = paging(True).frame(page)
    assert isinstance(frame, dict)
    assert list(frame) == ["_id", "a", "b", "_index"]
    assert list(frame["a"]) == [0, 1, 2] and list(frame["_index"]) == ["x", "x", "x"]
    mixed = [*page, {"_id": "e", "_source": {"b": 1, "a": 2}}]
    assert isinstance(paging(False).frame(mixed), list)


def test_a_yielded_page_is_held_by_its_consumer_alone(es_server: EsTestServer) -> None:
    """The cursor keeps no reference to the page it hands over: once taken into columns the
    page is freed, and its values (one reference each) stage without marshal tracking them."""
    es_server.create_index("held", shards=1)
    es_server.add_docs("held", ((f"d{i}", {"n": i}) for i in range(5)))
    with Elasticsearch(es_server.url) as client:
        pit = client.open_point_in_time(index="held", keep_alive="1m")["id"]
        settings = PageSettings("held", "1m", 2, False, None, None)
        policy = ErrorPolicy(es_server.url, "held", 5.0, 0, 0.0, 0.0, str)
        p = Paging(settings, client, policy, 1, dict)
        cursor = SliceCursor(0, 1, pit)
        pages = cursor.pages(p, {"match_all": {}}, threading.Event())
        seen = []
        for page in pages:
            assert sys.getrefcount(page) == 2  # this loop's name and getrefcount's argument
            seen += [hit["_id"] for hit in page]
        assert seen == [f"d{i}" for i in range(5)]
        client.close_point_in_time(id=cursor.pit_id)


def test_a_page_asks_only_for_the_source_fields_wanted() -> None:
    policy = ErrorPolicy("http://h", "i", 1.0, 0, 0.0, 0.0, str)

    def body(includes: list[str] | None, excludes: list[str] | None) -> dict[str, Any]:
        settings = PageSettings("i", "1m", 100, False, includes, excludes)
        paging = Paging(settings, None, policy, 1, dict)  # type: ignore[arg-type]
        return paging.search_body({"match_all": {}})

    assert body(["a", "b.*"], None)["_source"] == {"includes": ["a", "b.*"]}
    assert body(None, ["secret"])["_source"] == {"excludes": ["secret"]}
    assert body(["a"], ["a.x"])["_source"] == {"includes": ["a"], "excludes": ["a.x"]}
    assert body(None, None) == {"size": 100, "query": {"match_all": {}}, "track_total_hits": False}
