from __future__ import annotations

import sys
from datetime import datetime, timezone
from typing import Any

import hypothesis
import pytest
from hypothesis import strategies as st

from es_mysql_pipeline.records import (
    TimeWindow,
    column_values,
    detect_timestamp_field,
    iso_utc,
    mask_secrets,
    parse_timestamp,
    rebatch,
    timestamp_setting,
    unplaced_reason,
    utc_text,
    utc_texts,
)

UTC = timezone.utc


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-01-02T03:04:05Z", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2024-01-02T03:04:05.123456+02:00", datetime(2024, 1, 2, 1, 4, 5, 123456, tzinfo=UTC)),
        ("2024-01-02 03:04:05", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2024-01-02", datetime(2024, 1, 2, tzinfo=UTC)),
        (1704164645, datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("1704164645000", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("1960-05-01T00:00:00Z", datetime(1960, 5, 1, tzinfo=UTC)),
        ("2150-05-01T00:00:00", datetime(2150, 5, 1, tzinfo=UTC)),
    ],
)
def test_parse_timestamp(value: object, expected: datetime) -> None:
    assert parse_timestamp(value) == expected


@pytest.mark.parametrize("value", [None, "", "yesterday", True, "2024-13-01", {"a": 1}])
def test_parse_timestamp_rejects(value: object) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(value)


def test_window_is_half_open() -> None:
    w = TimeWindow.from_dates("2024-01-01", "2024-01-02")
    assert datetime(2024, 1, 1, tzinfo=UTC) in w
    assert datetime(2024, 1, 1, 23, 59, 59, 999999, tzinfo=UTC) in w
    assert datetime(2024, 1, 2, tzinfo=UTC) not in w
    with pytest.raises(ValueError):
        TimeWindow.from_dates("2024-01-02", "2024-01-02")


def test_rebatch_keeps_order_and_passes_full_lists_through() -> None:
    pages = [[{"i": i} for i in range(a, b)] for a, b in ((0, 3), (3, 3), (3, 5), (5, 11))]
    out = list(rebatch(pages, 3))
    assert [r["i"] for b in out for r in b] == list(range(11))
    assert [len(b) for b in out] == [3, 3, 3, 2]
    assert out[0] is pages[0]  # a full page is not copied
    assert list(rebatch([], 3)) == []


def test_mask_secrets() -> None:
    assert mask_secrets("url user:s3cret@host", ["s3cret"]) == "url user:***@host"
    # short or unset secrets are left alone: masking "a" would blank every "a"
    secrets = {"password": "s3cret", "user": "a", "key": None}
    assert mask_secrets("a:s3cret@h", secrets.values()) == "a:***@h"


def test_a_window_needs_aware_bounds_and_is_labelled_by_them() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        TimeWindow(datetime(2024, 1, 1), datetime(2024, 1, 2, tzinfo=UTC))
    w = TimeWindow.from_dates("2024-01-01", "2024-01-02")
    assert w.label() == "2024-01-01T00:00:00+00:00..2024-01-02T00:00:00+00:00"


def test_the_time_field_is_detected_or_set() -> None:
    assert detect_timestamp_field(["id", "Created_At", "msg"]) == "Created_At"
    assert detect_timestamp_field(["date", "@timestamp"]) == "@timestamp"
    assert detect_timestamp_field(["id", "msg"]) is None
    assert timestamp_setting(None) == (True, None)
    assert timestamp_setting("  ") == (True, None)
    assert timestamp_setting(" None ") == (False, None)
    assert timestamp_setting("event.created") == (False, "event.created")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("9999-12-31T23:59:59-05:00", "timestamp out of range in UTC: '9999-12-31T23:59:59-05:00'"),
        (1e20, "epoch value out of range: 1e+17"),
        ([1], "not a timestamp: list"),
    ],
)
def test_timestamps_out_of_range_are_bad_values(value: object, reason: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_timestamp(value)
    assert str(info.value) == reason


def test_a_datetime_is_taken_as_it_is_in_utc() -> None:
    naive = datetime(2024, 1, 2, 3, 4, 5)
    assert parse_timestamp(naive) == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert utc_text("2024-01-02T03:04:05.000000+00:00") == "2024-01-02T03:04:05.000000+00:00"
    assert utc_text("2024-01-02T03Z") == "2024-01-02T03:00:00.000000+00:00"  # hours only


def test_column_values_of_records_and_columns() -> None:
    assert column_values([{"a": 1}, {"b": 2}], "a") == [1, None]
    assert column_values({"a": [1, 2]}, "a") == [1, 2]
    assert column_values({"b": [1, 2]}, "a") == [None, None]


def test_why_a_record_belongs_to_no_partition() -> None:
    key = "event.created"
    assert unplaced_reason({"event": {"created": "2024-01-01"}}, key) is None
    assert unplaced_reason({"event": {"created": ""}}, key) == (
        "no time in field 'event.created': the record belongs to no partition"
    )
    assert unplaced_reason({"event": "x"}, key) == (
        "no time in field 'event.created': the record belongs to no partition"
    )
    assert unplaced_reason({"ts": "soon"}, "ts") == (
        "time field 'ts': not an ISO 8601 timestamp: 'soon': the record belongs to no partition"
    )


@hypothesis.given(
    st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.timezones()
    ),
    st.sampled_from(["iso", "Z", "z", "space", "seconds", "secondsZ", "millisZ", "naive"]),
)
def test_utc_text_is_iso_utc_of_the_parsed_value(dt: datetime, form: str) -> None:
    """The sliced fast path and the general path agree for every shape and offset."""
    text = dt.isoformat(timespec="microseconds")
    if form in ("Z", "z"):
        text = dt.replace(tzinfo=None).isoformat(timespec="microseconds") + form
    elif form == "space":
        text = text.replace("T", " ")
    elif form == "seconds":
        text = dt.isoformat(timespec="seconds")
    elif form in ("secondsZ", "millisZ"):
        spec = "seconds" if form == "secondsZ" else "milliseconds"
        text = dt.replace(tzinfo=None).isoformat(timespec=spec) + "Z"
    elif form == "naive":
        text = dt.replace(tzinfo=None).isoformat(timespec="seconds")
    try:
        expected = iso_utc(parse_timestamp(text))
    except ValueError:
        with pytest.raises(ValueError):
            utc_text(text)
        return
    assert utc_text(text) == expected


