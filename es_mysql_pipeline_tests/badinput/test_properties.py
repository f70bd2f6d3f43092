"""Property-based: random CSV bytes and random JSON documents never crash or hang the
pipeline, and every record is accounted for.

Each example runs fetch → transform → load through the real asset functions into a JSON
Lines file or SQLite. The acceptable outcomes are a successful run whose counts balance
(with every failure in the dead letter), or a ``dg.Failure`` with one clear line; any
other exception is a crash and fails the test.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from es_mysql_pipeline.records import parse_timestamp
from es_mysql_pipeline.resources.sinks import JsonlSink, SqlSink
from es_mysql_pipeline.resources.sources import FileSource
from es_mysql_pipeline_tests.badinput.support import (
    RunOutcome,
    assert_clear_failure,
    assert_invariant,
    run_direct,
    run_materialize,
    time_limit,
)

FAST = settings(
    max_examples=40,
    deadline=10_000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=False,
)
FEW = settings(FAST, max_examples=8, deadline=30_000)


def _run(data: bytes, name: str, sink_kind: str, materialize: bool = False) -> RunOutcome:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, name)
        with open(path, "wb") as fh:
            fh.write(data)
        sink: Any
        if sink_kind == "sqlite":
            sink = SqlSink(url=f"sqlite:///{os.path.join(tmp, 'db.sqlite')}", workers=2)
        else:
            sink = JsonlSink(path=os.path.join(tmp, "out.jsonl"))
        runner = run_materialize if materialize else run_direct
        with time_limit(60):
            outcome = runner(FileSource(path=path), sink, tmp, fetch_batch_size=7)
        if outcome.ok:
            assert_invariant(outcome)
        else:  # a refusal must still be one clear line
            assert_clear_failure(outcome.failure)
        return outcome


# -- random bytes ---------------------------------------------------------------------------

HEADERS = st.sampled_from(
    [b"", b"id,timestamp\n", b"id,timestamp,v\r\n", b"\xef\xbb\xbfid,@timestamp,a,a\n"]
)


@FAST
@given(header=HEADERS, body=st.binary(max_size=2000), sink=st.sampled_from(["file", "sqlite"]))
def test_random_csv_bytes(header: bytes, body: bytes, sink: str) -> None:
    _run(header + body, "in.csv", sink)


@FAST
@given(body=st.binary(max_size=2000))
def test_random_jsonl_bytes(body: bytes) -> None:
    _run(body, "in.jsonl", "sqlite")


# -- random but well-formed CSV: the counts are known in advance ------------------------------

FIELD = st.text(
    alphabet=st.characters(exclude_categories=["Cs"]), max_size=30
)  # any code point but lone surrogates (not encodable as UTF-8)
TIMESTAMP = st.one_of(
    st.datetimes().map(lambda d: d.isoformat()),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.integers(min_value=-(2**40), max_value=2**45).map(str),
    st.sampled_from(
        ["", "NULL", "2024-01-01", "2024-13-01", "2024-01-01Z", "1e10", "0001-01-01T00:00:00+01:00"]
    ),
    FIELD,
)
ROW = st.tuples(st.one_of(st.sampled_from(["1", "2", "a", "A", ""]), FIELD), TIMESTAMP, FIELD)


def _valid(row: tuple[str, str, str]) -> bool:
    if row[0] == "":
        return False
    if row[1] == "":
        return True  # no time: a full run loads the record without one (issue 10)
    try:
        parse_timestamp(row[1])
    except ValueError:
        return False
    return True


@FAST
@given(rows=st.lists(ROW, max_size=40), crlf=st.booleans(), bom=st.booleans())
def test_wellformed_csv_counts_are_exact(
    rows: list[tuple[str, str, str]], crlf: bool, bom: bool
) -> None:
    buf = io.StringIO()
    end = "\r\n" if crlf else "\n"
    writer = csv.writer(buf, lineterminator=end)
    # csv.writer leaves a bare "\r" unquoted when the line terminator is "\n" (readers,
    # rightly, take it as a line break): such rows are written fully quoted.
    quoted = csv.writer(buf, lineterminator=end, quoting=csv.QUOTE_ALL)
    writer.writerow(["id", "timestamp", "v"])
    for row in rows:
        (quoted if any("\r" in f for f in row) else writer).writerow(row)
    data = buf.getvalue().encode("utf-8")
    outcome = _run((b"\xef\xbb\xbf" if bom else b"") + data, "in.csv", "sqlite")
    assert outcome.ok, outcome.failure
    valid = [r for r in rows if _valid(r)]
    distinct = len({r[0] for r in valid})
    c = outcome.counts
    assert c["processed"] == len(rows)
    assert c["failed"] == len(rows) - len(valid)
    assert (c["inserted"], c["skipped"]) == (distinct, len(valid) - distinct)


# -- random JSON documents --------------------------------------------------------------------

JSON_SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    FIELD,
)
JSON = st.recursive(
    JSON_SCALAR,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(FIELD, inner, max_size=4)),
    max_leaves=20,
)
KEYED_DOC = st.fixed_dictionaries(
    {"id": st.one_of(JSON_SCALAR, JSON), "timestamp": st.one_of(TIMESTAMP, JSON)},
    optional={"v": JSON, "nested": JSON, "id ": JSON, "timestamp_x": JSON},
)
DOC = st.one_of(KEYED_DOC, JSON, st.dictionaries(FIELD, JSON, max_size=5))


@FAST
@given(docs=st.lists(DOC, max_size=25), sink=st.sampled_from(["file", "sqlite"]))
def test_random_json_documents(docs: list[Any], sink: str) -> None:
    data = "\n".join(json.dumps(d, ensure_ascii=False) for d in docs).encode("utf-8")
    outcome = _run(data, "in.jsonl", sink)
    assert outcome.ok, outcome.failure
    assert outcome.counts["processed"] == len(docs)


@FEW
@given(docs=st.lists(DOC, max_size=15), header=HEADERS, body=st.binary(max_size=500))
def test_random_input_through_dagster_materialize(
    docs: list[Any], header: bytes, body: bytes
) -> None:
    """The same properties through ``dg.materialize`` (the CLI's path, with its retries)."""
    data = "\n".join(json.dumps(d, ensure_ascii=False) for d in docs).encode("utf-8")
    outcome = _run(data, "in.jsonl", "sqlite", materialize=True)
    assert outcome.ok and outcome.counts["processed"] == len(docs), outcome
    _run(header + body, "in.csv", "sqlite", materialize=True)
