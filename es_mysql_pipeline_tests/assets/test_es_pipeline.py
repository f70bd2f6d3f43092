"""Elasticsearch (wire-level test server, or ``ES_URL``) → the three Dagster assets → MariaDB.

The table must equal the documents exactly, every column of every row, for a full load, one
daily partition and a 3-day single-run backfill; injected faults must not change that;
permanent errors must fail the step with one clear line; credentials must never show.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster._serdes import serialize_value

from es_mysql_pipeline.assets import build_assets
from es_mysql_pipeline.assets.partitions import daily_partitions
from es_mysql_pipeline.resources.sinks import SqlSink
from es_mysql_pipeline.resources.sources.elasticsearch import ElasticsearchSource
from es_mysql_pipeline_tests.es_docs import (
    assert_table_equals,
    day,
    expected_rows,
    make_docs,
    untimed_ids,
)
from es_mysql_pipeline_tests.es_server import EsTestServer
from es_mysql_pipeline_tests.fixtures.es import EsTarget
from es_mysql_pipeline_tests.helpers import make_resources, metadata, partition_metadata

pytestmark = pytest.mark.integration

N_DOCS = 25_000
DOCS = make_docs(N_DOCS)
ALL_ROWS = expected_rows(DOCS)
#: A full run needs no time: documents without @timestamp are loaded, timestamp NULL.
FULL_ROWS = expected_rows(DOCS, untimed=True)
FAULT_DOCS = DOCS[:3000]
SENTINEL_KEY = "SENTINEL-es-api-key-5d1c0b"
SENTINEL_WRONG_KEY = "SENTINEL-wrong-es-api-key-93ae"
SENTINEL_PASSWORD = "SENTINEL-es-password-7b2f"
SENTINEL_WRONG_PASSWORD = "SENTINEL-wrong-es-password-c8d4"


def rows_on(*days: str) -> dict[str, dict[str, Any]]:
    wanted = set(days)
    return {k: v for k, v in ALL_ROWS.items() if v["timestamp"].strftime("%Y-%m-%d") in wanted}


def run(
    resources: dict[str, Any],
    first: str | None = None,
    last: str | None = None,
    instance: dg.DagsterInstance | None = None,
) -> dg.ExecuteInProcessResult:
    """Unpartitioned (``first`` None), one partition, or a partition range as one run."""
    if first is None:
        return dg.materialize(
            build_assets(None), resources=resources, instance=instance, raise_on_error=False
        )
    job = dg.Definitions(
        assets=build_assets(daily_partitions()),
        jobs=[dg.define_asset_job("j", partitions_def=daily_partitions())],
        resources=resources,
    ).resolve_job_def("j")
    tags = {}
    if last is not None:
        tags = {
            "dagster/asset_partition_range_start": first,
            "dagster/asset_partition_range_end": last,
        }
    return job.execute_in_process(
        partition_key=None if last else first,
        tags=tags,
        instance=instance,
        raise_on_error=False,
    )


def step_events(result: dg.ExecuteInProcessResult, kind: str) -> list[dg.DagsterEvent]:
    return [e for e in result.all_events if e.event_type_value == kind]


def assert_server_clean(server: EsTestServer | None) -> None:
    """Every PIT closed, and every request used the newest PIT id."""
    if server is not None:
        assert server.open_pits == 0
        assert server.stats.stale_pit_ids == 0


@pytest.fixture(scope="module")
def big_index(es_target: EsTarget) -> str:
    """25,000 documents over five days in four primary shards, seeded once per module."""
    if es_target.server is not None:  # in-process: skip 25,000 documents of _bulk JSON
        es_target.server.create_index("e2e-logs", shards=4)
        es_target.server.add_docs("e2e-logs", DOCS)
        return "e2e-logs"
    return es_target.seed("e2e-logs", DOCS, shards=4)


# -- exact contents ----------------------------------------------------------------------------


@pytest.mark.parametrize("slices", [1, 4])
@pytest.mark.parametrize("mode", ["full", "one-day", "three-day-backfill"])
def test_table_equals_documents(
    es_target: EsTarget,
    big_index: str,
    mysql_url: str,
    mysql_table: str,
    tmp_path: Path,
    mode: str,
    slices: int,
) -> None:
    res = make_resources(
        str(tmp_path),
        sink=SqlSink(url=mysql_url, table=mysql_table),
        source=es_target.source("e2e-logs", slices=slices),
    )
    if mode == "full":
        result = run(res)
        want = FULL_ROWS
    elif mode == "one-day":
        result = run(res, day(1))
        want = rows_on(day(1))
    else:
        result = run(res, day(1), day(3))
        want = rows_on(day(1), day(2), day(3))
    assert result.success, [e.message for e in step_events(result, "STEP_FAILURE")]
    assert_table_equals(mysql_url, mysql_table, want)

    fetched = metadata(result, "raw_records")
    load = metadata(result, "loaded_records")
    assert (load["inserted"], load["updated"], load["skipped"]) == (len(want), 0, 0)
    assert load["processed"] == load["inserted"] + load["failed"]
    if mode == "full":
        # documents without @timestamp belong to no day, but a full run loads them
        untimed = untimed_ids(DOCS)
        assert fetched["records"] == N_DOCS == len(want) and len(untimed) > 0
        assert fetched["timestamp_field"] == "@timestamp (detected)"
        assert load["failed"] == load["rejected_in_transform"] == 0
        assert all(want[i]["timestamp"] is None for i in untimed)
    else:
        assert fetched["records"] == len(want)  # the source read exactly the window
        assert load["failed"] == 0
        # each day's own rows: adding up the partitions gives the window's
        per_day = partition_metadata(result, "loaded_records")
        assert sum(m["dagster/row_count"] for m in per_day.values()) == len(want)
        checks = result.get_asset_check_evaluations()
        assert checks and all(c.passed for c in checks)
    if mode == "three-day-backfill":
        assert result.dagster_run.tags["dagster/asset_partition_range_end"] == day(3)
        started = [str(e.step_key) for e in step_events(result, "STEP_START")]
        assert sorted(started) == ["clean_records", "loaded_records", "raw_records"]
    assert not step_events(result, "STEP_UP_FOR_RETRY")
    assert_server_clean(es_target.server)
    if es_target.server is not None:
        es_target.server.expire_all_contexts()  # frees its cache of 25,000-hit matches


# -- injected faults: the run completes with exact contents ---------------------------------


@pytest.fixture
def fault_server(es_server: EsTestServer) -> EsTestServer:
    es_server.create_index("f", shards=4)
    es_server.add_docs("f", FAULT_DOCS)
    return es_server


def fast_source(server: EsTestServer, **kwargs: Any) -> ElasticsearchSource:
    """Small pages (many requests to fail) and short backoff (fast tests)."""
    defaults: dict[str, Any] = {
        "page_size": 100,
        "retry_backoff": 0.01,
        "request_timeout": 5,
        "slices": 4,
    }
    return ElasticsearchSource(hosts=[server.url], index="f", **{**defaults, **kwargs})


@pytest.mark.parametrize("fault", ["503", "429", "dropped-connection", "pit-expiry"])
def test_injected_fault_still_loads_exactly(
    fault_server: EsTestServer, mysql_url: str, mysql_table: str, tmp_path: Path, fault: str
) -> None:
    if fault == "503":
        injected = fault_server.fail_with_503(3, match="POST /_search$")
    elif fault == "429":
        injected = fault_server.fail_with_429(2, retry_after="0", match="POST /_search$")
    elif fault == "dropped-connection":
        injected = fault_server.inject("drop", 2, match="POST /_search$", after=3)
    else:
        injected = fault_server.inject("expire", 1, match="POST /_search$", after=5)
    res = make_resources(
        str(tmp_path),
        sink=SqlSink(url=mysql_url, table=mysql_table),
        source=fast_source(fault_server),
    )
    result = run(res, day(1), day(3))
    assert result.success, [e.message for e in step_events(result, "STEP_FAILURE")]
    want = expected_rows(FAULT_DOCS, {day(1), day(2), day(3)})
    assert_table_equals(mysql_url, mysql_table, want)
    assert injected.count == 0 and injected.fired >= 1
    # the source resumed by itself: no step re-execution, nothing read twice or skipped
    assert not step_events(result, "STEP_UP_FOR_RETRY")
    assert metadata(result, "raw_records")["records"] == len(want)
    load = metadata(result, "loaded_records")
    assert (load["inserted"], load["skipped"], load["failed"]) == (len(want), 0, 0)
    if fault == "pit-expiry":
        # slices read in one process share the PIT they reopen; slices read by worker
        # processes (slices > 1 and more than one core) each reopen their own
        assert 2 <= fault_server.stats.pits_opened <= 1 + 4
    assert_server_clean(fault_server)


# -- permanent errors: fail fast, one clear line -------------------------------------------------


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    """The description of the single failed step (what the UI and the CLI show)."""
    (failure,) = result.get_step_failure_events()
    assert failure.step_key == "raw_records"
    data = failure.step_failure_data
    assert data.user_failure_data is not None
    return str(data.user_failure_data.description)


def test_wrong_api_key_fails_at_once(mysql_url: str, mysql_table: str, tmp_path: Path) -> None:
    with EsTestServer(api_key=SENTINEL_KEY) as server:
        server.add_docs("f", FAULT_DOCS[:50])
        source = ElasticsearchSource(hosts=[server.url], index="f", api_key=SENTINEL_WRONG_KEY)
        res = make_resources(str(tmp_path), sink=SqlSink(url=mysql_url, table=mysql_table))
        result = run({**res, "source": source}, day(1))
        assert not result.success
        text = failure_text(result)
        assert "\n" not in text
        assert (
            f"Elasticsearch at {server.url} rejected the credentials (401 security_exception)"
            in text
        )
        assert "ES_API_KEY" in text and SENTINEL_WRONG_KEY not in text
        assert not step_events(result, "STEP_UP_FOR_RETRY")
        assert server.stats.by_endpoint == {"GET /": 1}  # nothing after the failed connect


def test_missing_index_fails_at_once(
    es_server: EsTestServer, mysql_url: str, mysql_table: str, tmp_path: Path
) -> None:
    source = ElasticsearchSource(hosts=[es_server.url], index="no-such-index")
    res = make_resources(str(tmp_path), sink=SqlSink(url=mysql_url, table=mysql_table))
    result = run({**res, "source": source}, day(1))
    assert not result.success
    text = failure_text(result)
    assert "\n" not in text
    assert "Elasticsearch index not found" in text
    assert "no such index [no-such-index]" in text and "es_index='no-such-index'" in text
    # permanent: no step retry; the time-field lookup found the index missing before any PIT
    assert not step_events(result, "STEP_UP_FOR_RETRY")
    assert es_server.stats.by_endpoint.get("POST /{index}/_pit", 0) <= 1


# -- credentials never appear ----------------------------------------------------------------


def everything_recorded(
    instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult
) -> list[str]:
    """Every event record of the run serialized, the run record, metadata, failure texts."""
    texts = [serialize_value(record) for record in instance.all_logs(result.run_id)]
    texts.append(repr(instance.get_run_by_id(result.run_id)))
    for event in result.get_asset_materialization_events():
        texts.append(repr(event.materialization.metadata))
    for event in result.get_step_failure_events():
        texts.append(repr(event.step_failure_data))
    return texts


@pytest.mark.parametrize(
    "auth", ["api-key-envvar", "api-key-resource", "password-envvar", "password-resource"]
)
def test_credentials_never_appear(
    auth: str,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    mysql_url: str,
    mysql_table: str,
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = [SENTINEL_KEY, SENTINEL_WRONG_KEY, SENTINEL_PASSWORD, SENTINEL_WRONG_PASSWORD]
    use_key = auth.startswith("api-key")
    right, wrong = (
        (SENTINEL_KEY, SENTINEL_WRONG_KEY)
        if use_key
        else (SENTINEL_PASSWORD, SENTINEL_WRONG_PASSWORD)
    )
    env_name = "ES_API_KEY" if use_key else "ES_PASSWORD"
    server = (
        EsTestServer(api_key=SENTINEL_KEY)
        if use_key
        else EsTestServer(basic_auth=("reader", SENTINEL_PASSWORD))
    )
    docs = FAULT_DOCS[:400]
    instance = dg.DagsterInstance.ephemeral()
    texts: list[str] = []
    with server:
        server.add_docs("f", docs)

        def source_with(secret: str) -> ElasticsearchSource:
            value: Any = secret
            if auth.endswith("envvar"):
                monkeypatch.setenv(env_name, secret)
                value = dg.EnvVar(env_name)
            cred = {"api_key": value} if use_key else {"username": "reader", "password": value}
            return ElasticsearchSource(
                hosts=[server.url], index="f", page_size=50, retry_backoff=0.01, **cred
            )

        server.fail_with_503(1, match="POST /_search$")  # a retry is logged as well
        res = make_resources(
            str(tmp_path),
            sink=SqlSink(url=mysql_url, table=mysql_table),
            source=source_with(right),
        )
        good = run(res, day(2), instance=instance)
        assert good.success
        assert_table_equals(mysql_url, mysql_table, expected_rows(docs, {day(2)}))
        texts += everything_recorded(instance, good)

        bad = run({**res, "source": source_with(wrong)}, day(2), instance=instance)
        assert not bad.success
        message = failure_text(bad)
        assert "rejected the credentials (401" in message
        texts += [message, *everything_recorded(instance, bad)]
    captured = capfd.readouterr()
    texts += [captured.out, captured.err, caplog.text]
    assert any("retry 1/" in t for t in texts)  # the retry warning was recorded somewhere
    for secret in secrets:
        leaks = [t[:200] for t in texts if secret in t]
        assert not leaks, f"{secret} leaked in {leaks}"


# -- users' indices: other time fields, none at all ----------------------------------------


@pytest.mark.parametrize("time_field", ["event_time", "event.created"])
def test_an_index_with_another_time_field_is_detected_and_partitioned(
    es_target: EsTarget, mysql_url: str, mysql_table: str, tmp_path: Path, time_field: str
) -> None:
    docs = make_docs(2_000, "tf", time_field=time_field)
    index = "users-" + time_field.replace(".", "-").replace("_", "-")
    es_target.seed(index, docs)
    res = make_resources(
        str(tmp_path),
        sink=SqlSink(url=mysql_url, table=mysql_table),
        source=es_target.source(index),
    )
    result = run(res, day(2))
    assert result.success, [e.message for e in step_events(result, "STEP_FAILURE")]
    assert metadata(result, "raw_records")["timestamp_field"] == f"{time_field} (detected)"
    want = expected_rows(docs, {day(2)}, time_field=time_field)
    assert want and len(want) < len(docs)
    assert_table_equals(mysql_url, mysql_table, want)


def test_an_index_without_any_time_field_loads_in_a_full_run(
    es_target: EsTarget, mysql_url: str, mysql_table: str, tmp_path: Path
) -> None:
    docs = make_docs(2_000, "nt", time_field=None)
    es_target.seed("users-nt", docs)
    res = make_resources(
        str(tmp_path),
        sink=SqlSink(url=mysql_url, table=mysql_table),
        source=es_target.source("users-nt"),
    )
    result = run(res)
    assert result.success, [e.message for e in step_events(result, "STEP_FAILURE")]
    load = metadata(result, "loaded_records")
    assert (load["inserted"], load["failed"]) == (len(docs), 0)
    assert_table_equals(mysql_url, mysql_table, expected_rows(docs, time_field=None))
    # a partition of the same index needs a time field: one line, no retry, nothing loaded
    again = run(res, day(1))
    assert not again.success
    text = failure_text(again)
    assert "\n" not in text and "ES_TIMESTAMP_FIELD" in text
    assert not step_events(again, "STEP_UP_FOR_RETRY")
