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
    _JsonText,
    cast_value,
    load_analyzer,
)
from es_mysql_pipeline.records import ERROR_KEY, OVERFLOW_COLUMN, columns_of, rows_of


def m(**kw: object) -> FieldMapping:
    return FieldMapping(id_key="id", timestamp_key="timestamp", **kw)  # type: ignore[arg-type]


def batch_rows(mapping: FieldMapping, batch: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The rows of the batch path (:meth:`FieldMapping.apply_columns`), ``None`` if it declines."""
    columns = mapping.apply_columns(batch)
    return None if columns is None else rows_of(columns)


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
        fast = batch_rows(mapping, batch)
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
    rows = batch_rows(mapping, csv_like)
    assert rows is not None and rows == [mapping.apply(r) for r in csv_like]
    assert list(rows[0]) == ["message", "n", "id", "timestamp"]
    for bad in ({"id": ""}, {"timestamp": "not a time"}, {"msg": {"a": 1}}, {ERROR_KEY: "x"}):
        assert batch_rows(mapping, [*csv_like, {**csv_like[0], **bad}]) is None
    assert batch_rows(m(casts={"n": "int"}), csv_like) is None
    int_ids = [{**r, "id": i} for i, r in enumerate(csv_like)]
    assert batch_rows(mapping, int_ids) == [mapping.apply(r) for r in int_ids]
    assert batch_rows(mapping, [*csv_like, {"id": "r9"}]) is None  # another shape


def test_batch_path_flattens_objects_of_one_shape() -> None:
    """Elasticsearch documents: objects flattened, arrays as JSON text, a time at a path."""
    mapping = FieldMapping(id_key="_id", timestamp_key="event.created", rename={"user_id": "uid"})
    docs = [
        {"_id": f"d{i}", "event": {"created": "2024-01-01T00:00:00Z"}, "user": {"id": i},
         "tags": ["a", "✓"]}
        for i in range(3)
    ]  # fmt: skip
    rows = batch_rows(mapping, docs)
    assert rows is not None
    assert [list(r.items()) for r in rows] == [list(mapping.apply(d).items()) for d in docs]
    assert rows[0]["tags"] == '["a", "✓"]' and rows[2]["uid"] == 2
    other = {**docs[0], "user": {"id": 1, "name": "x"}}  # an object of another shape
    assert batch_rows(mapping, [*docs, other]) is None


def test_batch_path_reads_a_dotted_time_field_as_apply_does() -> None:
    """A dotted time field is a key first, a path into objects when that key is empty."""
    mapping = FieldMapping(id_key="id", timestamp_key="x.y", flatten=False)
    batch = [
        {"id": "a", "x.y": None, "x": {"y": "2024-01-01T00:00:00Z"}},
        {"id": "b", "x.y": "2024-02-01T00:00:00Z", "x": {"y": "2024-01-01T00:00:00Z"}},
    ]
    rows = batch_rows(mapping, batch)
    assert rows is None or rows == [mapping.apply(r) for r in batch]
    mapping = FieldMapping(id_key="id", timestamp_key="x.y")
    nested = [{"id": "c", "x": {"y": "2024-03-01T00:00:00Z"}}]
    assert batch_rows(mapping, nested) == [mapping.apply(nested[0])]
    for frame in (nested, [{"id": "d", "x": "not an object"}], [{"id": "e", "z": 1}]):
        columns = mapping.apply_columns(columns_of(frame) or {})
        assert columns is not None
        assert rows_of(columns) == [mapping.apply(r) for r in frame]
        assert rows_of(columns) == batch_rows(mapping, frame)


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


# -- settings, casts and names the common cases above do not reach -------------------------


def test_more_bad_mapping_configs_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"keep_whole: 'a\.\.b' is not a dotted field path"):
        m(keep_whole=("a..b",))
    with pytest.raises(ConfigError, match="id and time fields would share column 'id'"):
        m(timestamp_column="id")
    with pytest.raises(ConfigError, match=r"analyzer='json\.decoder' is not callable"):
        load_analyzer("json.decoder")
    assert load_analyzer("json:dumps") is json.dumps


def test_named_columns_name_their_setting_and_the_message_lists_the_data() -> None:
    named = m(select=("a", "id"), casts={"a": "int", "b": "int"}, rename={"x": "c"})
    assert named.named_columns() == {"a": "select", "b": "casts['b']", "c": "rename['x']"}
    seen = [f"col{i}" for i in range(23)]
    message = FieldMapping.unknown_columns_message({"c": "rename['x']"}, seen)
    assert message.startswith("rename['x']: column 'c' not in the data (columns: col0, col1,")
    assert "col19 (and 3 more)); fix the name" in message
    assert "col20" not in message


def test_casts_to_datetime_and_json_store_text() -> None:
    mapping = m(casts={"at": "datetime", "doc": "json", "n": "int", "ok": "bool"})
    row = mapping.apply(
        {"id": "1", "at": "2024-01-01T02:00:00+02:00", "doc": '{"k": [1]}', "n": 2.0, "ok": "Y"}
    )
    assert row["at"] == "2024-01-01T00:00:00.000000+00:00"
    assert row["doc"] == '{"k": [1]}'
    assert row["n"] == 2 and row["ok"] is True


@pytest.mark.parametrize(
    ("value", "cast", "expected"),
    [(True, "int", 1), (3.0, "int", 3), (" 12 ", "int", 12), (False, "bool", False),
     ("off", "bool", False), ("", "bool", False), (1, "bool", True), ([1], "string", "[1]")],
)  # fmt: skip
def test_cast_values(value: Any, cast: str, expected: Any) -> None:
    assert cast_value(value, cast) == expected


@pytest.mark.parametrize(
    ("value", "cast", "reason"),
    [(2.5, "int", "2.5 is not a whole number"), ("maybe", "bool", "'maybe' is not a boolean"),
     (1, "decimal", "unknown cast 'decimal'")],
)  # fmt: skip
def test_cast_values_refused_with_their_reason(value: Any, cast: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        cast_value(value, cast)
    if cast != "decimal":
        with pytest.raises(RecordRejected, match=f"cast of 'v' to {cast} failed: {reason}"):
            m(casts={"v": cast}).apply({"id": "1", "v": value})


def test_a_float_id_is_rejected() -> None:
    with pytest.raises(RecordRejected, match=r"id field 'id' is a float: 1\.5"):
        m().apply({"id": 1.5})


def test_fields_renamed_alike_keep_both_values() -> None:
    mapping = m(rename={"a": "x", "b": "x"})
    row = mapping.apply({"id": "1", "a": 1, "b": 2})
    assert row["x"] == 1
    assert sorted(v for k, v in row.items() if k.startswith("x_")) == [2]
    assert mapping.apply_columns({"id": ["1"], "a": [1], "b": [2]}) is None  # record path


def test_the_cache_of_record_shapes_stays_bounded() -> None:
    mapping = m()
    for i in range(1030):
        assert mapping.apply({"id": "1", f"f{i}": i}) == {"id": "1", "timestamp": None, f"f{i}": i}
    assert len(mapping._plans) < 1024


def test_nested_names_that_meet_are_told_apart() -> None:
    mapping = m(id_column="user_id")
    row = mapping.apply({"id": "1", "a_b": 1, "a": {"b": 2}, "user": {"id": 3}})
    assert row["user_id"] == "1"
    assert row["a_b"] == 1
    rest = {k: v for k, v in row.items() if k not in ("user_id", "a_b", "timestamp")}
    assert sorted(rest.values()) == [2, 3]
    assert all(k.startswith(("a_b_", "user_id_")) for k in rest)


def test_objects_kept_whole_go_to_the_overflow_column() -> None:
    mapping = m(keep_whole=("labels", "k8s.labels"))
    raw = {"id": "1", "labels": {"a": 1}, "k8s": {"labels": {"b": 2}, "ns": "x"}}
    row = mapping.apply(raw)
    assert row == {
        "id": "1",
        "timestamp": None,
        "k8s_ns": "x",
        OVERFLOW_COLUMN: {"labels": {"a": 1}, "k8s_labels": {"b": 2}},
    }
    assert mapping.apply_columns(columns_of([raw]) or {}) is None  # the record path builds it


def test_batch_path_declines_inner_objects_of_different_shapes() -> None:
    batch = [{"id": "1", "a": {"x": {"p": 1}}}, {"id": "2", "a": {"x": {"q": 1}}}]
    assert batch_rows(m(), batch) is None
    assert m().apply_columns({"id": ["1", "2"], "a": [b["a"] for b in batch]}) is None
    assert [m().apply(r) for r in batch] == [
        {"id": "1", "timestamp": None, "a_x_p": 1},
        {"id": "2", "timestamp": None, "a_x_q": 1},
    ]


def test_json_text_without_the_c_encoder_is_json_dumps(monkeypatch: pytest.MonkeyPatch) -> None:
    value = {"a": [1, 2.5, None, "é"]}
    real = json.encoder.c_make_encoder
    monkeypatch.setattr(json.encoder, "c_make_encoder", None)
    assert _JsonText()(value) == json.dumps(value, ensure_ascii=False)

    def other_signature(*args: Any) -> Any:
        raise TypeError("takes 3 arguments")

    monkeypatch.setattr(json.encoder, "c_make_encoder", other_signature)
    text = _JsonText()
    assert text._c is None and text._markers == {}
    made: list[Any] = []

    def wrong_first(*args: Any) -> Any:  # _JsonText's encoder writes other text than json's
        made.append(args)
        return (lambda v, i: ["wrong"]) if len(made) == 1 else real(*args)

    monkeypatch.setattr(json.encoder, "c_make_encoder", wrong_first)
    unlike = _JsonText()  # so it is not used
    assert unlike._c is None
    monkeypatch.undo()
    assert text(value) == unlike(value) == json.dumps(value, ensure_ascii=False)


def test_batch_path_answers_or_declines_as_the_record_path_would() -> None:
    assert m().apply_columns({"x": [1]}) is None  # no id: the record path rejects it
    picked = m(select=("a",)).apply_columns({"id": ["1"], "a": [1], "b": [2]})
    assert picked == {"a": [1], "id": ["1"], "timestamp": [None]}
    assert m().apply_columns({"id": ["1", "2"], "a": [{"x": 1}, 5]}) is None
    assert m(flatten=False).apply_columns({"id": ["1", "2"], "a": [{"x": 1}, 5]}) is None
    untimed = FieldMapping(id_key="id", timestamp_key=None)
    assert untimed.apply_columns({"id": ["1"], "b": [2]}) == {"b": [2], "id": ["1"]}
    deep = untimed.apply_columns({"id": ["1"], "a": [{"x": {"p": 1}, "y": 2}]})
    assert deep == {"a_x_p": [1], "a_y": [2], "id": ["1"]}
    assert m().apply_columns({"id": ["1", "2"], "o": [{"a": {"x": 1}}, {"a": 5}]}) is None
    lists = m().apply_columns({"id": ["1", "2"], "o": [{"a": [1]}, {"a": [2, 3]}]})
    assert lists == {"o_a": ["[1]", "[2, 3]"], "id": ["1", "2"], "timestamp": [None, None]}


def test_a_field_named_like_the_id_column_is_kept_apart() -> None:
    mapping = FieldMapping(id_key="id", timestamp_key=None, id_column="a")
    row = mapping.apply({"id": "1", "a": 5})
    assert row["a"] == "1"
    assert [v for k, v in row.items() if k.startswith("a_")] == [5]
    assert mapping.apply({"id": "2", "o": {"p": 1}}) == {"a": "2", "o_p": 1}
