"""The Elasticsearch time field: detected from the index mapping, ``none``, or as given.

Against the wire-level test server with the official client's real requests (and the real
cluster at ``ES_URL`` when set): a full read needs no time field; a windowed one fails at
once, in one line naming the setting, when there is none.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import pytest
from elasticsearch import Elasticsearch, helpers

from es_mysql_pipeline.errors import ConfigError
from es_mysql_pipeline.records import TimeWindow
from es_mysql_pipeline.resources.sources.elasticsearch import ElasticsearchSource, date_fields
from es_mysql_pipeline_tests.es_docs import DAY0, make_docs, parse_es_time, time_of
from es_mysql_pipeline_tests.es_server import EsTestServer
from es_mysql_pipeline_tests.fixtures.es import EsTarget

N = 600
WINDOW = TimeWindow.from_dates(DAY0.date(), DAY0.date() + dt.timedelta(days=2))
SETTING = "--es_timestamp_field / ES_TIMESTAMP_FIELD"


def read_all(source: ElasticsearchSource, window: TimeWindow | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for batch in source.read_batches(window, 97):
        for rec in batch:
            assert rec["_id"] not in out, f"read twice: {rec['_id']}"
            out[rec["_id"]] = rec
    return out


def want(
    docs: list[tuple[str, dict[str, Any]]], window: TimeWindow | None = None, field: str = ""
) -> dict[str, Any]:
    """The documents a read must return, computed from the seed, not from the source."""
    out = {}
    for doc_id, src in docs:
        if window is not None:
            raw = time_of(src, field)
            if raw is None or not window.start <= parse_es_time(raw) < window.end:
                continue
        out[doc_id] = {"_id": doc_id, **src}
    return out


def requests(target: EsTarget, endpoint: str) -> int | None:
    """Requests the test server saw for ``endpoint``; None against a real cluster."""
    if target.server is None:
        return None
    return target.server.stats.by_endpoint.get(endpoint, 0)


def timed_docs(n: int, prefix: str, time_field: str) -> list[tuple[str, dict[str, Any]]]:
    """:func:`make_docs` with every time an ISO 8601 string (with offsets and fractions), so
    that a real cluster's dynamic mapping makes the field a ``date`` whatever document its
    shards index first (an epoch-millisecond number first would make it ``long``)."""
    docs = make_docs(n, prefix, time_field=time_field)
    for _, src in docs:
        *parents, leaf = time_field.split(".")
        obj = src
        for part in parents:
            obj = obj.get(part, {})
        if isinstance(obj.get(leaf), int):
            millis = obj[leaf]
            stamp = dt.datetime.fromtimestamp(millis / 1000, dt.timezone.utc)
            obj[leaf] = stamp.isoformat(timespec="milliseconds")
    return docs


def with_extra_date(docs: list[tuple[str, dict[str, Any]]], name: str) -> list[Any]:
    """The documents with one more date field whose name is no common time-field name."""
    return [(i, {**src, name: "2030-01-01T00:00:00Z"}) for i, src in docs]


# -- detection from the mapping ----------------------------------------------------------------

CASES: dict[str, tuple[list[tuple[str, dict[str, Any]]], str | None]] = {
    # a common name wins over any other date field; among common names the most specific
    "at-timestamp": (with_extra_date(timed_docs(N, "a", "@timestamp"), "processed"), "@timestamp"),
    "ts": (with_extra_date(timed_docs(N, "b", "ts"), "indexed"), "ts"),
    "event_time-before-created_at": (
        [
            (i, {**src, "created_at": "2020-05-05T05:05:05Z"})
            for i, src in timed_docs(N, "c", "event_time")
        ],
        "event_time",
    ),
    # no common name, but exactly one date field: that one, nested names dotted
    "nested-only-date": (timed_docs(N, "d", "event.created"), "event.created"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_detects_the_time_field(es_target: EsTarget, case: str) -> None:
    docs, field = CASES[case]
    es_target.seed(f"tf-{case}", docs, shards=2)
    before = requests(es_target, "GET /{index}/_mapping")
    source = es_target.source(f"tf-{case}")
    assert source.describe()["timestamp_field"] == "auto (from the mapping)"  # no request yet
    assert source.timestamp_key() == field
    assert source.describe()["timestamp_field"] == f"{field} (detected)"
    assert field is not None
    # the detected field is the one the window filters on, exactly
    got = read_all(source, WINDOW)
    assert got == want(docs, WINDOW, field) and 0 < len(got) < N
    assert read_all(source) == want(docs)
    if before is not None:
        assert requests(es_target, "GET /{index}/_mapping") == before + 1  # once per instance


def test_several_date_fields_without_a_common_name(es_target: EsTarget) -> None:
    docs = [(i, {**src, "first_seen": "2021-01-01"}) for i, src in timed_docs(50, "e", "last_seen")]
    es_target.seed("tf-several", docs)
    source = es_target.source("tf-several")
    assert source.timestamp_key() is None
    assert source.describe()["timestamp_field"] == "none (not detected)"
    assert read_all(source) == want(docs)
    with pytest.raises(ConfigError) as info:
        read_all(source, WINDOW)
    text = str(info.value)
    assert "several date fields (first_seen, last_seen)" in text and SETTING in text


def test_explicit_mapping_is_what_counts(es_target: EsTarget) -> None:
    """A ``date`` mapped explicitly over epoch-millisecond numbers is found (dynamic mapping
    would make it ``long``); ``timestamp`` mapped as ``keyword`` is no date; ``date_nanos``
    counts as a date."""
    start = int(DAY0.timestamp() * 1000)
    docs = [
        (f"x{i}", {"when": start + i * 3_600_000, "timestamp": f"t{i}", "n": i}) for i in range(60)
    ]
    es_target.seed(
        "tf-explicit",
        docs,
        properties={"when": {"type": "date_nanos"}, "timestamp": {"type": "keyword"}},
    )
    source = es_target.source("tf-explicit")
    assert source.timestamp_key() == "when"
    window = TimeWindow(DAY0, DAY0 + dt.timedelta(hours=10))
    assert sorted(read_all(source, window)) == sorted(f"x{i}" for i in range(10))


def test_a_pattern_uses_the_union_of_its_indices(es_target: EsTarget) -> None:
    plain = [(f"p{i}", {"msg": f"m{i}", "n": i}) for i in range(20)]
    timed = timed_docs(40, "q", "time")
    es_target.seed("tf-union-1", plain)
    es_target.seed("tf-union-2", timed)
    source = es_target.source("tf-union-*")
    assert source.timestamp_key() == "time"
    # the untimed index has no document in any window, and all of them in a full read
    assert read_all(source, WINDOW) == want(timed, WINDOW, "time")
    assert read_all(source) == {**want(plain), **want(timed)}


# -- no time field: a full read is fine, a windowed one fails at once ------------------------


@pytest.fixture(scope="module")
def untimed(es_target: EsTarget) -> list[tuple[str, dict[str, Any]]]:
    """Documents without ``@timestamp`` or any other date field."""
    docs = make_docs(N, "u", time_field=None)
    assert not any(time_of(src, "@timestamp") for _, src in docs)
    es_target.seed("tf-untimed", docs, shards=3)
    return docs


def test_untimed_index_reads_fully(es_target: EsTarget, untimed: list[Any]) -> None:
    source = es_target.source("tf-untimed", slices=3, page_size=50)
    assert source.timestamp_key() is None
    assert read_all(source) == want(untimed)
    assert source.describe()["timestamp_field"] == "none (not detected)"


@pytest.mark.parametrize("setting", [None, "none", "NONE"])
def test_windowed_read_without_a_time_field_fails_at_once(
    es_target: EsTarget, untimed: list[Any], setting: str | None
) -> None:
    pits, searches = requests(es_target, "POST /{index}/_pit"), requests(es_target, "POST /_search")
    mappings = requests(es_target, "GET /{index}/_mapping")
    source = es_target.source("tf-untimed", timestamp_field=setting)
    with pytest.raises(ConfigError) as info:
        next(iter(source.read_batches(WINDOW, 100)))
    text = str(info.value)
    assert "\n" not in text and SETTING in text and WINDOW.label() in text
    if setting is None:
        assert text.startswith(
            f"index {es_target.name('tf-untimed')!r} has no time field (no @timestamp, "
            "timestamp, ts, time, event_time, event_timestamp, ... of type date)"
        )
    else:
        assert text.startswith(f"es_timestamp_field is {setting!r} (no time field)")
        assert source.describe()["timestamp_field"] == "none"
    # at once: nothing searched, the point in time (the read's first step, which would report
    # a missing index) closed again; ``none`` asks for no mapping
    assert requests(es_target, "POST /_search") == searches
    if pits is not None:
        assert es_target.server is not None and es_target.server.open_pits == 0
        assert requests(es_target, "POST /{index}/_pit") == pits + 1
    if mappings is not None:
        extra = 1 if setting is None else 0
        assert requests(es_target, "GET /{index}/_mapping") == mappings + extra


def test_none_reads_a_timed_index_fully_without_asking(es_target: EsTarget) -> None:
    docs = timed_docs(80, "n", "@timestamp")
    es_target.seed("tf-none", docs)
    before = requests(es_target, "GET /{index}/_mapping")
    source = es_target.source("tf-none", timestamp_field="none")
    assert source.timestamp_key() is None
    assert read_all(source) == want(docs)
    assert requests(es_target, "GET /{index}/_mapping") == before


def test_explicit_field_is_used_as_given(es_target: EsTarget) -> None:
    """``ts`` wins over a detectable ``@timestamp``, without a mapping request."""
    docs = [
        (i, {**src, "ts": src["@timestamp"]}) for i, src in timed_docs(300, "g", "@timestamp")[1:]
    ]
    docs = [(i, {**src, "@timestamp": "2030-01-01T00:00:00Z"}) for i, src in docs]
    es_target.seed("tf-given", docs)
    before = requests(es_target, "GET /{index}/_mapping")
    source = es_target.source("tf-given", timestamp_field="ts")
    assert source.timestamp_key() == "ts"
    assert source.describe()["timestamp_field"] == "ts"
    got = read_all(source, WINDOW)
    assert got == want(docs, WINDOW, "ts") and got
    assert requests(es_target, "GET /{index}/_mapping") == before


def test_pattern_matching_no_index(es_target: EsTarget) -> None:
    source = es_target.source("tf-nothing-here-*")
    assert source.timestamp_key() is None
    with pytest.raises(ConfigError, match=r"matches no index.*--es_timestamp_field"):
        read_all(source, WINDOW)


@pytest.mark.parametrize("window", [None, WINDOW], ids=["full", "windowed"])
def test_missing_index_is_reported_by_the_read(
    es_server: EsTestServer, window: TimeWindow | None
) -> None:
    """No time-field message for an index that is not there: the read says what it always said."""
    source = ElasticsearchSource(hosts=[es_server.url], index="tf-missing")
    assert source.timestamp_key() is None
    with pytest.raises(
        ConfigError, match=r"^Elasticsearch index not found: .*no such index \[tf-missing\]"
    ):
        read_all(source, window)
    assert es_server.stats.by_endpoint["POST /{index}/_pit"] == 1
    if window is not None:
        assert "index not found" in str(source.no_time_field(window))
    es_server.add_docs("tf-missing", make_docs(20, "late", time_field="ts"))
    assert source.timestamp_key() == "ts"  # a missing index is not remembered as untimed


# -- the mapping may be forbidden ---------------------------------------------------------------


def test_forbidden_mapping_falls_back_in_a_full_run(
    es_server: EsTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A user with ``read`` but not ``view_index_metadata``: searches work, the mapping is 403."""
    docs = make_docs(200, "f")
    es_server.add_docs("tf-secret", docs)
    es_server.deny_metadata.add("tf-secret")
    caplog.set_level(logging.WARNING)
    source = ElasticsearchSource(hosts=[es_server.url], index="tf-secret", page_size=64)
    assert read_all(source) == want(docs)
    assert source.timestamp_key() is None
    assert source.describe()["timestamp_field"] == "none (not detected)"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("refused the mapping of tf-secret (403 security_exception" in w for w in warnings)
    assert es_server.stats.by_endpoint["GET /{index}/_mapping"] == 1  # not retried
    with pytest.raises(ConfigError) as info:
        read_all(source, WINDOW)
    text = str(info.value)
    assert "\n" not in text and SETTING in text
    assert "mapping of index 'tf-secret' could not be read (403 security_exception" in text
    # with the field given, the mapping is never needed
    given = ElasticsearchSource(
        hosts=[es_server.url], index="tf-secret", timestamp_field="@timestamp"
    )
    assert read_all(given, WINDOW) == want(docs, WINDOW, "@timestamp")
    assert es_server.stats.by_endpoint["GET /{index}/_mapping"] == 1


