"""The schema contract on SQLite and MariaDB, and table DDL under concurrent first loads."""

from __future__ import annotations

import contextlib
import multiprocessing
import re
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from es_mysql_pipeline.errors import ConfigError, SinkError
from es_mysql_pipeline.resources.sinks import SqlSink
from es_mysql_pipeline.value_types import ColumnStats
from es_mysql_pipeline.writers.base import SchemaReport, TableShape
from es_mysql_pipeline.writers.sql import schema
from es_mysql_pipeline.writers.sql.schema import _ddl_race, column_type
from es_mysql_pipeline_tests.conftest import split_target
from es_mysql_pipeline_tests.helpers import table_columns as columns


def shape(*extra: str, text_bytes: int = 20, ts: bool = True) -> TableShape:
    cols = {"id": ColumnStats("string", 10)}
    if ts:
        cols["timestamp"] = ColumnStats("datetime")
    cols["msg"] = ColumnStats("string", text_bytes)
    for name in extra:
        cols[name] = ColumnStats("int")
    return TableShape("id", "timestamp" if ts else None, cols)


def rows(ids: range, msg: str = "m", **extra: int) -> list[dict[str, Any]]:
    return [
        {"id": str(i), "timestamp": "2024-01-01T00:00:00.000000+00:00", "msg": msg, **extra}
        for i in ids
    ]


def load(sink: SqlSink, shp: TableShape, batch: list[dict[str, Any]]) -> tuple[Any, SchemaReport]:
    session = sink.open_session(shp, None)
    writer = session.writer()
    try:
        counts = writer.write(batch)
    finally:
        writer.close()
        session.commit()
    return counts, session.schema_report()


def test_evolve_adds_columns_and_widens_text(sql_target: str) -> None:
    url, table = split_target(sql_target)
    sink = SqlSink(url=url, table=table)
    load(sink, shape(), rows(range(3)))
    counts, report = load(
        sink,
        shape("region", "shard", text_bytes=70_000),
        rows(range(3, 6), "x" * 70_000, region=1, shard=2),
    )
    assert counts.inserted == 3
    assert sorted(report.added) == ["region", "shard"]
    cols = columns(url, table)
    assert {"region", "shard"} <= set(cols)
    if url.startswith("mysql"):
        assert report.widened == ["msg"] and cols["msg"] == "MEDIUMTEXT"
        assert any(
            c.startswith("ALTER TABLE") and "MODIFY COLUMN `msg` MEDIUMTEXT" in c
            for c in report.changes
        )
    assert dict(report.columns)["region"] in ("BIGINT", "BIGINT(20)")
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        got = dict(conn.execute(sa.text(f"SELECT id, region FROM {table}")).all())
        long_msg = conn.execute(sa.text(f"SELECT msg FROM {table} WHERE id = '4'")).scalar()
    engine.dispose()
    assert got == {"0": None, "1": None, "2": None, "3": 1, "4": 1, "5": 1}
    assert long_msg == "x" * 70_000


def test_evolve_adds_a_time_column_to_a_table_that_had_none(sql_target: str) -> None:
    url, table = split_target(sql_target)
    sink = SqlSink(url=url, table=table)
    load(sink, shape(ts=False), [{"id": "a", "msg": "m"}])
    _, report = load(sink, shape(), rows(range(2)))
    assert report.added == ["timestamp"]
    assert (
        "TIMESTAMP" in columns(url, table)["timestamp"]
        or "DATETIME" in columns(url, table)["timestamp"]
    )


def test_evolve_never_narrows_or_drops(sql_target: str) -> None:
    url, table = split_target(sql_target)
    sink = SqlSink(url=url, table=table)
    load(sink, shape("region", text_bytes=70_000), rows(range(2), "y" * 70_000, region=5))
    before = columns(url, table)
    _, report = load(sink, shape(), rows(range(2, 4)))  # fewer fields, shorter text
    assert report.changes == [] and columns(url, table) == before


def test_freeze_refuses_and_changes_nothing(sql_target: str) -> None:
    url, table = split_target(sql_target)
    load(SqlSink(url=url, table=table), shape(), rows(range(2)))
    with pytest.raises(ConfigError, match=r"column 'region' is missing.*--schema-contract evolve"):
        load(
            SqlSink(url=url, table=table, schema_contract="freeze"),
            shape("region"),
            rows(range(2, 4), region=1),
        )
    assert "region" not in columns(url, table)


