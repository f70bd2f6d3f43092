"""ElasticsearchSource against the wire-level test server (and a real cluster with ES_URL).

Every read is compared with the seeded documents exactly: each ``_id`` once, each field equal.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections import Counter
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from es_mysql_pipeline.errors import ConfigError, SourceError
from es_mysql_pipeline.metrics.recorder import NullRecorder, set_recorder
from es_mysql_pipeline.readers.elasticsearch import slice_parts
from es_mysql_pipeline.readers.elasticsearch.errors import ContextMissing
from es_mysql_pipeline.records import TimeWindow
from es_mysql_pipeline.resources.sources.elasticsearch import ElasticsearchSource
from es_mysql_pipeline.staging import StagedPart
from es_mysql_pipeline_tests.es_server import EsTestServer
from es_mysql_pipeline_tests.fixtures.es import EsTarget
from es_mysql_pipeline_tests.support.tls import make_ca, make_server_cert, write_cert, write_key

SENTINEL_KEY = "SENTINEL-api-key-7f3a9c"
SENTINEL_PASSWORD = "SENTINEL-password-b41e"
DAY0 = dt.datetime(2024, 3, 1, tzinfo=dt.timezone.utc)
N_DOCS = 25_000


def make_docs(n: int, days: int = 5) -> list[tuple[str, dict[str, Any]]]:
    """``n`` documents spread over ``days`` days: nested objects, arrays, unicode, gaps."""
    docs = []
    span = days * 86_400
    for i in range(n):
        ts = DAY0 + dt.timedelta(seconds=(i * 7919) % span)
        src: dict[str, Any] = {
            "@timestamp": ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "message": f"event {i} — naïve café ☕ 日本語 {'𝄞' if i % 3 == 0 else ''}",
            "level": ["info", "warn", "error"][i % 3],
            "count": i,
            "user": {"id": i % 97, "name": f"user-{i % 97}", "geo": {"country": "DE"}},
            "tags": [f"t{i % 5}", f"t{i % 7}"],
        }
        if i % 11 == 0:
            del src["user"]  # missing nested object
        if i % 13 == 0:
            src["tags"] = []
        if i % 17 == 0:
            src["score"] = None
        if i % 19 == 0:
            src["items"] = [{"sku": f"s{i}", "qty": 1}, {"sku": "x", "qty": 2}]
        if i % 997 == 0:
            del src["@timestamp"]  # belongs to no day, but to a full read
        if i % 1000 == 1:
            # exactly on a day boundary: belongs to the later day only
            src["@timestamp"] = (DAY0 + dt.timedelta(days=i % days)).isoformat()
        docs.append((f"doc-{i:05d}", src))
    return docs


DOCS = make_docs(N_DOCS)


def expected(docs: list[tuple[str, dict[str, Any]]], window: TimeWindow | None) -> dict[str, Any]:
    out = {}
    for doc_id, src in docs:
        if window is not None:
            raw = src.get("@timestamp")
            if raw is None:
                continue
            ts = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
            if not window.start <= ts < window.end:
                continue
        out[doc_id] = {"_id": doc_id, **src}
    return out


def read_all(
    source: ElasticsearchSource, window: TimeWindow | None = None, batch_size: int = 500
) -> dict[str, Any]:
    """Read everything, failing on any duplicate or oversized batch."""
    seen: Counter[str] = Counter()
    out = {}
    for batch in source.read_batches(window, batch_size):
        assert 0 < len(batch) <= batch_size
        for rec in batch:
            seen[rec["_id"]] += 1
            out[rec["_id"]] = rec
    dupes = [k for k, v in seen.items() if v > 1]
    assert not dupes, f"read twice: {dupes[:5]}"
    return out


def read_all_parts(
    source: ElasticsearchSource,
    window: TimeWindow | None = None,
    batch_size: int = 500,
    processes: int = 2,
) -> tuple[dict[str, Any], list[StagedPart]]:
    """Read everything through worker processes (``read_parts``), failing on any duplicate;
    the parts (their files already read and deleted, as the step does) come back too."""
    parts = source.read_parts(window, batch_size, processes)
    assert parts is not None
    seen: Counter[str] = Counter()
    out, taken = {}, []
    for part in parts:
        taken.append(part)
        for batch in part.staged.batches(batch_size):
            for rec in batch:
                seen[rec["_id"]] += 1
                out[rec["_id"]] = rec
        assert sum(1 for _ in part.staged.frames()) == -(-part.staged.rows // batch_size)
        os.unlink(part.staged.path)
    dupes = [k for k, v in seen.items() if v > 1]
    assert not dupes, f"read twice: {dupes[:5]}"
    return out, taken


@pytest.fixture
def small_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Jobs of 2,000 records, so that a test's slices take several jobs each."""
    monkeypatch.setattr(slice_parts, "RECORDS_PER_JOB", 2000)