_TIME_FORMS = ["micros", "microsZ", "millisZ", "secondsZ", "naive", "z", "space", "offset"]


def _time_text(dt: datetime, form: str) -> str:
    naive = dt.replace(tzinfo=None)
    return {
        "micros": dt.astimezone(timezone.utc).isoformat(timespec="microseconds"),
        "microsZ": naive.isoformat(timespec="microseconds") + "Z",
        "millisZ": naive.isoformat(timespec="milliseconds") + "Z",
        "secondsZ": naive.isoformat(timespec="seconds") + "Z",
        "naive": naive.isoformat(timespec="seconds"),
        "z": naive.isoformat(timespec="microseconds") + "z",
        "space": naive.isoformat(sep=" ", timespec="microseconds") + "Z",
        "offset": dt.isoformat(timespec="microseconds"),
    }[form]


@hypothesis.settings(max_examples=500)
@hypothesis.given(
    st.lists(
        st.tuples(
            st.datetimes(
                min_value=datetime(1, 1, 2),
                max_value=datetime(9999, 12, 30),
                timezones=st.timezones(),
            ),
            st.sampled_from(_TIME_FORMS),
        ),
        min_size=1,
        max_size=8,
    ),
    st.sampled_from([*_TIME_FORMS, "each its own"]),
    st.sampled_from(
        [
            None,
            "",
            "2024-02-30T00:00:00Z",
            "2024-01-01T24:00:00.000000Z",
            "2024-01-01T00:00:00.00000xZ",
            "2024-01-01T00:00:00.000000+01:00",
            17,
        ]
    ),
    st.booleans(),
)
def test_a_column_of_times_is_sliced_as_each_value_is(
    times: list[tuple[datetime, str]], column_form: str, odd: Any, with_odd: bool
) -> None:
    """Every column the fast path takes gives what :func:`utc_text` gives value by value;
    a column with a value that does not parse (or is no text) is left to the caller."""
    values: list[Any] = [
        _time_text(dt, form if column_form == "each its own" else column_form) for dt, form in times
    ]
    if with_odd:
        values.insert(len(values) // 2, odd)
    got = utc_texts(values)
    try:
        want = [utc_text(v) for v in values]
    except ValueError:
        assert got is None
        return
    assert got is None or got == want


@pytest.mark.parametrize("form", ["micros", "microsZ", "millisZ", "secondsZ", "naive"])
def test_the_sliced_shapes_take_the_fast_path(form: str) -> None:
    if form != "micros" and sys.version_info < (3, 11):
        pytest.skip("datetime.fromisoformat reads a trailing Z from Python 3.11")
    column = [_time_text(datetime(2024, 1, d, 5, 6, 7, 8000 * d), form) for d in (1, 2, 3)]
    assert utc_texts(column) == [utc_text(v) for v in column]
    assert utc_texts([*column[:2], column[2].replace("T", " ")]) is None  # shapes differ