def test_discard_leaves_unknown_fields_out(sql_target: str) -> None:
    url, table = split_target(sql_target)
    load(SqlSink(url=url, table=table), shape(), rows(range(2)))
    sink = SqlSink(url=url, table=table, schema_contract="discard")
    counts, report = load(sink, shape("region", "shard"), rows(range(2, 5), region=1, shard=2))
    assert counts.inserted == 3 and report.discarded == ["region", "shard"] and report.changes == []
    assert set(columns(url, table)) == {"id", "timestamp", "msg"}


def test_a_table_without_the_id_column_is_refused(sql_target: str) -> None:
    url, table = split_target(sql_target)
    keyed = TableShape("key", None, {"key": ColumnStats("string", 10)})
    load(SqlSink(url=url, table=table), keyed, [{"key": "a"}])
    other = TableShape("uid", None, {"uid": ColumnStats("string", 10)})
    with pytest.raises(ConfigError) as info:
        load(SqlSink(url=url, table=table), other, [{"uid": "a"}])
    assert str(info.value).startswith(
        f"table {table!r} does not match the data: column 'uid' for the record id is missing. "
    )


@contextlib.contextmanager
def reading_transaction(url: str, table: str) -> Iterator[sa.Connection]:
    """A connection whose open transaction has read ``table``: it holds the table's metadata
    lock, so DDL on the table waits until it rolls back or the block ends."""
    engine = sa.create_engine(url)
    reader = engine.connect()
    try:
        reader.exec_driver_sql(f"SELECT * FROM `{table}`").all()
        yield reader
    finally:
        reader.close()
        engine.dispose()