def scratch_files() -> list[str]:
    root = os.environ["ES_MYSQL_PIPELINE_SCRATCH"]
    return [os.path.join(d, f) for d, _, files in os.walk(root) for f in files]


def window_days(first: int, n: int) -> TimeWindow:
    start = (DAY0 + dt.timedelta(days=first)).date()
    return TimeWindow.from_dates(start, start + dt.timedelta(days=n))


@pytest.fixture(scope="module")
def big_index(es_target: EsTarget) -> str:
    return es_target.seed("logs-big", DOCS, shards=4)


def assert_clean(server: EsTestServer | None) -> None:
    """No PIT left open, and each request used the newest PIT id."""
    if server is not None:
        assert server.open_pits == 0
        assert server.stats.stale_pit_ids == 0


# -- exact contents ------------------------------------------------------------------------


@pytest.mark.parametrize("slices", [1, 4])
@pytest.mark.parametrize(
    "window",
    [None, window_days(1, 1), window_days(2, 3)],
    ids=["full", "one-day", "three-days"],
)
def test_reads_exact_contents(
    es_target: EsTarget,
    big_index: str,
    slices: int,
    window: TimeWindow | None,
) -> None:
    source = es_target.source("logs-big", slices=slices)
    want = expected(DOCS, window)
    got = read_all(source, window, batch_size=777)
    assert got == want
    if window is not None:
        assert 0 < len(want) < N_DOCS
    assert_clean(es_target.server)


def test_index_pattern_and_page_size_7(es_target: EsTarget, big_index: str) -> None:
    source = es_target.source("logs-b*", page_size=7)
    window = window_days(4, 1)
    assert read_all(source, window) == expected(DOCS, window)


def test_page_size_1_on_a_small_index(es_target: EsTarget) -> None:
    docs = make_docs(23)
    es_target.seed("tiny", docs, shards=2)
    got = read_all(es_target.source("tiny", page_size=1, slices=2), batch_size=5)
    assert got == expected(docs, None)
    assert_clean(es_target.server)


def test_index_of_exactly_one_page(es_target: EsTarget) -> None:
    docs = make_docs(50)
    es_target.seed("one-page", docs)
    server = es_target.server
    before = server.stats.by_endpoint.get("POST /_search", 0) if server else 0
    assert read_all(es_target.source("one-page", page_size=50)) == expected(docs, None)
    if server is not None:
        # a full page may be followed by more, so exactly one further (empty) page is asked
        assert server.stats.by_endpoint["POST /_search"] - before == 2


def test_query_is_anded_with_the_window(es_target: EsTarget, big_index: str) -> None:
    window = window_days(0, 2)
    query = '{"query": {"bool": {"filter": [{"term": {"level": "error"}}]}}}'
    got = read_all(es_target.source("logs-big", query=query), window)
    want = {k: v for k, v in expected(DOCS, window).items() if v["level"] == "error"}
    assert got == want and want


