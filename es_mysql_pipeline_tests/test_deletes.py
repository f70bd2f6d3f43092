"""Deletes and updates reach the table: a day re-run after documents were deleted and
updated in Elasticsearch leaves exactly the source's rows (hard and soft deletes, MariaDB
and SQLite); a delete-marked record deletes its row; a failed id read deletes nothing."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from elasticsearch import helpers

from es_mysql_pipeline.errors import SourceError
from es_mysql_pipeline.records import TimeWindow
from es_mysql_pipeline.resources.sinks import SqlSink
from es_mysql_pipeline.resources.sources import FileSource
from es_mysql_pipeline_tests.conftest import split_target
from es_mysql_pipeline_tests.fixtures.es import EsTarget
from es_mysql_pipeline_tests.helpers import make_resources, partition_metadata, run_partitions

pytestmark = pytest.mark.integration

DAY = "2024-01-03"
NEXT = "2024-01-04"


def doc(i: int, day: str = DAY, version: int = 1, text: str | None = None) -> dict[str, Any]:
    return {
        "@timestamp": f"{day}T{i % 24:02d}:{i % 60:02d}:00Z",
        "text": text if text is not None else f"doc {i}",
        "n": i,
        "version": version,
    }


def live_rows(url: str, table: str) -> dict[str, tuple[Any, ...]]:
    """The table's live rows (not soft-deleted): id → (text, version, day)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            t = sa.Table(table, sa.MetaData(), autoload_with=conn)
            query = sa.select(t.c._id, t.c.text, t.c.version, t.c.timestamp)
            if "_deleted_at" in t.c:
                query = query.where(t.c._deleted_at.is_(None))
            return {str(r[0]): (r[1], r[2], r[3].strftime("%Y-%m-%d")) for r in conn.execute(query)}
    finally:
        engine.dispose()