@pytest.mark.integration
def test_a_schema_change_kept_waiting_by_a_query_is_tried_again(
    mysql_url: str, mysql_table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An open transaction that read the table holds its metadata lock: the ALTER waits its
    lock_wait_timeout (1 s here), fails, and is tried again until the reader is done."""
    monkeypatch.setattr(schema, "_DDL_LOCK_WAIT", 1)
    sink = SqlSink(url=mysql_url, table=mysql_table)
    load(sink, shape(), rows(range(3)))
    with reading_transaction(mysql_url, mysql_table) as reader:
        done_reading = threading.Timer(2.5, reader.rollback)
        done_reading.start()
        try:
            counts, report = load(sink, shape("region"), rows(range(3, 6), region=1))
        finally:
            done_reading.join()
    assert counts.inserted == 3 and report.added == ["region"]
    assert "region" in columns(mysql_url, mysql_table)


@pytest.mark.integration
def test_a_load_waiting_too_long_for_another_loads_schema_change_says_so(
    mysql_url: str, mysql_table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One load's ALTER waits behind a query; a second load of the table waits for the
    first one's schema change at most its limit (1 s here), then fails saying so."""
    monkeypatch.setattr(schema, "_DDL_LOCK_TIMEOUT", 1)
    sink = SqlSink(url=mysql_url, table=mysql_table)
    load(sink, shape(), rows(range(3)))
    with reading_transaction(mysql_url, mysql_table) as reader:
        first = threading.Thread(target=load, args=(sink, shape("region"), rows(range(3, 6))))
        first.start()
        try:
            time.sleep(0.5)  # the first load holds the table's schema lock, its ALTER waiting
            with pytest.raises(SinkError) as info:
                load(sink, shape(), rows(range(6, 9)))
        finally:
            reader.rollback()
            first.join()
    assert str(info.value) == (f"table {mysql_table!r}: waited 1s for another load's schema change")
    assert "region" in columns(mysql_url, mysql_table)  # the first load went on


def test_a_bad_schema_contract_is_refused_by_the_resource() -> None:
    with pytest.raises(ValueError, match="schema_contract"):  # pydantic's ValidationError
        SqlSink(url="sqlite://", schema_contract="grow")  # type: ignore[arg-type]


# -- parallel first loads -------------------------------------------------------------------

PROCESSES = 4
TRIALS = 10
_barrier: Any = None


def _init(barrier: Any) -> None:
    global _barrier
    _barrier = barrier


def _first_load(url: str, table: str, k: int) -> str:
    """One of several loads that start together on a table that does not exist yet; each
    brings a field of its own and a longer text, so CREATE, ADD COLUMN and MODIFY all race."""
    shp = shape(f"extra_{k}", text_bytes=60_000 + k * 10_000_000 if k == PROCESSES - 1 else 100)
    batch = rows(range(k * 100, k * 100 + 100), "z" * (100 if k < PROCESSES - 1 else 70_000))
    for row in batch:
        row[f"extra_{k}"] = k
    _barrier.wait(timeout=60)
    try:
        counts, _ = load(SqlSink(url=url, table=table), shp, batch)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "ok" if counts.inserted == 100 else f"inserted {counts.inserted}"


@pytest.mark.slow
@pytest.mark.integration
def test_parallel_first_loads_on_a_missing_table_never_fail(mysql_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Manager().Barrier(PROCESSES)
    failures: list[str] = []
    engine = sa.create_engine(mysql_url)
    with ProcessPoolExecutor(
        PROCESSES, mp_context=ctx, initializer=_init, initargs=(barrier,)
    ) as pool:
        for trial in range(TRIALS):
            table = f"race_{uuid.uuid4().hex[:10]}"
            try:
                results = list(
                    pool.map(
                        _first_load, [mysql_url] * PROCESSES, [table] * PROCESSES, range(PROCESSES)
                    )
                )
                failures += [f"trial {trial}: {r}" for r in results if r != "ok"]
                cols = columns(mysql_url, table)
                assert {f"extra_{k}" for k in range(PROCESSES)} <= set(cols), cols
                assert cols["msg"] in ("MEDIUMTEXT", "LONGTEXT"), cols
                with engine.connect() as conn:
                    n = conn.execute(sa.text(f"SELECT COUNT(*) FROM `{table}`")).scalar()
                assert n == PROCESSES * 100
            finally:
                with engine.begin() as conn:
                    conn.execute(sa.text(f"DROP TABLE IF EXISTS `{table}`"))
    engine.dispose()
    assert failures == []


def test_freeze_names_every_column_the_data_would_not_fit(mysql_url: str, mysql_table: str) -> None:
    engine = sa.create_engine(mysql_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"CREATE TABLE `{mysql_table}` (id VARCHAR(10) PRIMARY KEY, n DATETIME, s INT, "
            "big DOUBLE, f INT, short VARCHAR(3), tt TINYTEXT, txt TEXT, ok BOOLEAN)"
        )
    engine.dispose()
    sink = SqlSink(url=mysql_url, table=mysql_table, schema_contract="freeze")
    data = {
        "id": ColumnStats("string", 5),
        "n": ColumnStats("int"),
        "s": ColumnStats("string", 5),
        "big": ColumnStats("bigint"),
        "f": ColumnStats("float"),
        "tt": ColumnStats("string", 300),
        "short": ColumnStats("string", 20),  # VARCHAR(3) holds 12 bytes of utf8mb4
        "ok": ColumnStats("bool"),
    }
    with pytest.raises(ConfigError) as info:
        load(sink, TableShape("id", None, data), [{"id": "1"}])
    message = str(info.value)
    assert message.startswith(f"table {mysql_table!r} does not match the data: column 'n': is ")
    for part in [
        r"column 'n': is DATETIME but the data has integers",
        r"column 's': is INTEGER(\(11\))? but the data has text",
        r"column 'big': is DOUBLE but the data has integers a double would round",
        r"column 'f': is INTEGER(\(11\))? but the data has decimals",
        r"column 'tt': is TINYTEXT but values are up to 300 bytes long",
        r" \(and 1 more\)\. Alter the table, drop it to let the pipeline create it, or set "
        r"--schema-contract evolve",
    ]:
        assert re.search(part, message), message[:2000]
    legacy = {"_id": ColumnStats("string", 5), "txt": ColumnStats("string", 70_000)}
    with pytest.raises(ConfigError) as info:
        load(sink, TableShape("_id", None, legacy), [{"_id": "1"}])
    assert (
        "column '_id' for the record id is missing (a table made by 0.1 keeps the id in column "
        "'id': set id_column to id, --output-id-column id on the command line); column 'txt': "
        "is TEXT but values are up to 70000 bytes long."
    ) in str(info.value)
    assert "tt" in columns(mysql_url, mysql_table)  # nothing changed


@pytest.mark.parametrize(
    ("stats", "ddl"),
    [(ColumnStats("bool"), "BOOL"), (ColumnStats("float"), "DOUBLE"),
     (ColumnStats("datetime"), "DATETIME(6)"), (ColumnStats("bigint"), "BIGINT"),
     (ColumnStats("string", 70_000), "MEDIUMTEXT"), (ColumnStats("json", 17_000_000), "LONGTEXT")],
)  # fmt: skip
def test_new_columns_are_typed_from_the_data(stats: ColumnStats, ddl: str) -> None:
    assert str(column_type(stats).compile(dialect=mysql.dialect())) == ddl


def test_ddl_another_load_got_to_first_is_tried_again() -> None:
    assert _ddl_race(RuntimeError("table `t` already exists"))
    assert _ddl_race(RuntimeError("Duplicate column name 'x'"))
    assert not _ddl_race(RuntimeError("syntax error"))