def test_source_filtering_and_index_field(es_target: EsTarget, big_index: str) -> None:
    source = es_target.source(
        "logs-big",
        source_includes=["@timestamp", "user.*"],
        source_excludes=["user.geo"],
        include_index=True,
        query='{"ids": {"values": ["doc-00001", "doc-00011"]}}',
    )
    got = read_all(source)
    assert got == {
        "doc-00001": {
            "_id": "doc-00001",
            "_index": big_index,
            "@timestamp": DOCS[1][1]["@timestamp"],
            "user": {"id": 1, "name": "user-1"},
        },
        "doc-00011": {
            "_id": "doc-00011",
            "_index": big_index,
            "@timestamp": DOCS[11][1]["@timestamp"],
        },
    }


def test_batches_are_full_until_the_last(es_server: EsTestServer) -> None:
    es_server.add_docs("b", make_docs(1001))
    source = ElasticsearchSource(hosts=[es_server.url], index="b", page_size=300)
    sizes = [len(b) for b in source.read_batches(None, 250)]
    assert sizes == [250, 250, 250, 250, 1]


def test_early_stop_closes_the_pit(es_server: EsTestServer) -> None:
    es_server.create_index("s", shards=4)
    es_server.add_docs("s", make_docs(2000))
    batches = ElasticsearchSource(hosts=[es_server.url], index="s", page_size=100, slices=4)
    gen = batches.read_batches(None, 10)
    assert isinstance(gen, Generator)
    assert len(next(gen)) == 10
    gen.close()
    assert es_server.open_pits == 0


# -- slices read by worker processes -----------------------------------------------------------


@pytest.mark.usefixtures("small_jobs")
@pytest.mark.parametrize("window", [None, window_days(1, 1)], ids=["full", "one-day"])
def test_worker_processes_read_exact_contents(
    es_target: EsTarget, big_index: str, window: TimeWindow | None
) -> None:
    source = es_target.source("logs-big", slices=4, page_size=500)
    got, parts = read_all_parts(source, window, batch_size=777)
    assert got == expected(DOCS, window)
    if window is None:  # several jobs per slice: parts come while the read goes on
        assert len(parts) > 4
    assert sum(p.staged.rows for p in parts) == len(got)
    assert all(p.read_seconds for p in parts)  # the workers' request durations travel back
    assert scratch_files() == []
    assert_clean(es_target.server)


def test_one_process_reads_with_one_slice_or_one_worker_process(es_server: EsTestServer) -> None:
    es_server.add_docs("one", make_docs(10))
    one_slice = ElasticsearchSource(hosts=[es_server.url], index="one", slices=1)
    assert one_slice.read_parts(None, 5, 2) is None
    sliced = ElasticsearchSource(hosts=[es_server.url], index="one", slices=2)
    assert sliced.read_parts(None, 5, 1) is None
    auto = ElasticsearchSource(hosts=[es_server.url], index="one")
    assert auto.read_parts(None, 5, 1) is None


@pytest.mark.usefixtures("small_jobs")
def test_by_default_one_slice_per_worker_process(es_server: EsTestServer) -> None:
    es_server.create_index("auto", shards=4)
    docs = make_docs(9000)
    es_server.add_docs("auto", docs)
    source = ElasticsearchSource(hosts=[es_server.url], index="auto", page_size=500)
    got, _ = read_all_parts(source, processes=3)
    assert got == expected(docs, None)
    assert es_server.stats.slices_seen == {(0, 3), (1, 3), (2, 3)}  # one per worker process
    assert_clean(es_server)


@pytest.mark.usefixtures("small_jobs")
@pytest.mark.parametrize(
    ("page_size", "uniform"),
    [(300, False), (500, True)],
    ids=["pages-rebatched", "pages-staged-as-columns"],
)
def test_one_shard_is_read_in_process_still_in_parts(
    es_server: EsTestServer, page_size: int, uniform: bool
) -> None:
    es_server.create_index("one", shards=1)
    docs = make_docs(7000)
    if uniform:  # one shape: pages of the batch size are staged as columns, as they come
        when = "2024-01-02T03:04:05Z"
        docs = [(i, {"@timestamp": when, "n": k}) for k, (i, _) in enumerate(docs)]
    es_server.add_docs("one", docs)
    source = ElasticsearchSource(hosts=[es_server.url], index="one", slices=4, page_size=page_size)
    got, parts = read_all_parts(source)
    assert got == expected(docs, None)
    assert [p.staged.rows for p in parts] == [2000, 2000, 2000, 1000]
    assert_clean(es_server)


