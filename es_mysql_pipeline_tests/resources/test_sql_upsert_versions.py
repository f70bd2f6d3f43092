"""Newest wins: with a version field, an upsert replaces a row only by a newer record."""

from __future__ import annotations

import random
import threading
from typing import Any

import pytest
import sqlalchemy as sa

from es_mysql_pipeline.errors import ConfigError
from es_mysql_pipeline.resources.sinks import SqlSink
from es_mysql_pipeline.value_types import ColumnStats
from es_mysql_pipeline.writers.base import TableShape, WriteCounts
from es_mysql_pipeline_tests.conftest import split_target

SHAPE = TableShape(
    "id",
    "timestamp",
    {
        "id": ColumnStats("string", 10),
        "timestamp": ColumnStats("datetime"),
        "text": ColumnStats("string", 100),
        "version": ColumnStats("int"),
    },
)


def rec(i: str, version: int, text: str | None = None) -> dict[str, Any]:
    return {
        "id": i,
        "timestamp": "2024-01-01T00:00:00+00:00",
        "text": text if text is not None else f"{i}@{version}",
        "version": version,
    }


def write(sink: SqlSink, batch: list[dict[str, Any]]) -> WriteCounts:
    session = sink.open_session(SHAPE, None)
    writer = session.writer()
    try:
        return writer.write(batch)
    finally:
        writer.close()
        session.commit()


def table_rows(url: str, table: str) -> dict[str, tuple[Any, ...]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            t = sa.Table(table, sa.MetaData(), autoload_with=conn)
            return {
                r[0]: (r[1], r[2]) for r in conn.execute(sa.select(t.c.id, t.c.text, t.c.version))
            }
    finally:
        engine.dispose()


@pytest.mark.integration
def test_an_older_record_is_skipped_and_a_newer_one_replaces(sql_target: str) -> None:
    url, table = split_target(sql_target)
    sink = SqlSink(url=url, table=table, write_mode="upsert", version_field="version")
    c = write(sink, [rec("a", 5), rec("b", 5), rec("c", 5)])
    assert (c.inserted, c.updated, c.skipped) == (3, 0, 0)
    c = write(sink, [rec("a", 4), rec("b", 6), rec("c", 5, "same version"), rec("d", 1)])
    assert (c.inserted, c.updated, c.skipped, c.failed) == (1, 1, 2, 0)
    assert table_rows(url, table) == {
        "a": ("a@5", 5),
        "b": ("b@6", 6),
        "c": ("c@5", 5),
        "d": ("d@1", 1),
    }


@pytest.mark.integration
def test_in_one_batch_the_newest_of_an_id_wins(sql_target: str) -> None:
    url, table = split_target(sql_target)
    sink = SqlSink(url=url, table=table, write_mode="upsert", version_field="version")
    c = write(sink, [rec("a", 2), rec("a", 3), rec("a", 1)])
    assert (c.inserted, c.updated, c.skipped) == (1, 1, 1)
    assert table_rows(url, table) == {"a": ("a@3", 3)}


@pytest.mark.integration
def test_concurrent_overlapping_loads_keep_the_newest_and_count_exactly(sql_target: str) -> None:
    """Two loads of the same ids with interleaved versions, at once: whatever the order,
    each row ends with its highest version and every record is counted once."""
    url, table = split_target(sql_target)
    sink = SqlSink(url=url, table=table, write_mode="upsert", version_field="version")
    ids = [f"k{i:03d}" for i in range(300)]
    rng = random.Random(7)
    loads = []
    for which in range(2):
        batch = [rec(i, rng.randrange(1, 1000) * 2 + which) for i in ids]  # never equal
        rng.shuffle(batch)
        loads.append(batch)
    totals = WriteCounts()
    lock = threading.Lock()
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def load(batch: list[dict[str, Any]]) -> None:
        try:
            start.wait()
            session = sink.open_session(SHAPE, None)
            writer = session.writer()
            try:
                for k in range(0, len(batch), 25):
                    c = writer.write(batch[k : k + 25])
                    with lock:
                        totals.add(c)
            finally:
                writer.close()
                session.commit()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=load, args=(b,)) for b in loads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    newest = {i: max(r["version"] for load in loads for r in load if r["id"] == i) for i in ids}
    got = table_rows(url, table)
    assert {i: v for i, (_, v) in got.items()} == newest
    assert all(text == f"{i}@{v}" for i, (text, v) in got.items())
    assert totals.inserted == len(ids)
    assert totals.failed == 0
    # Each id's other record either replaced the row (it was newer) or was skipped.
    assert totals.updated + totals.skipped == len(ids)
    assert totals.updated > 0 and totals.skipped > 0


@pytest.mark.integration
def test_a_stale_overlapping_load_changes_nothing(sql_target: str) -> None:
    url, table = split_target(sql_target)
    sink = SqlSink(url=url, table=table, write_mode="upsert", version_field="version")
    write(sink, [rec(f"x{i}", 10) for i in range(50)])
    c = write(sink, [rec(f"x{i}", 9, "old") for i in range(50)])
    assert (c.inserted, c.updated, c.skipped) == (0, 0, 50)
    assert {t for t, _ in table_rows(url, table).values()} == {f"x{i}@10" for i in range(50)}


def test_a_version_field_needs_upsert() -> None:
    with pytest.raises(ConfigError, match="upsert"):
        SqlSink(url="sqlite://", version_field="v").check()


@pytest.mark.integration
def test_a_version_field_missing_from_the_data_is_refused(sqlite_url: str) -> None:
    sink = SqlSink(url=sqlite_url, write_mode="upsert", version_field="nope")
    with pytest.raises(ConfigError, match="nope"):
        write(sink, [rec("a", 1)])
