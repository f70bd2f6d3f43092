"""Full refresh: a new table swapped in whole; readers never see it empty or half loaded."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from es_mysql_pipeline.errors import ConfigError
from es_mysql_pipeline.resources.sinks import SqlSink
from es_mysql_pipeline.value_types import ColumnStats
from es_mysql_pipeline.writers.base import TableShape
from es_mysql_pipeline.writers.sql import refresh as refresh_sql
from es_mysql_pipeline_tests.conftest import split_target

pytestmark = pytest.mark.integration

SHAPE = TableShape(
    "id",
    "timestamp",
    {
        "id": ColumnStats("string", 10),
        "timestamp": ColumnStats("datetime"),
        "text": ColumnStats("string", 100),
    },
)


def recs(n: int, text: str) -> list[dict[str, Any]]:
    return [
        {"id": f"r{i:05d}", "timestamp": "2024-01-01T00:00:00+00:00", "text": text}
        for i in range(n)
    ]


def refresh(
    sink: SqlSink, records: list[dict[str, Any]], batch: int = 500, pause: float = 0.0
) -> None:
    session = sink.open_session(SHAPE, None)
    writer = session.writer()
    try:
        for k in range(0, len(records), batch):
            writer.write(records[k : k + batch])
            time.sleep(pause)
    except BaseException:
        writer.close()
        session.abort()
        raise
    writer.close()
    session.commit()


def tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def contents(url: str, table: str) -> dict[str, str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            t = sa.Table(table, sa.MetaData(), autoload_with=conn)
            return {r[0]: r[1] for r in conn.execute(sa.select(t.c.id, t.c.text))}
    finally:
        engine.dispose()


def indexes(url: str, table: str) -> list[tuple[str, ...]]:
    engine = sa.create_engine(url)
    try:
        found = sa.inspect(engine).get_indexes(table)
        return sorted(tuple(str(c) for c in i["column_names"]) for i in found)
    finally:
        engine.dispose()


def test_a_reader_never_sees_fewer_rows_during_a_refresh(sql_target: str) -> None:
    url, table = split_target(sql_target)
    sink = SqlSink(url=url, table=table, write_mode="refresh", bulk_load=False)
    refresh(sink, recs(2000, "old"))
    assert contents(url, table) == {f"r{i:05d}": "old" for i in range(2000)}
    seen: list[int] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def reader() -> None:
        engine = sa.create_engine(url)
        q = sa.text(f"SELECT COUNT(*) FROM {engine.dialect.identifier_preparer.quote(table)}")
        try:
            while not done.is_set():
                with engine.connect() as conn:
                    seen.append(int(conn.execute(q).scalar_one()))
        except BaseException as exc:
            errors.append(exc)
        finally:
            engine.dispose()

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        refresh(sink, recs(3000, "new"), batch=250, pause=0.02)
        time.sleep(0.2)
    finally:
        done.set()
        thread.join()
    assert not errors
    assert len(seen) > 10
    assert set(seen) == {2000, 3000}  # before the swap, then after it: nothing between
    assert seen[0] == 2000 and seen[-1] == 3000
    assert contents(url, table) == {f"r{i:05d}": "new" for i in range(3000)}
    assert not {f"{table}__new", f"{table}__old"} & tables(url)


def test_a_refresh_drops_rows_gone_from_the_source_and_keeps_indexes(sql_target: str) -> None:
    url, table = split_target(sql_target)
    sink = SqlSink(url=url, table=table, write_mode="refresh")
    refresh(sink, recs(100, "a"))
    before = indexes(url, table)
    assert before  # the time column's index
    for text in ("b", "c", "d"):  # SQLite's index names alternate: three swaps in a row
        refresh(sink, recs(60, text))
        assert contents(url, table) == {f"r{i:05d}": text for i in range(60)}
        assert indexes(url, table) == before


def test_a_failed_refresh_leaves_the_table_and_a_rerun_cleans_strays(sql_target: str) -> None:
    url, table = split_target(sql_target)
    sink = SqlSink(url=url, table=table, write_mode="refresh")
    refresh(sink, recs(50, "kept"))

    class Boom(Exception):
        pass

    session = sink.open_session(SHAPE, None)
    writer = session.writer()
    writer.write(recs(10, "half"))
    writer.close()
    # killed here: no commit, no abort (a process gone leaves its __new behind)
    session.engine.dispose()  # type: ignore[attr-defined]
    assert f"{table}__new" in tables(url)
    assert contents(url, table) == {f"r{i:05d}": "kept" for i in range(50)}
    engine = sa.create_engine(url)
    q = engine.dialect.identifier_preparer.quote
    with engine.begin() as conn:  # as if killed between the swap and the drop
        conn.exec_driver_sql(f"CREATE TABLE {q(table + '__old')} (x INTEGER)")
    engine.dispose()
    with pytest.raises(Boom):
        session = sink.open_session(SHAPE, None)
        try:
            raise Boom()
        finally:
            session.abort()
    assert not {f"{table}__new", f"{table}__old"} & tables(url)
    assert contents(url, table) == {f"r{i:05d}": "kept" for i in range(50)}
    refresh(sink, recs(20, "again"))
    assert contents(url, table) == {f"r{i:05d}": "again" for i in range(20)}
    assert not {f"{table}__new", f"{table}__old"} & tables(url)


def test_a_refresh_with_versions_keeps_the_newest_record_of_an_id(sql_target: str) -> None:
    url, table = split_target(sql_target)
    shape = TableShape("id", None, {"id": ColumnStats("string", 10), "v": ColumnStats("int")})
    sink = SqlSink(url=url, table=table, write_mode="refresh", version_field="v")
    session = sink.open_session(shape, None)
    writer = session.writer()
    c = writer.write([{"id": "a", "v": 2}, {"id": "a", "v": 3}, {"id": "a", "v": 1}])
    writer.close()
    session.commit()
    assert (c.inserted, c.updated, c.skipped) == (1, 1, 1)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            t = sa.Table(table, sa.MetaData(), autoload_with=conn)
            assert conn.execute(sa.select(t.c.id, t.c.v)).all() == [("a", 3)]
    finally:
        engine.dispose()


def test_a_refresh_needs_room_for_its_suffix_in_the_name() -> None:
    long = "t" * 64
    with pytest.raises(ConfigError) as info:
        refresh_sql.names(long)
    assert str(info.value) == (
        f"table {long!r}: a refresh needs a name of at most 59 characters (it loads into "
        f"{long}__new first)"
    )


def test_a_failed_swap_on_sqlite_leaves_the_table(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'x.sqlite'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id TEXT PRIMARY KEY)")
        conn.exec_driver_sql("INSERT INTO t VALUES ('kept')")
    with pytest.raises(sqlite3.OperationalError, match="no such table: t__new"):
        refresh_sql.swap(engine, "t")  # there is no t__new to put in its place
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT id FROM t").scalars().all() == ["kept"]
        assert set(sa.inspect(conn).get_table_names()) == {"t"}
    engine.dispose()