@pytest.mark.usefixtures("small_jobs")
def test_closing_early_stops_the_workers_and_leaves_nothing(es_server: EsTestServer) -> None:
    es_server.create_index("s", shards=4)
    es_server.add_docs("s", make_docs(20_000))
    source = ElasticsearchSource(hosts=[es_server.url], index="s", page_size=500, slices=4)
    parts = source.read_parts(None, 500, 2)
    assert parts is not None
    first = next(parts)
    os.unlink(first.staged.path)  # taken: the step appends (and deletes) it
    started = time.monotonic()
    parts.close()  # a stop request: the step leaves the loop
    assert time.monotonic() - started < 10  # the jobs in flight finish; no new one starts
    assert scratch_files() == []
    assert es_server.open_pits == 0
    assert es_server.stats.requests < 20_000 // 500 + 10  # not read to the end


# -- transient faults: exact contents afterwards ---------------------------------------------


class CountingRecorder(NullRecorder):
    def __init__(self) -> None:
        self.retries = 0
        self.fetch_durations = 0

    def retry(self, stage: Any, n: int = 1) -> None:
        self.retries += n

    def duration(self, kind: Any, seconds: float) -> None:
        if kind == "fetch":
            self.fetch_durations += 1


@pytest.fixture
def recorder() -> Iterator[CountingRecorder]:
    rec = CountingRecorder()
    previous = set_recorder(rec)
    yield rec
    set_recorder(previous)


FAULT_DOCS = make_docs(3000)


@pytest.fixture
def fault_server(es_server: EsTestServer) -> EsTestServer:
    es_server.create_index("f", shards=4)
    es_server.add_docs("f", FAULT_DOCS)
    return es_server


def fast_source(server: EsTestServer, **kwargs: Any) -> ElasticsearchSource:
    defaults: dict[str, Any] = {"page_size": 100, "retry_backoff": 0.01, "request_timeout": 5}
    return ElasticsearchSource(hosts=[server.url], index="f", **{**defaults, **kwargs})


@pytest.mark.parametrize("slices", [1, 4])
@pytest.mark.parametrize(
    "fault",
    ["503", "502-504", "drop", "slow", "pit-expiry", "open-pit-503"],
)
def test_transient_faults_resume_exactly(
    fault_server: EsTestServer, recorder: CountingRecorder, fault: str, slices: int
) -> None:
    kwargs: dict[str, Any] = {"slices": slices}
    if fault == "503":
        fault_server.fail_with_503(3, match="POST /_search$")
    elif fault == "502-504":
        fault_server.inject("status", 1, status=502, match="_search$", after=2)
        fault_server.inject("status", 1, status=504, match="_search$", after=4)
    elif fault == "drop":
        fault_server.inject("drop", 2, match="POST /_search$", after=3)
    elif fault == "slow":
        fault_server.inject("delay", 1, match="POST /_search$", after=2, delay=1.5)
        kwargs["request_timeout"] = 0.5
    elif fault == "pit-expiry":
        fault_server.inject("expire", 1, match="POST /_search$", after=5)
    elif fault == "open-pit-503":
        fault_server.fail_with_503(2, match="/_pit$")
    got = read_all(fast_source(fault_server, **kwargs))
    assert got == expected(FAULT_DOCS, None)
    assert fault_server.stats.faults_fired >= 1
    assert recorder.retries >= 1
    assert recorder.fetch_durations >= 30 // slices
    if fault == "pit-expiry":
        assert fault_server.stats.pits_opened == 2
    time.sleep(0.1 if fault != "slow" else 1.2)  # the slow answer is still being written
    assert_clean(fault_server)


