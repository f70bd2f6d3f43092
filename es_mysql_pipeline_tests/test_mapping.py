from __future__ import annotations

import pytest

from es_mysql_pipeline.errors import ConfigError
from es_mysql_pipeline.mapping import FieldMapping, RecordRejected, cast_value, load_analyzer
from es_mysql_pipeline.records import ERROR_KEY


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
    assert row == {"id": "1", "timestamp": "2024-01-01T00:00:00.000000+00:00", "event_kind": "x"}


def test_a_detected_time_field_becomes_the_timestamp_column() -> None:
    mapping = FieldMapping(id_key="id", timestamp_key="ts")
    row = mapping.apply({"id": "1", "ts": "2024-01-01T00:00:00Z", "level": "info"})
    assert row == {"id": "1", "timestamp": "2024-01-01T00:00:00.000000+00:00", "level": "info"}


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