def test_transient_mapping_failures_are_retried(es_server: EsTestServer) -> None:
    es_server.add_docs("tf-flaky", make_docs(30, "r", time_field="ts"))
    es_server.fail_with_503(2, match="_mapping$")
    source = ElasticsearchSource(hosts=[es_server.url], index="tf-flaky", retry_backoff=0.01)
    assert source.timestamp_key() == "ts"
    assert es_server.stats.by_endpoint["GET /{index}/_mapping"] == 3


# -- reading a mapping -------------------------------------------------------------------------


def test_date_fields_of_a_mapping_response() -> None:
    response = {
        "logs-1": {
            "mappings": {
                "dynamic_date_formats": ["strict_date_optional_time"],
                "properties": {
                    "event": {
                        "properties": {
                            "created": {"type": "date"},
                            "ingested": {"type": "date_nanos"},
                            "kind": {"type": "keyword"},
                        }
                    },
                    "labels": {"type": "object", "properties": {"at": {"type": "date"}}},
                    "spans": {"type": "nested", "properties": {"start": {"type": "date"}}},
                    "msg": {"type": "text", "fields": {"d": {"type": "date"}}},
                    "range": {"type": "date_range"},
                },
                "runtime": {"day": {"type": "date"}},
            }
        },
        "logs-2": {"mappings": {"properties": {"ts": {"type": "date"}}}},
        "logs-3": {"mappings": {}},
        # odd shapes are passed over, never a crash
        "logs-4": {"mappings": {"properties": {"odd": "text", "obj": {"properties": ["x"]}}}},
        "logs-5": "not an index body",
        "logs-6": {"mappings": ["not", "a", "mapping"]},
    }
    assert date_fields(response) == ["event.created", "event.ingested", "labels.at", "ts"]
    assert date_fields({}) == []