@pytest.mark.usefixtures("small_jobs")
@pytest.mark.parametrize("fault", ["503", "drop", "pit-expiry"])
def test_worker_processes_resume_exactly_after_faults(
    fault_server: EsTestServer, recorder: CountingRecorder, fault: str
) -> None:
    if fault == "503":
        fault_server.fail_with_503(3, match="POST /_search$")
    elif fault == "drop":
        fault_server.inject("drop", 2, match="POST /_search$", after=3)
    else:
        fault_server.inject("expire", 1, match="POST /_search$", after=5)
    got, parts = read_all_parts(fast_source(fault_server, slices=4), batch_size=100)
    assert got == expected(FAULT_DOCS, None)
    assert fault_server.stats.faults_fired >= 1
    assert recorder.retries >= 1  # counted in the worker, recorded by this process
    assert sum(len(p.read_seconds) for p in parts) >= 30
    if fault == "pit-expiry":
        assert fault_server.stats.pits_opened >= 2  # each slice still reading reopens one
    time.sleep(0.1)
    assert_clean(fault_server)  # the PITs the workers reopened are closed too
    assert scratch_files() == []


def test_a_failing_worker_fails_the_read_with_its_one_line(fault_server: EsTestServer) -> None:
    fault_server.fail_with_503(1000, match="POST /_search$")
    source = fast_source(fault_server, slices=4, max_retries=2)
    with pytest.raises(SourceError, match=r"still failing after 2 retries \(HTTP 503"):
        read_all_parts(source, batch_size=100)
    assert fault_server.open_pits == 0
    assert scratch_files() == []


def test_429_honours_retry_after(fault_server: EsTestServer, recorder: CountingRecorder) -> None:
    fault_server.fail_with_429(2, retry_after="1", match="POST /_search$")
    started = time.monotonic()
    got = read_all(fast_source(fault_server, page_size=1000))
    assert time.monotonic() - started >= 2.0  # two waits of Retry-After: 1
    assert got == expected(FAULT_DOCS, None)
    assert recorder.retries == 2


def test_retries_run_out_with_a_clear_error(fault_server: EsTestServer) -> None:
    fault_server.fail_with_503(100, match="POST /_search$")
    with pytest.raises(SourceError, match=r"still failing after 2 retries \(HTTP 503"):
        read_all(fast_source(fault_server, max_retries=2))
    assert fault_server.open_pits == 0


def test_a_page_with_a_failed_shard_is_asked_for_again(
    fault_server: EsTestServer, recorder: CountingRecorder
) -> None:
    fault_server.inject("shards", 2, match="POST /_search$")
    assert read_all(fast_source(fault_server, page_size=1000)) == expected(FAULT_DOCS, None)
    assert recorder.retries == 2
    fault_server.inject("shards", 100, match="POST /_search$")
    with pytest.raises(SourceError) as info:
        read_all(fast_source(fault_server, max_retries=2))
    assert str(info.value) == (
        f"Elasticsearch search at {fault_server.url}/f still failing after 2 retries (1 "
        "shard(s) failed node_disconnected_exception); check that the cluster is healthy "
        "and reachable, or raise max_retries"
    )
    assert fault_server.open_pits == 0


def test_a_point_in_time_that_keeps_expiring_names_keep_alive(fault_server: EsTestServer) -> None:
    fault_server.inject("expire", 100, match="POST /_search$")
    with pytest.raises(SourceError) as info:
        read_all(fast_source(fault_server, max_retries=2, keep_alive="30s"))
    assert str(info.value) == (
        f"Elasticsearch point in time keeps expiring on {fault_server.url}/f; raise keep_alive "
        "(now 30s)"
    )


