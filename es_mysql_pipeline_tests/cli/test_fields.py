"""The issue's three indices through the command line with default flags into MariaDB: each
run exits 0 and every source value is in the table."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from es_mysql_pipeline_tests.cli.test_es import SENTINEL_KEY, cli, es_to_mysql
from es_mysql_pipeline_tests.es_server import EsTestServer
from es_mysql_pipeline_tests.support.fidelity import assert_every_value_survives, read_rows
from es_mysql_pipeline_tests.test_field_fidelity import app_db_docs, beats_docs

pytestmark = pytest.mark.integration


def labels_docs(n: int, keys: int) -> list[tuple[str, dict[str, object]]]:
    day = dt.datetime(2024, 3, 1, tzinfo=dt.timezone.utc)
    return [
        (
            f"pod-{i}",
            {
                "@timestamp": (day + dt.timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "kubernetes": {"namespace": "prod", "pod": {"name": f"web-{i % 9}"}},
                "labels": {f"k{(i * 7 + j) % keys}": f"v{i}-{j}" for j in range(3)},
            },
        )
        for i in range(n)
    ]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("index", "docs", "time_field", "time_column"),
    [
        ("appdb", app_db_docs(5000), "created_at", "created_at"),
        ("beats", beats_docs(5000), "@timestamp", "timestamp"),
        ("pods", labels_docs(2000, 1500), "@timestamp", "timestamp"),
    ],
)
def test_each_index_exits_0_with_every_value_in_the_table(
    mysql_url: str,
    mysql_table: str,
    tmp_path: Path,
    index: str,
    docs: list[tuple[str, dict[str, object]]],
    time_field: str,
    time_column: str,
) -> None:
    with EsTestServer(api_key=SENTINEL_KEY) as server:
        props = {"created_at": {"type": "date"}} if index == "appdb" else None
        server.create_index(index, shards=2, mappings={"properties": props} if props else None)
        server.add_docs(index, docs)
        proc = cli(*es_to_mysql(server, mysql_url, mysql_table, "--es_index", index), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = {
        k.strip(): v.strip()
        for k, v in (line.strip().split("  ", 1) for line in proc.stdout.splitlines()[1:7] if line)
    }
    assert summary["processed"] == summary["inserted"] == str(len(docs))
    assert summary["failed"] == "0"
    rows = read_rows(mysql_url, mysql_table, key="_id")
    assert_every_value_survives(
        dict(docs), rows, id_column="_id", time_field=time_field, time_column=time_column
    )