def stamped_ids(url: str, table: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            t = sa.Table(table, sa.MetaData(), autoload_with=conn)
            if "_deleted_at" not in t.c:
                return set()
            q = sa.select(t.c._id).where(t.c._deleted_at.is_not(None))
            return {str(r[0]) for r in conn.execute(q)}
    finally:
        engine.dispose()


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_a_rerun_day_equals_the_source_after_deletes_and_updates(
    es_target: EsTarget, sql_target: str, tmp_path: Path, mode: str
) -> None:
    """The issue's done-test: 100 documents deleted and 100 updated between two runs of the
    same day; the next day's rows, loaded by their own run, are never touched."""
    if es_target.is_real:
        pytest.skip("edits the index in place: the test server's")
    url, table = split_target(sql_target)
    index = es_target.seed(
        f"deletes-{mode}-{os.path.basename(str(tmp_path))}".lower()[:60],
        [(f"d{i:04d}", doc(i)) for i in range(1000)]
        + [(f"n{i:03d}", doc(i, NEXT)) for i in range(50)],
    )
    source = es_target.source(index.removeprefix(es_target.prefix), page_size=100)
    sink = SqlSink(url=url, table=table, write_mode="upsert", version_field="version")
    res = make_resources(str(tmp_path), sink=sink, source=source, deletes=mode)
    first = run_partitions(res, DAY)
    assert first.success
    assert run_partitions(res, NEXT).success
    gone = [f"d{i:04d}" for i in range(0, 1000, 10)]  # 100
    changed = [f"d{i:04d}" for i in range(5, 1000, 10)]  # 100
    with es_target.client() as es:
        actions: list[dict[str, Any]] = [
            {"_op_type": "delete", "_index": index, "_id": i} for i in gone
        ]
        actions += [
            {"_index": index, "_id": i, "_source": doc(int(i[1:]), version=2, text="updated")}
            for i in changed
        ]
        helpers.bulk(es, actions, refresh=True)
    second = run_partitions(res, DAY)
    assert second.success
    md = partition_metadata(second, "loaded_records")[DAY]
    assert (md["inserted"], md["updated"], md["skipped"], md["deleted"]) == (0, 100, 800, 100)
    assert md["deleted_missing_from_source"] == 100
    assert all(e.passed for e in second.get_asset_check_evaluations())
    expected = {
        f"d{i:04d}": ("updated" if f"d{i:04d}" in changed else f"doc {i}",
                      2 if f"d{i:04d}" in changed else 1, DAY)
        for i in range(1000)
        if f"d{i:04d}" not in gone
    }  # fmt: skip
    expected |= {f"n{i:03d}": (f"doc {i}", 1, NEXT) for i in range(50)}
    assert live_rows(url, table) == expected
    assert stamped_ids(url, table) == (set(gone) if mode == "soft" else set())
    # A third run finds nothing more to do.
    third = run_partitions(res, DAY)
    md = partition_metadata(third, "loaded_records")[DAY]
    assert (md["updated"], md["skipped"], md["deleted"]) == (0, 900, 0)
    assert live_rows(url, table) == expected


def test_es_id_read_is_the_window_s_ids_across_pages(es_target: EsTarget) -> None:
    index = es_target.seed(
        "ids-only",
        [(f"a{i}", doc(i)) for i in range(250)] + [(f"b{i}", doc(i, NEXT)) for i in range(7)],
    )
    source = es_target.source(index.removeprefix(es_target.prefix), page_size=10)
    window = TimeWindow.from_dates(DAY, NEXT)
    assert source.read_ids(window) == {f"a{i}" for i in range(250)}
    assert source.read_ids(None) == {f"a{i}" for i in range(250)} | {f"b{i}" for i in range(7)}


def test_es_id_read_asks_for_no_source(es_server: Any) -> None:
    """The id read is cheap: every search it sends has ``_source: false``."""
    target = EsTarget(es_server.url, es_server)
    index = target.seed("ids-cheap", [(f"a{i}", doc(i)) for i in range(30)])
    seen: list[Any] = []
    source = target.source(index, page_size=1)  # id pages of 10
    from elasticsearch import Elasticsearch

    real_search = Elasticsearch.search

    def spy(self: Elasticsearch, **kwargs: Any) -> Any:
        seen.append(kwargs.get("body"))
        return real_search(self, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Elasticsearch, "search", spy)
        assert source.read_ids(None) == {f"a{i}" for i in range(30)}
    assert len(seen) == 4  # three full pages, then an empty one ends the read
    assert all(body["_source"] is False for body in seen)


def write_csv(path: Path, rows: list[dict[str, Any]]) -> str:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return str(path)


def csv_rows(ids: range, deleted: set[int] = frozenset()) -> list[dict[str, Any]]:  # type: ignore[assignment]
    return [
        {
            "id": f"r{i}",
            "timestamp": f"{DAY}T01:00:00Z",
            "text": f"row {i}",
            "deleted": "true" if i in deleted else "false",
        }
        for i in ids
    ]


def ids_in(url: str, table: str, live_only: bool = True) -> set[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            t = sa.Table(table, sa.MetaData(), autoload_with=conn)
            q = sa.select(t.c.id)
            if live_only and "_deleted_at" in t.c:
                q = q.where(t.c._deleted_at.is_(None))
            return {str(r[0]) for r in conn.execute(q)}
    finally:
        engine.dispose()


@pytest.mark.parametrize("deletes", ["ignore", "soft"])
def test_a_delete_marked_record_deletes_its_row(
    sql_target: str, tmp_path: Path, deletes: str
) -> None:
    url, table = split_target(sql_target)
    path = tmp_path / "in.csv"
    sink = SqlSink(url=url, table=table, write_mode="upsert")
    write_csv(path, csv_rows(range(20)))
    res = make_resources(
        str(tmp_path), sink=sink, source=FileSource(path=str(path)), delete_marker="deleted",
        deletes=deletes,
    )  # fmt: skip
    assert run_partitions(res, DAY).success
    write_csv(path, csv_rows(range(20), deleted={3, 4, 5}) + csv_rows(range(20, 21), {20}))
    second = run_partitions(res, DAY)
    assert second.success
    md = partition_metadata(second, "loaded_records")[DAY]
    # r20 was never loaded: its marker has no row to delete (skipped)
    assert (md["deleted"], md["deleted_by_marker"], md["updated"], md["skipped"]) == (3, 3, 17, 1)
    assert all(e.passed for e in second.get_asset_check_evaluations())
    assert ids_in(url, table) == {f"r{i}" for i in range(20)} - {"r3", "r4", "r5"}
    expect_all = {f"r{i}" for i in range(20)} if deletes == "soft" else ids_in(url, table)
    assert ids_in(url, table, live_only=False) == expect_all


class BrokenIdsSource(FileSource):
    """Reads records like a file, but its id read fails half way."""

    def read_ids(self, window: TimeWindow | None) -> set[str]:
        raise SourceError("connection reset while reading ids")


def test_a_failed_id_read_deletes_nothing(sqlite_url: str, tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    sink = SqlSink(url=sqlite_url, table="t", write_mode="upsert")
    write_csv(path, csv_rows(range(10)))
    good = make_resources(str(tmp_path), sink=sink, source=FileSource(path=str(path)))
    assert run_partitions(good, DAY).success
    write_csv(path, csv_rows(range(5)))  # r5..r9 gone from the source
    broken = make_resources(
        str(tmp_path), sink=sink, source=BrokenIdsSource(path=str(path)), deletes="hard"
    )
    result = run_partitions(broken, DAY)
    assert not result.success
    assert ids_in(sqlite_url, "t") == {f"r{i}" for i in range(10)}
    # The file source's own id read then deletes exactly the missing rows.
    fixed = make_resources(
        str(tmp_path), sink=sink, source=FileSource(path=str(path)), deletes="hard"
    )
    result = run_partitions(fixed, DAY)
    assert result.success
    assert partition_metadata(result, "loaded_records")[DAY]["deleted"] == 5
    assert ids_in(sqlite_url, "t") == {f"r{i}" for i in range(5)}
