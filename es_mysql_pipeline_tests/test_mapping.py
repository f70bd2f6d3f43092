from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from es_mysql_pipeline.errors import ConfigError
from es_mysql_pipeline.mapping import (
    _JSON_TEXT,
    FieldMapping,
    RecordRejected,
    cast_value,
    load_analyzer,
)
from es_mysql_pipeline.records import ERROR_KEY, columns_of, rows_of


def m(**kw: object) -> FieldMapping:
    return FieldMapping(id_key="id", timestamp_key="timestamp", **kw)  # type: ignore[arg-type]


def test_flatten_rename_and_json_arrays() -> None:
    row = m(rename={"user_name": "who"}).apply(
        {
            "id": 7,
            "timestamp": "2024-01-01T00:00:00Z",
            "user": {"name": "ann", "geo": {"cc": "DE"}},
            "tags": ["a", "b"],
            "empty": {},
        }
    )
    assert row == {
        "id": "7",
        "timestamp": "2024-01-01T00:00:00.000000+00:00",
        "who": "ann",
        "user_geo_cc": "DE",
        "tags": '["a", "b"]',
        "empty": "{}",
    }


def test_values_stay_byte_exact() -> None:
    raw = {"id": "x", "timestamp": "2024-01-01", "a": "  NULL  ", "b": "NULL", "c": "x,y\nz"}
    row = m().apply(raw)
    assert (row["a"], row["b"], row["c"]) == ("  NULL  ", "NULL", "x,y\nz")


def test_select_and_casts() -> None:
    row = m(select=("n",), casts={"n": "int", "ok": "bool"}).apply(
        {"id": "1", "timestamp": "2024-01-01", "n": "42", "ok": "yes", "drop": 1}
    )
    assert row == {"id": "1", "timestamp": "2024-01-01T00:00:00.000000+00:00", "n": 42}


@pytest.mark.parametrize("value", [None, ""])
def test_a_record_without_a_time_is_loaded_with_none(value: object) -> None:
    raw = {"id": "1", "msg": "hi"} if value is None else {"id": "1", "timestamp": value}
    row = m().apply(raw)
    assert row["timestamp"] is None and row["id"] == "1"


def test_no_time_field_means_no_time_column() -> None:
    mapping = FieldMapping(id_key="id", timestamp_key=None)
    row = mapping.apply({"id": "1", "timestamp": "not a time at all", "n": "2"})
    # With no time field, a column that happens to be called timestamp is plain data.
    assert row == {"id": "1", "timestamp": "not a time at all", "n": "2"}
    assert "timestamp" not in mapping.declared_types


def test_a_nested_time_field_is_read_by_its_dotted_name() -> None:
    mapping = FieldMapping(id_key="_id", timestamp_key="event.created")
    row = mapping.apply({"_id": "1", "event": {"created": "2024-01-01T00:00:00Z", "kind": "x"}})
    assert row == {
        "_id": "1",
        "event_created": "2024-01-01T00:00:00.000000+00:00",
        "event_kind": "x",
    }
    legacy = FieldMapping("_id", "event.created", id_column="id", timestamp_column="timestamp")
    row = legacy.apply({"_id": "1", "event": {"created": "2024-01-01T00:00:00Z", "kind": "x"}})
    assert row == {"id": "1", "timestamp": "2024-01-01T00:00:00.000000+00:00", "event_kind": "x"}


def test_a_detected_time_field_keeps_its_name_in_utc() -> None:
    mapping = FieldMapping(id_key="id", timestamp_key="ts")
    row = mapping.apply({"id": "1", "ts": "2024-01-01T00:00:00Z", "level": "info"})
    assert row == {"id": "1", "ts": "2024-01-01T00:00:00.000000+00:00", "level": "info"}
    assert mapping.declared_types == {"ts": "datetime"}


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ({"timestamp": "2024-01-01"}, "missing or empty id"),
        ({"id": "", "timestamp": "2024-01-01"}, "missing or empty id"),
        ({"id": "1", "timestamp": "soon"}, "timestamp field"),
        ({"id": "1", "timestamp": "2024-01-01", ERROR_KEY: "line 3: expected 8"}, "line 3"),
    ],
)
def test_rejects_carry_reasons(raw: dict[str, object], reason: str) -> None:
    with pytest.raises(RecordRejected, match=reason):
        m().apply(raw)


