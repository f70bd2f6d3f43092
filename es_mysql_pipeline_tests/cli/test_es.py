"""The CLI with ``--source_type elasticsearch`` as a user runs it: a subprocess against the
wire-level test server (API key from ``ES_API_KEY``) loading MariaDB."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from es_mysql_pipeline_tests.es_docs import assert_table_equals, day, expected_rows, make_docs
from es_mysql_pipeline_tests.es_server import EsTestServer

pytestmark = pytest.mark.integration

DOCS = make_docs(5000, prefix="cli")
INDEX = "cli-logs"
SENTINEL_KEY = "SENTINEL-cli-api-key-0e8b51"
SENTINEL_WRONG_KEY = "SENTINEL-cli-wrong-key-4f62"


@pytest.fixture(scope="module")
def server() -> Iterator[EsTestServer]:
    """One test server for the module; every request must carry the sentinel API key."""
    with EsTestServer(api_key=SENTINEL_KEY) as es:
        es.create_index(INDEX, shards=2)
        es.add_docs(INDEX, DOCS)
        yield es


def cli(*args: str, key: str = SENTINEL_KEY, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("ES_PASSWORD", "ES_USER")}
    return subprocess.run(
        [sys.executable, "-m", "es_mysql_pipeline", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**env, "ES_API_KEY": key},
        cwd=cwd,
    )


def es_to_mysql(server: EsTestServer, mysql_url: str, table: str, *extra: str) -> list[str]:
    """``--source_type elasticsearch ... --sink_type mysql ...`` flags for the test database."""
    url = sa.make_url(mysql_url)
    return [
        "--source_type", "elasticsearch",
        "--es_url", server.url,
        "--sink_type", "mysql",
        "--db_host", url.host or "127.0.0.1",
        "--db_port", str(url.port or 3306),
        "--db_user", url.username or "root",
        "--db_name", url.database or "test",
        "--db_table", table,
        "--no-progress",
        *extra,
    ]  # fmt: skip


def assert_no_secret(proc: subprocess.CompletedProcess[str]) -> None:
    for secret in (SENTINEL_KEY, SENTINEL_WRONG_KEY):
        assert secret not in proc.stdout
        assert secret not in proc.stderr


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert text in lines[0], lines[0]
    assert "Traceback" not in proc.stderr
    assert proc.returncode == code, proc.stderr


def test_full_load_is_exact(
    server: EsTestServer, mysql_url: str, mysql_table: str, tmp_path: Path
) -> None:
    args = ["--es_index", INDEX, "--es_slices", "2", "--dead-letter-dir", str(tmp_path / "dl")]
    proc = cli(*es_to_mysql(server, mysql_url, mysql_table, *args), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    # a full run needs no time: documents without @timestamp are loaded with it NULL
    assert_table_equals(mysql_url, mysql_table, expected_rows(DOCS, untimed=True))
    summary = dict(
        line.strip().split("  ", 1) for line in proc.stdout.splitlines()[1:7] if line.strip()
    )
    summary = {k.strip(): v.strip() for k, v in summary.items()}
    assert summary["time field"] == "@timestamp (detected)"
    assert summary["processed"] == summary["inserted"] == str(len(DOCS))
    assert summary["failed"] == "0"
    assert not (tmp_path / "dl" / "transform" / "all.jsonl").exists()
    assert_no_secret(proc)
    assert server.open_pits == 0


def test_window_query_and_debug_output(
    server: EsTestServer, mysql_url: str, mysql_table: str, tmp_path: Path
) -> None:
    """``--start/--end`` with ``--es_query``; ``--debug`` prints Dagster's logs, never the key."""
    query = json.dumps({"term": {"level": "error"}})
    args = [
        "--es_index", "cli-*",
        "--es_query", query,
        "--es_timestamp_field", "@timestamp",
        "--start", day(1), "--end", day(3),
        "--batch-size", "333",
        "--debug",
    ]  # fmt: skip
    proc = cli(*es_to_mysql(server, mysql_url, mysql_table, *args), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    want = {k: v for k, v in expected_rows(DOCS, {day(1), day(2)}).items() if v["level"] == "error"}
    assert want
    assert_table_equals(mysql_url, mysql_table, want)
    assert "STEP_SUCCESS" in proc.stdout + proc.stderr  # the debug output really is there
    assert_no_secret(proc)


def test_wrong_api_key_is_exit_2_and_one_line(server: EsTestServer, tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    proc = cli(
        "--source_type", "elasticsearch", "--es_url", server.url, "--es_index", INDEX,
        "--sink_type", "file", "--output_file", str(out),
        key=SENTINEL_WRONG_KEY,
        cwd=tmp_path,
    )  # fmt: skip
    assert_one_line_error(proc, 2, "rejected the credentials (401 security_exception)")
    assert "ES_API_KEY" in proc.stderr
    assert_no_secret(proc)
    assert not out.exists()


def test_missing_index_is_exit_2_and_one_line(server: EsTestServer, tmp_path: Path) -> None:
    pits_before = server.stats.by_endpoint.get("POST /{index}/_pit", 0)
    proc = cli(
        "--source_type", "elasticsearch", "--es_url", server.url, "--es_index", "no-such-index",
        "--sink_type", "file", "--output_file", str(tmp_path / "o.jsonl"),
        cwd=tmp_path,
    )  # fmt: skip
    assert_no_secret(proc)
    assert_one_line_error(proc, 2, "Elasticsearch index not found")
    assert "no such index [no-such-index]" in proc.stderr
    assert server.stats.by_endpoint.get("POST /{index}/_pit", 0) - pits_before == 1