def test_a_point_in_time_that_cannot_be_closed_is_left_to_expire(
    fault_server: EsTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    fault_server.inject("status", 1, status=500, match="DELETE /_pit$")
    caplog.set_level(logging.INFO)
    assert read_all(fast_source(fault_server, page_size=1000)) == expected(FAULT_DOCS, None)
    assert "closing the point in time failed (ApiError); it expires on its own" in caplog.text
    assert fault_server.open_pits == 1


def test_read_ids_is_every_id_of_the_read_or_an_error(fault_server: EsTestServer) -> None:
    source = fast_source(fault_server)  # pages of 1,000 ids: three of them
    assert source.read_ids(None) == {doc_id for doc_id, _ in FAULT_DOCS}
    fault_server.inject("shards", 1, match="POST /_search$")
    with pytest.raises(SourceError) as info:
        source.read_ids(None)
    assert str(info.value) == (
        f"{fault_server.url}/f: shards failed while reading ids; nothing was deleted"
    )
    assert fault_server.open_pits == 0


def test_read_ids_is_not_resumed_on_a_new_point_in_time(fault_server: EsTestServer) -> None:
    """A new point in time may not see the same documents: the id read fails instead."""
    fault_server.inject("expire", 1, match="POST /_search$", after=1)
    with pytest.raises(ContextMissing):
        fast_source(fault_server).read_ids(None)
    assert fault_server.stats.pits_opened == 1


def test_only_documents_without_a_time_are_read_as_unplaced(fault_server: EsTestServer) -> None:
    untimed = [doc_id for doc_id, src in FAULT_DOCS if "@timestamp" not in src]
    got = [(r["_id"], why) for b in fast_source(fault_server).read_unplaced(100) for r, why in b]
    reason = "no time in field '@timestamp': the record belongs to no partition"
    assert sorted(got) == [(doc_id, reason) for doc_id in sorted(untimed)]
    errors_only = fast_source(fault_server, query='{"term": {"level": "info"}}')
    got = [r["_id"] for b in errors_only.read_unplaced(100) for r, _ in b]
    assert sorted(got) == sorted(
        doc_id for doc_id, src in FAULT_DOCS if "@timestamp" not in src and src["level"] == "info"
    )
    assert list(fast_source(fault_server, timestamp_field="none").read_unplaced(100)) == []


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"index": " "}, "es_index: give an index name or pattern, e.g. logs-*"),
        ({"slices": -1}, "slices=-1 must be 0 (one per worker process) or more"),
        ({"max_retries": -1}, "max_retries=-1 must be 0 or more"),
        ({"request_timeout": 0}, "request_timeout=0.0 must be positive"),
        ({"keep_alive": "soon"}, "keep_alive='soon' must be a time value like 2m or 90s"),
        ({"ca_certs": "/nonexistent/ca.pem"},
         "ca_certs: '/nonexistent/ca.pem' does not exist or is not a file"),
        ({"password": "pw"}, "ES_PASSWORD is set but no username: set es_username as well"),
        ({"hosts": [" "]}, "es_url: give at least one Elasticsearch URL, e.g. localhost:9200"),
    ],
)  # fmt: skip
def test_bad_settings_are_one_line_each(settings: dict[str, Any], message: str) -> None:
    source = ElasticsearchSource(**{"hosts": ["http://127.0.0.1:9"], "index": "x", **settings})
    with pytest.raises(ConfigError) as info:
        source.check()
    assert str(info.value) == message


