"""Every field of a real document survives: the shapes users' data has, on MariaDB and SQLite.

Elasticsearch documents synced from an application database (their own ``id`` and a
``timestamp`` that is not the time), Beats/ECS logs with case-variant keys, documents with
hundreds of dynamic keys, CSV headers with case variants and long names, and a second day
that adds keys. Each run goes through the three steps and is checked with the value oracle
of :mod:`es_mysql_pipeline_tests.support.fidelity`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from es_mysql_pipeline.identifiers import column_name
from es_mysql_pipeline.resources.sinks import JsonlSink, SqlSink
from es_mysql_pipeline.resources.sources import FileSource
from es_mysql_pipeline_tests.badinput.support import assert_invariant, run_direct
from es_mysql_pipeline_tests.conftest import split_target
from es_mysql_pipeline_tests.fixtures.es import EsTarget
from es_mysql_pipeline_tests.support.fidelity import assert_every_value_survives, read_rows

DAY = dt.datetime(2024, 3, 1, tzinfo=dt.timezone.utc)


def sink_for(target: str, **kwargs: Any) -> SqlSink:
    url, table = split_target(target)
    return SqlSink(url=url, table=table, **kwargs)


def columns_of(target: str) -> list[str]:
    url, table = split_target(target)
    engine = sa.create_engine(url)
    try:
        return [c["name"] for c in sa.inspect(engine).get_columns(table)]
    finally:
        engine.dispose()


def write_jsonl(path: Path, docs: list[dict[str, Any]]) -> FileSource:
    with open(path, "w", encoding="utf-8") as fh:
        for doc in docs:
            fh.write(json.dumps(doc, ensure_ascii=False) + "\n")
    return FileSource(path=str(path), id_column="_id", timestamp_column="ts")


# -- 1. an index synced from an application database ---------------------------------------


def app_db_docs(n: int) -> list[tuple[str, dict[str, Any]]]:
    """The row's own ``id`` (a number), ``created_at`` in epoch ms, ``timestamp`` a version."""
    docs = []
    for i in range(n):
        created = DAY + dt.timedelta(minutes=7 * i)
        docs.append(
            (
                f"Zm9v{i:05d}",
                {
                    "id": 900_000 + i,
                    "created_at": int(created.timestamp() * 1000) + i % 1000,
                    "timestamp": f"v2.{i % 17}.{i}",
                    "customer": {"id": i % 31, "name": f"customer {i % 31}"},
                    "total": round(i * 1.25, 2),
                },
            )
        )
    return docs


