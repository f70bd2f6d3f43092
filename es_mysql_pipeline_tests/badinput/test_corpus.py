"""A corpus of bad and awkward inputs: each gets a clear outcome and the rest is loaded.

Where a database matters the corpus goes into the real MariaDB (``integration``); the
expected table contents are written out by hand, independently of the pipeline.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from es_mysql_pipeline.resources.sinks import JsonlSink, SqlSink
from es_mysql_pipeline.resources.sources import FileSource
from es_mysql_pipeline_tests.badinput.support import (
    RunOutcome,
    assert_invariant,
    reasons,
    run_direct,
    run_materialize,
)
from es_mysql_pipeline_tests.helpers import table_rows


def write(tmp: Path, name: str, data: bytes) -> FileSource:
    path = tmp / name
    path.write_bytes(data)
    return FileSource(path=str(path))


def jsonl(*docs: Any) -> bytes:
    return "\n".join(json.dumps(d, ensure_ascii=False) for d in docs).encode("utf-8") + b"\n"


def mysql(url: str, table: str, **kw: Any) -> SqlSink:
    return SqlSink(url=url, table=table, **kw)


def sqlite(tmp: Path) -> SqlSink:
    return SqlSink(url=f"sqlite:///{tmp / 'db.sqlite'}")


def loaded(outcome: RunOutcome, expected_processed: int, inserted: int) -> None:
    assert_invariant(outcome, expected_processed)
    assert outcome.counts["inserted"] == inserted, outcome.counts


# -- encodings and line endings ---------------------------------------------------------------


@pytest.mark.integration
def test_invalid_utf8_rejects_only_that_record(
    tmp_path: Path, mysql_url: str, mysql_table: str
) -> None:
    data = (
        b"id,timestamp,v\n"
        b"1,2024-01-01T00:00:00Z,caf\xc3\xa9\n"
        b"2,2024-01-01T00:00:00Z,caf\xe9\n"  # Latin-1 byte in a UTF-8 file
        b'3,2024-01-01T00:00:00Z,"multi\n\xff line"\n'  # and inside a quoted multi-line field
        b"4,2024-01-01T00:00:00Z,ok\n"
    )
    out = run_materialize(write(tmp_path, "in.csv", data), mysql(mysql_url, mysql_table), tmp_path)
    loaded(out, 4, 2)
    assert all("not valid utf-8" in r and "encoding" in r for r in reasons(out)), reasons(out)
    assert sorted(e["record"]["__raw__"][0] for e in out.dead_letters) == ["2", "3"]
    raw = {e["record"]["__raw__"][0]: e["record"]["__raw__"][2] for e in out.dead_letters}
    assert raw == {"2": "caf\\xe9", "3": "multi\n\\xff line"}  # the bad bytes shown escaped
    rows = table_rows(mysql_url, mysql_table)
    assert {k: r["v"] for k, r in rows.items()} == {"1": "café", "4": "ok"}


def test_invalid_utf8_in_jsonl_and_in_header(tmp_path: Path) -> None:
    data = (
        b'{"id": "1", "timestamp": "2024-01-01", "v": "\xff"}\n'
        b'{"id": "2", "timestamp": "2024-01-01"}\n'
    )
    out = run_direct(write(tmp_path, "in.jsonl", data), sqlite(tmp_path), tmp_path)
    loaded(out, 2, 1)
    assert "line 1" in reasons(out)[0] and "not valid utf-8" in reasons(out)[0]

    header = b"id,timestamp,na\xffme\n1,2024-01-01,x\n"
    out = run_direct(write(tmp_path, "h.csv", header), sqlite(tmp_path / ".."), tmp_path / "h")
    loaded(out, 1, 1)  # a field name is not data: the byte is escaped in the column name
    row = table_rows(f"sqlite:///{tmp_path / '..' / 'db.sqlite'}", "records")["1"]
    # not a plain identifier: made safe, with a hash of the original name
    assert [v for k, v in row.items() if k.startswith("na_xffme_")] == ["x"]


def test_latin1_file_with_the_right_encoding_setting(tmp_path: Path) -> None:
    src = write(tmp_path, "in.csv", b"id,timestamp,v\n1,2024-01-01,caf\xe9\n")
    out = run_direct(src.model_copy(update={"encoding": "latin-1"}), sqlite(tmp_path), tmp_path)
    loaded(out, 1, 1)
    assert table_rows(f"sqlite:///{tmp_path / 'db.sqlite'}", "records")["1"]["v"] == "café"


@pytest.mark.integration
def test_bom_crlf_and_nul_bytes_arrive_byte_exact(
    tmp_path: Path, mysql_url: str, mysql_table: str
) -> None:
    data = (
        b"\xef\xbb\xbfid,timestamp,v\r\n"
        b"1,2024-01-01T00:00:00Z,plain\r\n"
        b'2,2024-01-01T00:00:00Z,"two\r\nlines"\r\n'
        b"3,2024-01-01T00:00:00Z,nul\x00inside\r\n"
        b'4,2024-01-01T00:00:00Z," spaces , and ""quotes"" "\r\n'
        b"5,2024-01-01T00:00:00Z,NULL\r\n"
    )
    out = run_materialize(write(tmp_path, "in.csv", data), mysql(mysql_url, mysql_table), tmp_path)
    loaded(out, 5, 5)
    rows = table_rows(mysql_url, mysql_table)
    assert {k: r["v"] for k, r in rows.items()} == {
        "1": "plain",
        "2": "two\r\nlines",
        "3": "nul\x00inside",
        "4": ' spaces , and "quotes" ',
        "5": "NULL",
    }
    assert set(next(iter(rows.values()))) == {"id", "timestamp", "v"}  # no "\ufeffid"


# -- sizes ------------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.slow
def test_a_20_mb_field_is_loaded_whole(tmp_path: Path, mysql_url: str, mysql_table: str) -> None:
    big = "x" * (20 * 1024 * 1024 - 3) + "end"
    data = f"id,timestamp,v\n1,2024-01-01,small\n2,2024-01-01,{big}\n3,2024-01-01,after\n"
    sink = mysql(mysql_url, mysql_table, batch_size=2)
    out = run_materialize(write(tmp_path, "in.csv", data.encode()), sink, tmp_path)
    loaded(out, 3, 3)
    rows = table_rows(mysql_url, mysql_table)
    assert rows["2"]["v"] == big and rows["3"]["v"] == "after"


@pytest.mark.integration
@pytest.mark.slow
def test_a_20_mb_field_in_upsert_mode(tmp_path: Path, mysql_url: str, mysql_table: str) -> None:
    big = "x" * (20 * 1024 * 1024)
    data = f"id,timestamp,v\n1,2024-01-01,small\n2,2024-01-01,{big}\n3,2024-01-01,after\n"
    sink = mysql(mysql_url, mysql_table, batch_size=2, write_mode="upsert")
    out = run_direct(write(tmp_path, "in.csv", data.encode()), sink, tmp_path)
    loaded(out, 3, 2)
    assert "max_allowed_packet" in reasons(out)[0]
    assert set(table_rows(mysql_url, mysql_table)) == {"1", "3"}


def _wide_csv(tmp: Path) -> FileSource:
    header = "id,timestamp," + ",".join(f"c{i}" for i in range(9998))
    row = "1,2024-01-01," + ",".join(str(i) for i in range(9998))
    return write(tmp, "wide.csv", f"{header}\n{row}\n".encode())


@pytest.mark.slow
def test_ten_thousand_columns_into_a_file(tmp_path: Path) -> None:
    out = run_direct(_wide_csv(tmp_path), JsonlSink(path=str(tmp_path / "o.jsonl")), tmp_path)
    loaded(out, 1, 1)
    assert len(json.loads((tmp_path / "o.jsonl").read_text())) == 10_000


@pytest.mark.integration
@pytest.mark.slow
def test_ten_thousand_columns_into_mariadb_load_with_an_overflow(
    tmp_path: Path, mysql_url: str, mysql_table: str
) -> None:
    """InnoDB refuses a table of about 400 text columns: the first fields get columns (up to
    the column budget), the rest go to the ``_overflow`` JSON column, and every value is
    there."""
    out = run_direct(_wide_csv(tmp_path), mysql(mysql_url, mysql_table), tmp_path)
    loaded(out, 1, 1)
    engine = sa.create_engine(mysql_url)
    try:
        with engine.connect() as conn:
            row = conn.exec_driver_sql(f"SELECT * FROM `{mysql_table}`").mappings().one()
    finally:
        engine.dispose()
    assert len(row) == 250
    extra = json.loads(row["_overflow"])
    values = {k: v for k, v in row.items() if k.startswith("c")} | extra
    assert len(values) == 9998
    assert all(int(values[f"c{i}"]) == i for i in range(9998))


def test_header_only_and_empty_files_load_nothing_and_succeed(tmp_path: Path) -> None:
    for name, data in (("h.csv", b"id,timestamp\n"), ("e.csv", b""), ("e.jsonl", b"\n\n")):
        run_dir = tmp_path / f"run-{name}"
        out = run_materialize(write(tmp_path, name, data), sqlite(tmp_path), run_dir)
        loaded(out, 0, 0)


def test_duplicate_column_names_are_rejected_with_the_names(tmp_path: Path) -> None:
    src = write(tmp_path, "in.csv", b"id,timestamp,v,w,v\n1,2024-01-01,a,b,c\n")
    out = run_direct(src, sqlite(tmp_path), tmp_path)
    loaded(out, 1, 0)
    assert reasons(out) == ["duplicate column names in header: v"]


# -- numbers, timestamps, dates ----------------------------------------------------------------


@pytest.mark.integration
def test_numbers_that_overflow_bigint(tmp_path: Path, mysql_url: str, mysql_table: str) -> None:
    docs = [
        {"id": "1", "timestamp": "2024-01-01", "n": 1, "big": 2**63 - 1},
        {"id": "2", "timestamp": "2024-01-01", "n": 2**64, "big": -(2**63)},
        {"id": "3", "timestamp": "2024-01-01", "n": -(10**30), "big": 7},
        {"id": 10**25, "timestamp": "2024-01-01", "n": 3, "big": 8},
    ]
    src = write(tmp_path, "in.jsonl", jsonl(*docs))
    out = run_materialize(src, mysql(mysql_url, mysql_table), tmp_path)
    loaded(out, 4, 4)
    rows = table_rows(mysql_url, mysql_table)
    # n mixes int64 and larger: stored as exact text; big fits BIGINT: stored as integers.
    assert {k: r["n"] for k, r in rows.items()} == {
        "1": "1",
        "2": str(2**64),
        "3": str(-(10**30)),
        str(10**25): "3",
    }
    assert rows["1"]["big"] == 2**63 - 1 and rows["2"]["big"] == -(2**63)


def test_int_cast_of_an_overflowing_number_rejects_that_record(tmp_path: Path) -> None:
    data = b"id,timestamp,n\n1,2024-01-01,9223372036854775807\n2,2024-01-01,9223372036854775808\n"
    out = run_direct(
        write(tmp_path, "in.csv", data), sqlite(tmp_path), tmp_path, casts={"n": "int"}
    )
    loaded(out, 2, 1)
    assert "does not fit in a 64-bit integer" in reasons(out)[0]


@pytest.mark.integration
def test_timestamps_with_and_without_time_zones_and_far_dates(
    tmp_path: Path, mysql_url: str, mysql_table: str
) -> None:
    cases = {
        "naive": ("2024-03-01T10:00:00", datetime(2024, 3, 1, 10)),
        "z": ("2024-03-01T10:00:00Z", datetime(2024, 3, 1, 10)),
        "plus5": ("2024-03-01T15:00:00+05:00", datetime(2024, 3, 1, 10)),
        "minus0330": ("2024-03-01 06:30:00.123456-03:30", datetime(2024, 3, 1, 10, 0, 0, 123456)),
        "space": ("2024-03-01 10:00:00", datetime(2024, 3, 1, 10)),
        "epoch_s": ("1709287200", datetime(2024, 3, 1, 10)),
        "epoch_ms": ("1709287200000", datetime(2024, 3, 1, 10)),
        "moon": ("1969-07-20T20:17:40Z", datetime(1969, 7, 20, 20, 17, 40)),
        "y1900": ("1900-01-01", datetime(1900, 1, 1)),
        "y1000": ("1000-01-01T00:00:00", datetime(1000, 1, 1)),
        "y2100": ("2100-01-01T00:00:00+00:00", datetime(2100, 1, 1)),
        "y2999": ("2999-12-31T23:59:59.999999Z", datetime(2999, 12, 31, 23, 59, 59, 999999)),
        "y9999": ("9999-12-31T23:59:59", datetime(9999, 12, 31, 23, 59, 59)),
        "empty": ("", None),  # no time: a full run loads it without one
    }
    rejected = {
        "overflow_high": "9999-12-31T23:59:59-05:00",  # beyond year 9999 in UTC
        "overflow_low": "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
        "month13": "2024-13-01",
        "garbage": "yesterday",
    }
    texts = {**{k: v[0] for k, v in cases.items()}, **rejected}
    lines = ["id,timestamp"] + [f"{k},{v}" for k, v in texts.items()]
    src = write(tmp_path, "in.csv", ("\n".join(lines) + "\n").encode())
    out = run_materialize(src, mysql(mysql_url, mysql_table), tmp_path)
    loaded(out, len(cases) + len(rejected), len(cases))
    assert sorted(e["record"]["id"] for e in out.dead_letters) == sorted(rejected)
    assert all(r.startswith("timestamp field 'timestamp'") for r in reasons(out)), reasons(out)
    rows = table_rows(mysql_url, mysql_table)
    assert {k: r["timestamp"] for k, r in rows.items()} == {k: v[1] for k, v in cases.items()}


# -- JSON shapes --------------------------------------------------------------------------------


def _nest(depth: int, leaf: Any) -> Any:
    value = leaf
    for i in range(depth):
        value = {f"k{i % 3}": value}
    return value


@pytest.mark.integration
def test_deeply_nested_json(tmp_path: Path, mysql_url: str, mysql_table: str) -> None:
    arrays: Any = []
    for _ in range(199):
        arrays = [arrays]
    docs = [
        {"id": "arrays", "timestamp": "2024-01-01", "d": arrays},
        {"id": "objects", "timestamp": "2024-01-01", "d": _nest(200, "leaf")},
        {"id": "plain", "timestamp": "2024-01-01", "d": "x"},
    ]
    data = jsonl(*docs) + ("[" * 100_000).encode() + b"\n"  # beyond any parser's depth
    out = run_materialize(
        write(tmp_path, "in.jsonl", data), mysql(mysql_url, mysql_table), tmp_path
    )
    loaded(out, 4, 3)
    assert "line 4: invalid JSON" in reasons(out)[0]
    rows = table_rows(mysql_url, mysql_table)
    assert json.loads(rows["arrays"]["d"]) == arrays
    # objects flatten 33 levels deep into one column; the rest stays JSON text in it.
    deep_cols = [c for c, v in rows["objects"].items() if v is not None and c.startswith("d_")]
    assert len(deep_cols) == 1, deep_cols
    assert json.loads(rows["objects"][deep_cols[0]]) == _nest(200 - 33, "leaf")


@pytest.mark.integration
def test_fields_that_change_type_between_records(
    tmp_path: Path, mysql_url: str, mysql_table: str
) -> None:
    values: list[Any] = [1, "x", 1.5, True, None, [1, "a"], 2**70, "", "NULL"]
    docs = [{"id": str(i), "timestamp": "2024-01-01", "v": v} for i, v in enumerate(values)]
    docs.append({"id": "obj", "timestamp": "2024-01-01", "v": {"a": 1}})  # flattens to v_a
    src = write(tmp_path, "in.jsonl", jsonl(*docs))
    out = run_materialize(src, mysql(mysql_url, mysql_table, batch_size=3), tmp_path)
    loaded(out, len(docs), len(docs))
    rows = table_rows(mysql_url, mysql_table)
    assert [rows[str(i)]["v"] for i in range(len(values))] == [
        "1",
        "x",
        "1.5",
        "true",
        None,
        '[1, "a"]',
        str(2**70),
        "",
        "NULL",
    ]
    assert rows["obj"]["v_a"] == 1 and rows["obj"]["v"] is None