def test_tls_settings_on_a_plain_http_url_are_refused(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not used")
    source = ElasticsearchSource(hosts=["http://127.0.0.1:9"], index="x", ca_certs=str(ca))
    with pytest.raises(ConfigError) as info:
        source.check()
    assert str(info.value) == (
        "es_url / TLS settings rejected: TLS options require scheme to be 'https'"
    )


def test_a_batch_size_below_one_is_refused(es_server: EsTestServer) -> None:
    with pytest.raises(ConfigError, match=r"^batch_size=0 must be at least 1$"):
        list(ElasticsearchSource(hosts=[es_server.url], index="x").read_batches(None, 0))


# -- permanent errors: one clear line ----------------------------------------------------------


def test_index_not_found(es_server: EsTestServer) -> None:
    source = ElasticsearchSource(hosts=[es_server.url], index="nope")
    with pytest.raises(ConfigError, match=r"index not found: .*no such index \[nope\].*es_index"):
        read_all(source)


def test_bad_query_is_a_config_error(fault_server: EsTestServer) -> None:
    source = fast_source(fault_server, query='{"no_such_query": {"a": 1}}')
    with pytest.raises(ConfigError, match=r"es_query.*parsing_exception: unknown query"):
        read_all(source)
    assert fault_server.open_pits == 0
    with pytest.raises(ConfigError, match="es_query is not valid JSON"):
        fast_source(fault_server, query="{level: error}").check()
    with pytest.raises(ConfigError, match="es_query must be a Query DSL object"):
        fast_source(fault_server, query="[1, 2]").check()


@pytest.mark.parametrize("page_size", [0, 10_001])
def test_page_size_limits(es_server: EsTestServer, page_size: int) -> None:
    with pytest.raises(ConfigError, match=r"page_size=.* between 1 and 10000"):
        ElasticsearchSource(hosts=[es_server.url], index="x", page_size=page_size).check()


def test_forbidden_index(fault_server: EsTestServer) -> None:
    fault_server.deny_read.add("f")
    with pytest.raises(ConfigError, match=r"denied .* on index 'f' \(403 security_exception\)"):
        read_all(fast_source(fault_server))


def test_unreachable_host_is_a_clear_error() -> None:
    source = ElasticsearchSource(
        hosts=["127.0.0.1:9"], index="x", max_retries=1, retry_backoff=0.01
    )
    with pytest.raises(SourceError, match=r"connect at http://127.0.0.1:9/x still failing"):
        source.check()


def test_version_mismatch_says_what_to_install() -> None:
    with EsTestServer(version="8.15.3") as server:
        source = ElasticsearchSource(hosts=[server.url], index="x")
        with pytest.raises(ConfigError) as info:
            source.check()
        assert "Elasticsearch 8.15.3" in str(info.value)
        assert 'pip install "elasticsearch>=8,<9"' in str(info.value)
        with pytest.raises(ConfigError, match="pip install"):
            read_all(source)
    with (
        EsTestServer(version="7.17.2") as server,
        pytest.raises(ConfigError, match=r"too old.*upgrade the cluster"),
    ):
        ElasticsearchSource(hosts=[server.url], index="x").check()
    with EsTestServer() as server:
        server.version = "unknown"  # a front that answers GET / without the cluster's number
        with pytest.raises(ConfigError) as info:
            ElasticsearchSource(hosts=[server.url], index="x").check()
        assert str(info.value) == f"the server at {server.url} did not report a version"


# -- credentials -------------------------------------------------------------------------------


def test_api_key_from_envvar_and_never_leaked(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("ES_API_KEY", SENTINEL_KEY)
    with EsTestServer(api_key=SENTINEL_KEY) as server:
        server.add_docs("f", FAULT_DOCS[:300])
        good = ElasticsearchSource(
            hosts=[server.url], index="f", api_key=dg.EnvVar("ES_API_KEY"), page_size=50
        )
        good.check()
        assert read_all(good) == expected(FAULT_DOCS[:300], None)
        server.fail_with_503(1)  # a retry is logged too
        read_all(good)
        messages = []
        for bad in (
            ElasticsearchSource(hosts=[server.url], index="f", api_key=SENTINEL_KEY + "x"),
            ElasticsearchSource(hosts=[server.url], index="f"),
        ):
            with pytest.raises(ConfigError, match=r"rejected the credentials \(401") as info:
                bad.check()
            messages.append(str(info.value))
        assert "ES_API_KEY" in messages[0]
    for text in [*messages, caplog.text, repr(good.describe())]:
        assert SENTINEL_KEY not in text


def test_basic_auth_and_url_userinfo_never_leaked(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with EsTestServer(basic_auth=("reader", SENTINEL_PASSWORD)) as server:
        server.add_docs("f", FAULT_DOCS[:10])
        port = server.url.rsplit(":", 1)[1]
        in_url = ElasticsearchSource(
            hosts=[f"reader:{SENTINEL_PASSWORD}@127.0.0.1:{port}"], index="f"
        )
        assert in_url.describe()["hosts"] == f"http://127.0.0.1:{port}"
        assert len(read_all(in_url)) == 10
        fields = ElasticsearchSource(
            hosts=[server.url], index="f", username="reader", password=SENTINEL_PASSWORD
        )
        assert len(read_all(fields)) == 10
        wrong = ElasticsearchSource(
            hosts=[f"http://reader:{SENTINEL_PASSWORD}x@127.0.0.1:{port}"], index="f"
        )
        with pytest.raises(ConfigError) as info:
            wrong.check()
        bad_port = ElasticsearchSource(
            hosts=[f"http://reader:{SENTINEL_PASSWORD}@127.0.0.1:99999"], index="f"
        )
        with pytest.raises(ConfigError) as info2:
            bad_port.check()
    for text in [str(info.value), str(info2.value), caplog.text]:
        assert SENTINEL_PASSWORD not in text
    assert "401" in str(info.value)


# -- TLS ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("tls")
    ca_cert, ca_key = make_ca("test-ca")
    other_ca, _ = make_ca("other-ca")
    cert, key = make_server_cert(ca_cert, ca_key)
    return {
        "ca": write_cert(tmp / "test-ca.pem", ca_cert),
        "other_ca": write_cert(tmp / "other-ca.pem", other_ca),
        "cert": write_cert(tmp / "server.pem", cert),
        "key": write_key(tmp / "server.key", key),
    }


def test_https_with_ca_bundle(tls_files: dict[str, Path]) -> None:
    with EsTestServer(certfile=str(tls_files["cert"]), keyfile=str(tls_files["key"])) as server:
        assert server.url.startswith("https://")
        server.add_docs("f", FAULT_DOCS[:500])
        good = ElasticsearchSource(
            hosts=[server.url], index="f", ca_certs=str(tls_files["ca"]), page_size=64, slices=2
        )
        good.check()
        assert read_all(good) == expected(FAULT_DOCS[:500], None)
        wrong = ElasticsearchSource(
            hosts=[server.url], index="f", ca_certs=str(tls_files["other_ca"])
        )
        with pytest.raises(ConfigError, match=r"TLS connection to https://127.0.0.1:\d+ failed "
                           r"\(.*CERTIFICATE_VERIFY_FAILED.*\); set ca_certs"):  # fmt: skip
            wrong.check()
        system_only = ElasticsearchSource(hosts=[server.url], index="f")
        with pytest.raises(ConfigError, match="set ca_certs"):
            system_only.check()
        unverified = ElasticsearchSource(hosts=[server.url], index="f", verify_certs=False)
        assert len(read_all(unverified)) == 500
        with pytest.raises(ConfigError, match=r"ca_certs: .* does not exist"):
            ElasticsearchSource(hosts=[server.url], index="f", ca_certs="/nonexistent.pem").check()


# -- small things ------------------------------------------------------------------------------


def test_settings_and_description() -> None:
    source = ElasticsearchSource(
        hosts=["localhost:9200", "https://u:p4ss@es2:9243/"], index="logs-*"
    )
    assert source.describe() == {
        "type": "elasticsearch",
        "target": "http://localhost:9200,https://es2:9243/logs-*",
        "hosts": "http://localhost:9200,https://es2:9243",
        "index": "logs-*",
        "timestamp_field": "auto (from the mapping)",  # describe() never connects
    }
    assert source.id_key() == "_id"
    # a configured field (or none) needs no mapping request: host "h" is never asked
    assert ElasticsearchSource(hosts=["h"], index="i", timestamp_field="ts").timestamp_key() == "ts"
    assert (
        ElasticsearchSource(hosts=["h"], index="i", timestamp_field="none").timestamp_key() is None
    )
    window = TimeWindow(
        dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),
        dt.datetime(2024, 1, 1, 12, 0, 0, 500, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    )
    query = ElasticsearchSource(
        hosts=["h"], index="i", query='{"term": {"a": 1}}', timestamp_field="@timestamp"
    )._build_query(window)
    assert query == {
        "bool": {
            "filter": [
                {"term": {"a": 1}},
                {
                    "range": {
                        "@timestamp": {
                            "gte": "2024-01-01T00:00:00Z",
                            "lt": "2024-01-01T10:00:00.000500Z",
                            "format": "strict_date_optional_time",
                        }
                    }
                },
            ]
        }
    }
    with pytest.raises(ConfigError, match="es_url"):
        ElasticsearchSource(hosts=["ftp://x"], index="i").check()