@pytest.mark.integration
@pytest.mark.parametrize("target", ["sqlite", "mysql"])
def test_an_index_synced_from_an_app_database_keeps_its_id_and_timestamp(
    es_target: EsTarget, target: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    docs = app_db_docs(500)
    es_target.seed(f"appdb-{target}", docs, shards=2, properties={"created_at": {"type": "date"}})
    url = (
        f"sqlite:///{tmp_path / 'db.sqlite'}#records"
        if target == "sqlite"
        else f"{request.getfixturevalue('mysql_url')}#{request.getfixturevalue('mysql_table')}"
    )
    out = run_direct(es_target.source(f"appdb-{target}"), sink_for(url), tmp_path)
    assert_invariant(out, 500)
    assert (out.counts["inserted"], out.counts["failed"]) == (500, 0)
    cols = columns_of(url)
    assert {"_id", "id", "created_at", "timestamp", "customer_id", "customer_name"} <= set(cols)
    rows = read_rows(*split_target(url), key="_id")
    row = rows["Zm9v00042"]
    assert row["id"] == 900_042 and row["timestamp"] == "v2.8.42"
    assert row["created_at"] == dt.datetime(2024, 3, 1, 4, 54, 0, 42_000)
    assert_every_value_survives(
        dict(docs),
        rows,
        id_column="_id",
        time_field="created_at",
        time_column="created_at",
    )


# -- 2. Beats/ECS logs with case-variant keys -----------------------------------------------


def beats_docs(n: int) -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for i in range(n):
        ts = (DAY + dt.timedelta(seconds=13 * i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        kind = i % 3
        src: dict[str, Any] = {
            "@timestamp": ts,
            "event": {"dataset": ["nginx.access", "system.cpu", "kubernetes.container"][kind]},
            "host": {"name": f"node-{i % 5}", "os": {"family": "debian"}},
            "agent": {"type": "filebeat", "version": "8.15.0"},
        }
        if kind == 0:
            src["http"] = {"request": {"method": "GET"}, "response": {"status_code": 200 + i % 5}}
            src["url"] = {"original": f"/api/items/{i}?q=x"}
        elif kind == 1:
            src["system"] = {"cpu": {"total": {"pct": (i % 100) / 100}}}
        else:
            src["kubernetes"] = {"pod": {"name": f"web-{i % 4}"}, "namespace": "prod"}
            src["ctx"] = {"userId": f"U{i}", "userid": f"legacy-{i}"}  # both, one document
            if i % 2:
                src["ID"] = i
                src["id"] = f"app-{i}"
            src["message"] = f"user U{i} logged in"
        docs.append((f"beat-{i:05d}", src))
    return docs


@pytest.mark.integration
def test_beats_logs_with_userid_and_userId_load_every_value(
    es_target: EsTarget, mysql_url: str, mysql_table: str, tmp_path: Path
) -> None:
    docs = beats_docs(3000)
    es_target.seed("beats", docs, shards=3)
    out = run_direct(es_target.source("beats"), SqlSink(url=mysql_url, table=mysql_table), tmp_path)
    assert_invariant(out, 3000)
    assert out.counts["failed"] == 0
    rows = read_rows(mysql_url, mysql_table, key="_id")
    cols = set(next(iter(rows.values())))
    # one of each case pair keeps its name, the other gets a column of its own
    assert "ctx_userId" in cols and "ctx_userid" not in cols
    assert len([c for c in cols if c.startswith("ctx_userid_")]) == 1
    assert "`ctx_userid`" in out.metadata["column_map"]  # the metadata shows where it went
    assert "timestamp" in cols and "event_dataset" in cols
    assert "ID" in cols and len([c for c in cols if c.startswith("id_")]) == 1  # ID, id
    assert_every_value_survives(
        dict(docs), rows, id_column="_id", time_field="@timestamp", time_column="timestamp"
    )


# -- 3. hundreds of dynamic keys --------------------------------------------------------------


def labelled_docs(n: int, keys: int) -> list[dict[str, Any]]:
    docs = []
    for i in range(n):
        labels = {f"app.kubernetes.io/k{(i * 7 + j) % keys}": f"v{i}-{j}" for j in range(3)}
        docs.append(
            {
                "_id": f"pod-{i}",
                "ts": (DAY + dt.timedelta(seconds=i)).isoformat(),
                "namespace": "prod",
                "labels": labels,
                "annotations": {f"note{i % keys}": i},
            }
        )
    return docs


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("keep_whole", [[], ["labels"]])
def test_documents_with_1500_dynamic_keys_load_with_an_overflow(
    sql_target: str, tmp_path: Path, keep_whole: list[str]
) -> None:
    docs = labelled_docs(2000, 1500)
    source = write_jsonl(tmp_path / "pods.jsonl", docs)
    out = run_direct(source, sink_for(sql_target), tmp_path, keep_whole=keep_whole)
    assert_invariant(out, 2000)
    assert out.counts["failed"] == 0
    cols = columns_of(sql_target)
    assert len(cols) <= 250 and "_overflow" in cols
    assert out.metadata["fields_in_overflow"] > 0
    rows = read_rows(*split_target(sql_target), key="_id")
    stripped = {d["_id"]: {k: v for k, v in d.items() if k != "_id"} for d in docs}
    assert_every_value_survives(stripped, rows, id_column="_id", time_field="ts", time_column="ts")
    # the README's query reads a value back from the overflow column
    if keep_whole:
        doc, path = docs[1], '$.labels."app.kubernetes.io/k7"'
        want = doc["labels"]["app.kubernetes.io/k7"]
    else:
        field = out.metadata["overflow_fields"].split(", ")[0]
        doc, want = next(
            (d, v)
            for d in docs
            for k, v in d["labels"].items()
            if column_name(f"labels_{k}") == field
        )
        path = f"$.{field}"
    url, table = split_target(sql_target)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            got = conn.execute(
                sa.text(f"SELECT JSON_EXTRACT(_overflow, '{path}') FROM {table} WHERE _id = :i"),
                {"i": doc["_id"]},
            ).scalar()
    finally:
        engine.dispose()
    assert (json.loads(got) if got.startswith('"') else got) == want


# -- 4. the same rules for CSV and JSON Lines ---------------------------------------------------


@pytest.mark.integration
def test_a_csv_with_Name_and_name_and_long_headers_keeps_every_column(
    sql_target: str, tmp_path: Path
) -> None:
    long_a = "customer_billing_address_" + "x" * 50 + "_street"
    long_b = "customer_billing_address_" + "x" * 50 + "_city"
    header = ["id", "timestamp", "Name", "name", "a.b", "a_b", "a-b", "prénom", long_a, long_b]
    lines = [",".join(header)]
    for i in range(50):
        lines.append(
            ",".join([f"r{i}", "2024-03-01T00:00:00Z", *(f"{h[:3]}{i}" for h in header[2:])])
        )
    (tmp_path / "in.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    source = FileSource(path=str(tmp_path / "in.csv"))
    out = run_direct(source, sink_for(sql_target), tmp_path)
    assert_invariant(out, 50)
    assert out.counts["failed"] == 0
    cols = columns_of(sql_target)
    assert len(cols) == len(header)  # ten fields, ten columns
    assert len({c.lower() for c in cols}) == len(cols)
    assert all(len(c) <= 64 for c in cols)
    rows = read_rows(*split_target(sql_target), key="id")
    docs = {
        f"r{i}": {h: f"{h[:3]}{i}" for h in header[2:]} | {"timestamp": "2024-03-01T00:00:00Z"}
        for i in range(50)
    }
    assert_every_value_survives(
        docs, rows, id_column="id", time_field="timestamp", time_column="timestamp"
    )


def test_jsonl_keys_equal_to_the_id_and_time_columns_survive_renaming(tmp_path: Path) -> None:
    """With the columns of a table made by 0.1 (``id``, ``timestamp``), a data field of
    the same name moves to a distinct column instead of being overwritten."""
    docs = [
        {"_id": "a", "ts": "2024-03-01T00:00:00Z", "id": 7, "timestamp": "v1", "_overflow": 1},
    ]
    source = write_jsonl(tmp_path / "in.jsonl", docs)
    sink = SqlSink(url=f"sqlite:///{tmp_path / 'db.sqlite'}", table="t")
    out = run_direct(source, sink, tmp_path, id_column="id", timestamp_column="timestamp")
    assert_invariant(out, 1)
    rows = read_rows(f"sqlite:///{tmp_path / 'db.sqlite'}", "t", key="id")
    row = rows["a"]
    assert row["timestamp"] == dt.datetime(2024, 3, 1)
    assert [row[c] for c in row if c.startswith("id_")] == [7]
    assert [row[c] for c in row if c.startswith("timestamp_")] == ["v1"]
    assert [row[c] for c in row if c.startswith("_overflow_")] == [1]


# -- a second day keeps the first day's columns ------------------------------------------------


@pytest.mark.integration
def test_day_two_with_new_and_case_variant_keys_keeps_day_one_columns(
    sql_target: str, tmp_path: Path
) -> None:
    day1 = [
        {"_id": f"d1-{i}", "ts": "2024-03-01T10:00:00Z", "ctx": {"userid": f"u{i}"}, "a": i}
        for i in range(20)
    ]
    day2 = [
        {
            "_id": f"d2-{i}",
            "ts": "2024-03-02T10:00:00Z",
            "ctx": {"userId": f"U{i}", "userid": f"u{i}"},
            "a": i,
            **{f"new{j}": j for j in range(30)},
        }
        for i in range(20)
    ]
    sink = sink_for(sql_target, max_columns=20)
    first = run_direct(write_jsonl(tmp_path / "d1.jsonl", day1), sink, tmp_path / "1")
    assert_invariant(first, 20)
    cols1 = columns_of(sql_target)
    second = run_direct(write_jsonl(tmp_path / "d2.jsonl", day2), sink, tmp_path / "2")
    assert_invariant(second, 20)
    cols2 = columns_of(sql_target)
    assert cols2[: len(cols1)] == cols1  # nothing renamed, nothing dropped
    assert "ctx_userid" in cols1 and "ctx_userId" not in cols2  # the variant got its own
    assert len(cols2) <= 20 and second.metadata["fields_in_overflow"] > 0
    rows = read_rows(*split_target(sql_target), key="_id")
    stripped = {d["_id"]: {k: v for k, v in d.items() if k != "_id"} for d in day1 + day2}
    assert_every_value_survives(stripped, rows, id_column="_id", time_field="ts", time_column="ts")
    assert rows["d1-3"]["ctx_userid"] == "u3" and rows["d2-3"]["ctx_userid"] == "u3"


def test_jsonl_sink_keeps_every_value_too(tmp_path: Path) -> None:
    docs = labelled_docs(30, 20)
    out_path = tmp_path / "out.jsonl"
    out = run_direct(
        write_jsonl(tmp_path / "in.jsonl", docs),
        JsonlSink(path=str(out_path)),
        tmp_path,
        keep_whole=["labels"],
    )
    assert_invariant(out, 30)
    rows = {}
    with open(out_path, encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            row["ts"] = dt.datetime.fromisoformat(row["ts"]).replace(tzinfo=None)
            rows[row["_id"]] = row
    stripped = {d["_id"]: {k: v for k, v in d.items() if k != "_id"} for d in docs}
    assert_every_value_survives(stripped, rows, id_column="_id", time_field="ts", time_column="ts")
    assert os.path.getsize(out_path) > 0


# -- 5. partitioned runs lose nothing either ------------------------------------------------------


def test_records_without_a_readable_time_are_counted_once_beside_the_partitions(
    tmp_path: Path,
) -> None:
    """The sample's two ``yesterday-ish`` rows belong to no day: the five days plus the
    unplaced count equal the file, and the dead letter holds each of them once."""
    import dagster as dg

    from es_mysql_pipeline.assets import build_unplaced_asset
    from es_mysql_pipeline.dead_letter import read_dead_letters
    from es_mysql_pipeline_tests.helpers import (
        make_resources,
        metadata,
        run_partitions,
        sample_rows,
    )

    resources = make_resources(str(tmp_path))
    days = run_partitions(resources, "2024-01-01", "2024-01-05")
    assert days.success
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            in_sink = conn.execute(sa.text("SELECT COUNT(*) FROM records")).scalar_one()
    finally:
        engine.dispose()
    rejected = 0
    for stage in ("transform", "load"):
        path = tmp_path / "dead_letter" / stage / "2024-01-01__2024-01-05.jsonl"
        rejected += len(read_dead_letters(str(path))) if path.exists() else 0
    for _ in range(2):  # a second materialization replaces the file: still once each
        result = dg.materialize([build_unplaced_asset()], resources=resources)
        assert result.success
        md = {
            k: v.value
            for e in result.get_asset_materialization_events()
            for k, v in e.materialization.metadata.items()
        }
        (check,) = result.get_asset_check_evaluations()
        assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert md["unplaced_records"] == 2
    entries = read_dead_letters(str(tmp_path / "dead_letter" / "fetch" / "unplaced.jsonl"))
    assert sorted(e["record"]["id"] for e in entries) == ["bad-ts-2750", "bad-ts-750"]
    assert all("belongs to no partition" in e["reason"] for e in entries)
    loaded = metadata(days, "loaded_records")  # the run's counts, on its first day
    processed = loaded["processed"]
    assert processed == in_sink + loaded["skipped"] + rejected
    assert processed + md["unplaced_records"] == len(sample_rows()) == 3007


@pytest.mark.integration
def test_elasticsearch_documents_without_a_time_are_found_by_query(es_target: EsTarget) -> None:
    from es_mysql_pipeline_tests.es_docs import make_docs, untimed_ids

    docs = make_docs(3000, prefix="np")
    es_target.seed("unplaced", docs, shards=2)
    source = es_target.source("unplaced")
    found = [(r["_id"], why) for batch in source.read_unplaced(500) for r, why in batch]
    assert {i for i, _ in found} == untimed_ids(docs) and len(found) == len(untimed_ids(docs))
    assert all("no time in field '@timestamp'" in why for _, why in found)


def test_a_table_made_by_0_1_says_how_to_keep_loading_it(tmp_path: Path) -> None:
    """0.1 kept a document's ``_id`` in ``id`` and its time in ``timestamp``: the new default
    names the setting that keeps such a table loading, and the setting does."""
    from es_mysql_pipeline_tests.badinput.support import assert_clear_failure

    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sa.text("CREATE TABLE t (id VARCHAR(255) PRIMARY KEY, timestamp DATETIME, msg TEXT)")
        )
        conn.execute(sa.text("INSERT INTO t VALUES ('old', '2024-02-01 00:00:00', 'kept')"))
    engine.dispose()
    docs = [{"_id": f"d{i}", "ts": "2024-03-01T00:00:00Z", "msg": f"m{i}"} for i in range(3)]
    source = write_jsonl(tmp_path / "in.jsonl", docs)
    out = run_direct(source, SqlSink(url=url, table="t"), tmp_path / "a")
    assert_clear_failure(out.failure, "'_id'", "id_column", "--output-id-column id")
    out = run_direct(
        source,
        SqlSink(url=url, table="t"),
        tmp_path / "b",
        id_column="id",
        timestamp_column="timestamp",
    )
    assert_invariant(out, 3)
    rows = read_rows(url, "t", key="id")
    assert set(rows) == {"old", "d0", "d1", "d2"} and rows["d1"]["msg"] == "m1"
    assert rows["d1"]["timestamp"] == dt.datetime(2024, 3, 1)