def test_server_mapping_is_shaped_like_elasticsearch(es_server: EsTestServer) -> None:
    """What ES 8/9 dynamic mapping makes of a document, through the official client."""
    with Elasticsearch(es_server.url) as es:
        es.indices.create(index="m-1", mappings={"properties": {"code": {"type": "keyword"}}})
        first = {
            "@timestamp": "2024-03-01T10:00:00.123+02:00",
            "day": "2024-03-01",
            "spaced": "2024-03-01 10:00:00",
            "code": 7,
            "n": 1,
            "x": 0.5,
            "ok": True,
            "nothing": None,
            "tags": ["a", "b"],
            "user": {"geo": {"seen": "2024-03-01T00:00:00Z"}},
            "a.b": 1,
        }
        second = {"n": 2, "late": 1.0, "day": "2024-03-02"}
        actions = [
            {"_index": "m-1", "_id": str(i), "_source": d} for i, d in enumerate([first, second])
        ]
        helpers.bulk(es, actions, refresh=True)
        text = {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}}
        assert es.indices.get_mapping(index="m-1").body == {
            "m-1": {
                "mappings": {
                    "properties": {
                        "@timestamp": {"type": "date"},
                        "a": {"properties": {"b": {"type": "long"}}},
                        "code": {"type": "keyword"},
                        "day": {"type": "date"},
                        "late": {"type": "float"},
                        "n": {"type": "long"},
                        "ok": {"type": "boolean"},
                        "spaced": text,
                        "tags": text,
                        "user": {"properties": {"geo": {"properties": {"seen": {"type": "date"}}}}},
                        "x": {"type": "float"},
                    }
                }
            }
        }
        es.indices.create(index="m-2", mappings={"date_detection": False})
        helpers.bulk(es, [{"_index": "m-2", "_id": "1", "_source": {"t": "2024-03-01"}}])
        assert set(es.indices.get_mapping(index="m-*").body) == {"m-1", "m-2"}
        assert es.indices.get_mapping(index="m-2")["m-2"]["mappings"]["properties"] == {"t": text}
        assert es.indices.get_mapping(index="zzz-*").body == {}
        assert es.indices.get_mapping(index="m-1,zzz", ignore_unavailable=True).body.keys() == {
            "m-1"
        }
        assert set(es.indices.get_mapping().body) == {"m-1", "m-2"}