def test_cast_failure_is_a_reject() -> None:
    with pytest.raises(RecordRejected, match="cast of 'n' to int"):
        m(casts={"n": "int"}).apply({"id": "1", "timestamp": "2024-01-01", "n": "4x"})
    with pytest.raises(ValueError, match="64-bit"):
        cast_value("99999999999999999999", "int")


def test_bad_mapping_config_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="casts"):
        m(casts={"n": "decimal"})
    with pytest.raises(ConfigError, match="rename"):
        m(rename={"a": "x; DROP TABLE y"})
    with pytest.raises(ConfigError, match="analyzer"):
        load_analyzer("no.such.module:fn")


# -- the batch path: the same rows as record by record, or no answer ----------------------

_VALUES = st.one_of(
    st.none(),
    st.text(max_size=6),
    st.sampled_from(["", "7", "2024-01-01T00:00:00.5Z", "2024-02-30", "yesterday", "NULL"]),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.booleans(),
    st.just({"nested": 1}),
    st.just([1, 2]),
)
_KEYS = st.sampled_from(["id", "timestamp", "ts", "uuid", "a b", "a_b", "A", "msg", "x.y"])
_MAPPINGS = [
    FieldMapping(id_key="id", timestamp_key="timestamp"),
    FieldMapping(id_key="id", timestamp_key="timestamp", flatten=False),
    FieldMapping(id_key="id", timestamp_key="ts", rename={"msg_geo_cc": "country", "A_a": "aa"}),
    FieldMapping(id_key="id", timestamp_key=None),
    FieldMapping(id_key="uuid", timestamp_key="ts", id_column="id", timestamp_column="timestamp"),
    FieldMapping(id_key="id", timestamp_key="timestamp", rename={"msg": "message", "A": "id"}),
    FieldMapping(id_key="id", timestamp_key="timestamp", select=("msg", "a_b")),
    FieldMapping(id_key="id", timestamp_key="x.y"),
]


#: Columns are mostly of one kind, as real data is: the batch path is taken often.
_COLUMN_KINDS = {
    "text": st.text(max_size=6).filter(bool),
    "int": st.integers(min_value=-(2**70), max_value=2**70),
    "time": st.sampled_from(["2024-01-01T00:00:00.5Z", "2024-03-01 10:00", "1700000000", ""]),
    "any": _VALUES,
    "object": st.fixed_dictionaries(
        {"id": st.integers(0, 9), "geo": st.fixed_dictionaries({"cc": st.sampled_from(["DE", ""])})}
    ),
    "objects": st.one_of(
        st.just({"a": {"b": 1}}), st.just({"a": {"b": {}}}), st.just({"a": []}), st.just({})
    ),
    "array": st.lists(st.one_of(st.integers(), st.text(max_size=2)), max_size=2),
}


@given(data=st.data(), keys=st.lists(_KEYS, min_size=1, max_size=5, unique=True))
@hyp_settings(max_examples=500, deadline=None)
def test_batch_path_gives_exactly_the_rows_of_apply(data: st.DataObject, keys: list[str]) -> None:
    kinds = [data.draw(st.sampled_from(sorted(_COLUMN_KINDS))) for _ in keys]
    n = data.draw(st.integers(min_value=1, max_value=6))
    batch = [
        {key: data.draw(_COLUMN_KINDS[kind]) for key, kind in zip(keys, kinds, strict=True)}
        for _ in range(n)
    ]
    if n > 1 and data.draw(st.booleans()):
        batch[-1] = dict(reversed(batch[-1].items()))  # same keys, another order
    columns = columns_of(batch)
    for mapping in _MAPPINGS:
        fast = mapping.apply_batch(batch)
        if columns is not None:  # a staged frame of columns: the same rows, or none
            from_columns = mapping.apply_columns(columns)
            assert (from_columns is None) == (fast is None)
            if from_columns is not None and fast is not None:
                assert _items(rows_of(from_columns)) == _items(fast)
        if fast is None:
            continue
        # Items, not dicts: key order is part of the row (the table's and the file's).
        assert _items(fast) == _items([mapping.apply(r) for r in batch])


def _items(rows: list[dict[str, Any]]) -> list[list[tuple[str, Any]]]:
    return [list(r.items()) for r in rows]


