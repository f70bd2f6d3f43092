"""Property: whatever keys and values documents carry, every leaf value reaches its row.

Random nested JSON Lines documents go through the three steps into SQLite and MariaDB:
keys in case variants, with dots, dashes, spaces, unicode, longer than 64 characters,
equal to ``id``/``timestamp``/``_overflow`` or the time field, empty objects and arrays,
nulls, fields whose type changes between documents, and hundreds of dynamic keys, under
column budgets and settings that force the overflow column. The oracle
(:mod:`es_mysql_pipeline_tests.support.fidelity`) finds each document's values in its row.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from es_mysql_pipeline.resources.sinks import SqlSink
from es_mysql_pipeline.resources.sources import FileSource
from es_mysql_pipeline_tests.badinput.support import assert_invariant, run_direct
from es_mysql_pipeline_tests.support.fidelity import assert_every_value_survives, read_rows
from es_mysql_pipeline_tests.support.mysql import drop_table

KEYS = [
    "id", "ID", "Id", "timestamp", "TIMESTAMP", "ts", "_overflow", "@timestamp",
    "userId", "userid", "USERID", "a.b", "a_b", "a-b", "a b", "a", "b", "é", "名前",
    "x" * 70, "x" * 70 + "y", "", "1abc", "labels", "user_name", "user",
]  # fmt: skip
key = st.one_of(
    st.sampled_from(KEYS),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=10),
)
top_key = key.filter(lambda k: k not in ("_id", "ts", "__error__"))
scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=-1000, max_value=1000),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=20),
)
leaf = st.one_of(scalar, st.lists(scalar, max_size=3), st.just({}))
value = st.recursive(leaf, lambda inner: st.dictionaries(key, inner, max_size=4), max_leaves=10)
labels = st.dictionaries(st.from_regex(r"k[0-9]{1,3}", fullmatch=True), scalar, max_size=60)


@st.composite
def documents(draw: st.DrawFn) -> list[dict[str, Any]]:
    n = draw(st.integers(min_value=1, max_value=15))
    uniform = draw(st.booleans())  # one shape for all: the column-by-column path
    shape = draw(st.lists(top_key, unique=True, max_size=6))
    docs = []
    for i in range(n):
        if uniform:
            fields = {k: draw(scalar) for k in shape}
        else:
            fields = draw(st.dictionaries(top_key, value, max_size=6))
        if draw(st.booleans()):
            fields["labels"] = draw(labels)
        minute = draw(st.integers(min_value=0, max_value=1439))
        ts = f"2024-03-01T{minute // 60:02d}:{minute % 60:02d}:00Z"
        docs.append({"_id": f"d{i}", "ts": ts, **fields})
    return docs


setting_choices = st.sampled_from(
    [
        {},
        {"keep_whole": ["labels"]},
        {"id_column": "id", "timestamp_column": "timestamp"},  # a table made by 0.1
    ]
)


def run_and_check(
    docs: list[dict[str, Any]], url: str, table: str, tmp: Path, chosen: dict[str, Any], cap: int
) -> None:
    path = tmp / "docs.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for doc in docs:
            fh.write(json.dumps(doc, ensure_ascii=False) + "\n")
    source = FileSource(path=str(path), id_column="_id", timestamp_column="ts")
    sink = SqlSink(url=url, table=table, max_columns=cap)
    out = run_direct(source, sink, tmp, **chosen)
    assert_invariant(out, len(docs))
    assert out.counts["failed"] == 0, out.dead_letters[:3]
    id_column = chosen.get("id_column", "_id")
    time_column = chosen.get("timestamp_column", "ts")
    rows = read_rows(url, table, key=id_column)
    stripped = {d["_id"]: {k: v for k, v in d.items() if k != "_id"} for d in docs}
    assert_every_value_survives(
        stripped, rows, id_column=id_column, time_field="ts", time_column=time_column
    )


PROPERTY_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


@PROPERTY_SETTINGS
@given(docs=documents(), chosen=setting_choices, cap=st.sampled_from([8, 40, 250]))
def test_every_value_reaches_sqlite(
    tmp_path_factory: pytest.TempPathFactory, docs: list[dict[str, Any]], chosen: Any, cap: int
) -> None:
    tmp = tmp_path_factory.mktemp("prop")
    run_and_check(docs, f"sqlite:///{tmp / 'db.sqlite'}", "t", tmp, chosen, cap)


@pytest.mark.integration
@PROPERTY_SETTINGS
@given(docs=documents(), chosen=setting_choices, cap=st.sampled_from([8, 40, 250]))
def test_every_value_reaches_mariadb(
    tmp_path_factory: pytest.TempPathFactory,
    mysql_url: str,
    docs: list[dict[str, Any]],
    chosen: Any,
    cap: int,
) -> None:
    tmp = tmp_path_factory.mktemp("prop")
    table = f"p_{uuid.uuid4().hex[:12]}"
    try:
        run_and_check(docs, mysql_url, table, tmp, chosen, cap)
    finally:
        drop_table(mysql_url, table)
