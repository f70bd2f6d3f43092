"""SQL injection: values are always bound parameters, identifiers validated and quoted, and
a least-privilege user (the README's grants) is enough to run the pipeline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from es_mysql_pipeline.errors import ConfigError
from es_mysql_pipeline.identifiers import column_name
from es_mysql_pipeline.resources.sinks import SqlSink
from es_mysql_pipeline.resources.sources import FileSource
from es_mysql_pipeline.writers.base import WriteMode
from es_mysql_pipeline_tests.badinput.support import (
    assert_clear_failure,
    assert_invariant,
    run_direct,
    run_materialize,
)
from es_mysql_pipeline_tests.helpers import table_rows
from es_mysql_pipeline_tests.security.users import LEAST_PRIVILEGE, mysql_user

MODES_RERUN: list[WriteMode] = ["skip", "skip", "upsert"]
MODES_FRESH: list[WriteMode] = ["skip", "upsert"]
HOSTILE_VALUES = [
    "'; DROP TABLE canary; --",
    '"); DELETE FROM canary; --',
    "\\",
    "\\'",
    "\\N",
    "%s",
    "%(id)s",
    "?",
    "NULL",
    "a\x00b",
    "`",
    'line\nbreak,comma"quote',
    "1 OR 1=1",
]
HOSTILE_TABLES = [
    "records; DROP TABLE canary",
    "a`b",
    "x' OR '1'='1",
    "db.table",
    "../etc",
    "",
    "t" * 65,
    "tåble",
    "1abc",
    "a b",
]
HOSTILE_COLUMNS = [
    "`; DROP TABLE canary; --",
    'x"y',
    "select",
    "from",
    "id) VALUES (1); --",
    "c" * 100,
    "ключ",
    "",
]


@pytest.fixture
def canary(mysql_url: str) -> object:
    engine = sa.create_engine(mysql_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS canary (x INT)")
        conn.exec_driver_sql("DELETE FROM canary")
        conn.exec_driver_sql("INSERT INTO canary VALUES (42)")
    yield
    with engine.begin() as conn:
        assert conn.exec_driver_sql("SELECT x FROM canary").scalars().all() == [42]
        conn.exec_driver_sql("DROP TABLE canary")
    engine.dispose()


@pytest.mark.parametrize("name", HOSTILE_TABLES)
def test_hostile_table_names_are_refused(name: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"db_table=.*not a valid SQL identifier"):
        SqlSink(url=f"sqlite:///{tmp_path / 'x.db'}", table=name).check()


@pytest.mark.parametrize("setting", ["id_column", "timestamp_column"])
def test_hostile_configured_column_names_fail_the_step(setting: str, tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("id,timestamp\n1,2024-01-01\n")
    sink = SqlSink(url=f"sqlite:///{tmp_path / 'x.db'}")
    kwargs = {setting: "x`; DROP TABLE y; --"}
    out = run_materialize(FileSource(path=str(tmp_path / "in.csv")), sink, tmp_path, **kwargs)
    assert_clear_failure(out.failure, setting, "not a valid SQL identifier")


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["skip", "upsert", "append"])
def test_hostile_values_and_field_names_are_stored_verbatim(
    mode: Any, tmp_path: Path, mysql_url: str, mysql_table: str, canary: object
) -> None:
    """Both write paths: LOAD DATA (skip/append) and multi-row INSERT (upsert)."""
    docs = [
        {"id": v, "timestamp": "2024-01-01", "v": v, **{c: v for c in HOSTILE_COLUMNS}}
        for v in HOSTILE_VALUES
    ]
    (tmp_path / "in.jsonl").write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    sink = SqlSink(url=mysql_url, table=mysql_table, write_mode=mode, batch_size=4)
    out = run_materialize(FileSource(path=str(tmp_path / "in.jsonl")), sink, tmp_path)
    assert_invariant(out, len(docs))
    assert out.counts["inserted"] == len(docs), out.counts
    engine = sa.create_engine(mysql_url)
    with engine.connect() as conn:
        t = sa.Table(mysql_table, sa.MetaData(), autoload_with=conn)
        rows = [dict(r._mapping) for r in conn.execute(sa.select(t))]
    engine.dispose()
    assert sorted(r["v"] for r in rows) == sorted(HOSTILE_VALUES)
    safe = {column_name(c) for c in HOSTILE_COLUMNS}
    assert safe <= set(rows[0]), (safe, set(rows[0]))
    for row in rows:
        assert all(row[c] == row["v"] for c in safe)


@pytest.mark.integration
def test_long_and_reserved_identifiers_make_valid_index_names(
    tmp_path: Path, mysql_url: str, canary: object
) -> None:
    """A 64-character table and timestamp column: the generated index name must still fit."""
    table = ("t_" + "x" * 62)[:64]
    (tmp_path / "in.csv").write_text("id,timestamp\n1,2024-01-01\n")
    sink = SqlSink(url=mysql_url, table=table, write_mode="append")
    try:
        out = run_direct(
            FileSource(path=str(tmp_path / "in.csv")),
            sink,
            tmp_path,
            id_column="select",
            timestamp_column="c" * 64,
        )
        assert_invariant(out, 1)
        assert out.counts["inserted"] == 1
    finally:
        engine = sa.create_engine(mysql_url)
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS `{table}`")
        engine.dispose()


# -- least privilege --------------------------------------------------------------------------


def _partitioned_input(tmp: Path, value: str) -> FileSource:
    lines = ["id,timestamp,v"] + [f"{i},2024-01-0{1 + i % 3}T10:00:00Z,{value}" for i in range(30)]
    (tmp / "in.csv").write_text("\n".join(lines) + "\n")
    return FileSource(path=str(tmp / "in.csv"))


@pytest.mark.integration
def test_pipeline_runs_as_the_readme_least_privilege_user(
    tmp_path: Path, mysql_url: str, mysql_table: str
) -> None:
    """The README's grants (SELECT, INSERT, UPDATE, CREATE, INDEX): create, skip re-run,
    upsert re-run and the partition reconciliation all work, through both write paths."""
    from es_mysql_pipeline_tests.helpers import make_resources, run_partitions

    with mysql_user(mysql_url, LEAST_PRIVILEGE) as user:
        for i, mode in enumerate(MODES_RERUN):
            sink = SqlSink(url=user.url, password=user.password, table=mysql_table, write_mode=mode)
            out = run_materialize(_partitioned_input(tmp_path, mode), sink, tmp_path / str(i))
            assert_invariant(out, 30)
        res = run_partitions(
            make_resources(
                str(tmp_path / "p"), sink=sink, source=_partitioned_input(tmp_path, "p")
            ),
            "2024-01-02",
        )
        assert res.success
        checks = res.get_asset_check_evaluations()
        assert checks and all(c.passed for c in checks)
    rows = table_rows(mysql_url, mysql_table)
    assert len(rows) == 30 and {r["v"] for r in rows.values()} == {"upsert", "p"}


@pytest.mark.integration
@pytest.mark.parametrize("missing", LEAST_PRIVILEGE)
def test_each_documented_grant_is_needed(
    missing: str, tmp_path: Path, mysql_url: str, mysql_table: str
) -> None:
    """Without any one of the grants a fresh load (create, upsert re-run) fails clearly."""
    grants = tuple(g for g in LEAST_PRIVILEGE if g != missing)
    with mysql_user(mysql_url, grants) as user:
        failures = []
        for i, mode in enumerate(MODES_FRESH):
            sink = SqlSink(url=user.url, password=user.password, table=mysql_table, write_mode=mode)
            out = run_direct(_partitioned_input(tmp_path, mode), sink, tmp_path / str(i))
            failures.append(out.failure)
    failure = next((f for f in failures if f), None)
    assert failure is not None, f"the pipeline ran without {missing}: the grant is not needed"
    assert_clear_failure(failure, "denied", user.name)