def test_batch_path_takes_csv_shaped_batches_and_declines_the_rest() -> None:
    mapping = m(rename={"msg": "message"})
    csv_like = [
        {"id": f"r{i}", "timestamp": "2024-01-01T00:00:00.123456Z", "msg": "hi", "n": "1"}
        for i in range(3)
    ]
    rows = mapping.apply_batch(csv_like)
    assert rows is not None and rows == [mapping.apply(r) for r in csv_like]
    assert list(rows[0]) == ["message", "n", "id", "timestamp"]
    for bad in ({"id": ""}, {"timestamp": "not a time"}, {"msg": {"a": 1}}, {ERROR_KEY: "x"}):
        assert mapping.apply_batch([*csv_like, {**csv_like[0], **bad}]) is None
    assert m(casts={"n": "int"}).apply_batch(csv_like) is None
    int_ids = [{**r, "id": i} for i, r in enumerate(csv_like)]
    assert mapping.apply_batch(int_ids) == [mapping.apply(r) for r in int_ids]
    assert mapping.apply_batch([*csv_like, {"id": "r9"}]) is None  # another shape


def test_batch_path_flattens_objects_of_one_shape() -> None:
    """Elasticsearch documents: objects flattened, arrays as JSON text, a time at a path."""
    mapping = FieldMapping(id_key="_id", timestamp_key="event.created", rename={"user_id": "uid"})
    docs = [
        {"_id": f"d{i}", "event": {"created": "2024-01-01T00:00:00Z"}, "user": {"id": i},
         "tags": ["a", "✓"]}
        for i in range(3)
    ]  # fmt: skip
    rows = mapping.apply_batch(docs)
    assert rows is not None
    assert [list(r.items()) for r in rows] == [list(mapping.apply(d).items()) for d in docs]
    assert rows[0]["tags"] == '["a", "✓"]' and rows[2]["uid"] == 2
    other = {**docs[0], "user": {"id": 1, "name": "x"}}  # an object of another shape
    assert mapping.apply_batch([*docs, other]) is None


def test_batch_path_reads_a_dotted_time_field_as_apply_does() -> None:
    """A dotted time field is a key first, a path into objects when that key is empty."""
    mapping = FieldMapping(id_key="id", timestamp_key="x.y", flatten=False)
    batch = [
        {"id": "a", "x.y": None, "x": {"y": "2024-01-01T00:00:00Z"}},
        {"id": "b", "x.y": "2024-02-01T00:00:00Z", "x": {"y": "2024-01-01T00:00:00Z"}},
    ]
    rows = mapping.apply_batch(batch)
    assert rows is None or rows == [mapping.apply(r) for r in batch]
    mapping = FieldMapping(id_key="id", timestamp_key="x.y")
    nested = [{"id": "c", "x": {"y": "2024-03-01T00:00:00Z"}}]
    assert mapping.apply_batch(nested) == [mapping.apply(nested[0])]
    for frame in (nested, [{"id": "d", "x": "not an object"}], [{"id": "e", "z": 1}]):
        columns = mapping.apply_columns(columns_of(frame) or {})
        assert columns is not None
        assert rows_of(columns) == [mapping.apply(r) for r in frame]
        assert rows_of(columns) == mapping.apply_batch(frame)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=3) | st.integers() | st.booleans(), inner, max_size=4)
    ),
    max_leaves=12,
)


@hyp_settings(max_examples=500)
@given(st.lists(_json_values, min_size=1, max_size=5))
def test_json_text_of_a_column_is_json_dumps_of_each_value(values: list[Any]) -> None:
    """The encoder built once writes what ``json.dumps`` writes, value after value (the
    state it keeps between values included)."""
    assert _JSON_TEXT._c is not None  # CPython: the fast path is the one tested
    assert [_JSON_TEXT(v) for v in values] == [json.dumps(v, ensure_ascii=False) for v in values]


def test_json_text_errors_are_json_dumps_errors_and_leave_nothing_behind() -> None:
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    for bad, error in ((cyclic, ValueError), ([1, object()], TypeError)):
        with pytest.raises(error):
            json.dumps(bad, ensure_ascii=False)
        with pytest.raises(error):
            _JSON_TEXT(bad)
    shared: list[Any] = [1]
    assert _JSON_TEXT([shared, shared]) == "[[1], [1]]"  # no marker left from the cycle
    assert _JSON_TEXT._markers == {}
