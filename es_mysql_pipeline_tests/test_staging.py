"""Stage files: frames round-trip every value, re-batch, split by offsets and join."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import hypothesis
import hypothesis.strategies as st
import pytest

from es_mysql_pipeline.staging import StagedFileWriter, StagedRecords, StagingError
from es_mysql_pipeline.value_types import as_json_values, merge_types, value_type


@pytest.fixture(autouse=True)
def _scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ES_MYSQL_PIPELINE_SCRATCH", str(tmp_path))


RECORDS = [
    {"id": "1", "text": "NULL", "n": 2**70, "f": 1.5, "b": True, "none": None},
    {"id": "2", "text": 'ünïcode ✓ "quoted, comma"\nnewline', "nested": {"a": [1, {"b": 2}]}},
    {"id": "3", "text": "", "f": float("inf")},
]


def test_values_round_trip_exactly() -> None:
    with StagedFileWriter("id", "ts") as w:
        w.write(RECORDS)
        stage = w.finish()
    assert [r for b in stage.batches(10) for r in b] == RECORDS


def test_frames_keep_every_type_and_key_order() -> None:
    """JSON-shaped batches are marshalled; one holding another type is pickled, and every
    value comes back with its exact type (``True`` is not ``1``, ``1.0`` is not ``1``)."""
    from datetime import datetime, timezone
    from decimal import Decimal

    odd = [{"id": "4", "when": datetime(2024, 1, 1, tzinfo=timezone.utc), "d": Decimal("1.10")}]
    ordered = [{"z": 1, "a": True, "m": 1.0, "id": "5"}]
    with StagedFileWriter("id", "ts") as w:
        for batch in (RECORDS, odd, ordered):
            w.write(list(batch))
        stage = w.finish()
    codecs = []
    with open(stage.path, "rb") as fh:
        while header := fh.read(9):
            codecs.append(header[8])
            fh.seek(int.from_bytes(header[:8], "little"), 1)
    assert codecs == [1, 2, 1]  # marshal, pickle, marshal
    raw = list(stage.raw_frames())
    assert isinstance(raw[0], list)  # records of several shapes stay records
    assert raw[1] == {"id": ("4",), "when": (odd[0]["when"],), "d": (Decimal("1.10"),)}
    assert raw[2] == {"z": (1,), "a": (True,), "m": (1.0,), "id": ("5",)}
    back = list(stage.frames())
    assert back == [RECORDS, odd, ordered]
    assert [list(r) for r in back[2]] == [["z", "a", "m", "id"]]

    def types(batches: list[list[dict[str, object]]]) -> list[object]:
        return [[{k: type(v) for k, v in r.items()} for r in b] for b in batches]

    assert types(back) == types([RECORDS, odd, ordered])


def test_batches_rechunk_and_frames_split_at_offsets() -> None:
    rows = [{"id": str(i)} for i in range(103)]
    with StagedFileWriter("id", "ts") as w:
        for i in range(0, 103, 10):
            w.write(rows[i : i + 10])
        stage = w.finish()
    assert stage.rows == 103
    assert [len(b) for b in stage.batches(25)] == [25, 25, 25, 25, 3]
    offsets = stage.frame_offsets()
    assert len(offsets) == 11 and offsets[0] == 0
    middle = [r for f in stage.frames(offsets[3], offsets[5]) for r in f]
    assert middle == rows[30:50]
    tail = [r for f in stage.frames(offsets[9]) for r in f]
    assert tail == rows[90:]


def test_append_joins_parts_in_order_and_merges_schema() -> None:
    with StagedFileWriter("id", "ts", track_schema=True) as a:
        a.write([{"id": "1", "v": 1}, {"id": "2", "v": "x"}])
        part_a = a.finish()
    with StagedFileWriter("id", "ts", track_schema=True) as b:
        b.write([{"id": "3", "v": 2.5, "w": "wide ✓"}])
        part_b = b.finish()
    with StagedFileWriter("id", "ts", track_schema=True) as out:
        out.append(part_a)
        out.append(part_b)
        joined = out.finish()
    assert [r["id"] for b in joined.batches(10) for r in b] == ["1", "2", "3"]
    assert joined.rows == 3
    assert joined.columns["v"].type == "string"  # int + string + float → string
    assert joined.columns["w"].max_bytes == len("wide ✓".encode())
    assert not Path(part_a.path).exists() and not Path(part_b.path).exists()


def test_schema_tracks_types_and_utf8_widths() -> None:
    with StagedFileWriter("id", "ts", track_schema=True) as w:
        w.write([{"id": "a", "n": 1, "s": "é" * 10}, {"id": "b", "n": None, "s": None}])
        w.write([{"id": "c", "n": 2.0, "s": "x"}])
        stage = w.finish()
    assert stage.columns["n"].type == "float"
    assert stage.columns["s"].type == "string"
    assert stage.columns["s"].max_bytes == 20
    with StagedFileWriter("id", "ts", track_schema=True) as w:
        w.write([{"id": "a", "s": "abc"}])  # 3 bytes wide
        w.write({"id": ["b"], "s": ["✓✓"]})  # fewer chars, 6 bytes
        assert w.columns["s"].max_bytes == 6
        w.write([{"id": "c", "s": "ab"}, {"id": "d", "s": "é"}])  # narrower
        assert w.columns["s"].max_bytes == 6


_VALUES = st.one_of(
    st.none(),
    st.text(max_size=6),
    st.sampled_from(["é", "✓✓", "😀", "abcdefgh" * 3]),
    st.integers(-(2**65), 2**65),
    st.floats(allow_nan=False),
    st.booleans(),
)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(
    st.lists(st.lists(st.tuples(_VALUES, _VALUES, _VALUES), min_size=1, max_size=6), max_size=5)
)
def test_schema_from_columns_is_the_schema_from_rows(batches: list[list[Any]]) -> None:
    """The transform hands columns to write(); the schema and the records must be what the
    rows give, across batches (the widths only widen when the new text could be wider)."""
    keys = ("id", "a", "b")
    with (
        StagedFileWriter("id", None, track_schema=True, declared={"b": "json"}) as from_rows,
        StagedFileWriter("id", None, track_schema=True, declared={"b": "json"}) as from_columns,
    ):
        for batch in batches:
            rows = [dict(zip(keys, values, strict=True)) for values in batch]
            columns: dict[str, Any] = {k: [r[k] for r in rows] for k in keys}
            from_rows.write(rows)
            from_columns.write(columns)
        a, b = from_rows.finish(), from_columns.finish()
    assert a.columns == b.columns
    assert a.rows == b.rows == sum(map(len, batches))
    assert list(a.frames()) == list(b.frames())
    assert [list(map(list, map(dict.items, f))) for f in a.frames()] == [
        [list(zip(keys, values, strict=True)) for values in batch] for batch in batches
    ]
    texts = [v for batch in batches for values in batch for v in values[1:2] if v is not None]
    if texts and all(type(v) is str for v in texts):  # the width, from first principles
        assert a.columns["a"].max_bytes == max(len(v.encode()) for v in texts)


_ONE_KIND = st.one_of(
    st.lists(st.integers(-(2**65), 2**65) | st.none(), min_size=1, max_size=8),
    st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=8),
    st.lists(st.floats() | st.none(), min_size=1, max_size=8),
    st.lists(st.booleans(), min_size=1, max_size=8),
)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(st.lists(_ONE_KIND, min_size=1, max_size=4))
def test_numeric_columns_are_typed_as_each_value_is(columns: list[list[Any]]) -> None:
    """A column of numbers or booleans is typed without a step per value: the type and the
    width must be those :func:`value_type` gives value by value."""
    with StagedFileWriter("id", None, track_schema=True) as w:
        for values in columns:
            w.write({"id": [str(i) for i in range(len(values))], "n": values})
        tracked = w.finish().columns.get("n")
    want: str | None = None
    width = 0
    for value in (v for values in columns for v in values):
        want = merge_types(want, value_type(value))
        if value_type(value) == "string":
            width = max(width, len(str(value)))
    assert (tracked.type if tracked else None) == want
    assert (tracked.max_bytes if tracked else 0) == width


def test_analyzer_values_become_json_values() -> None:
    from decimal import Decimal

    assert as_json_values({"d": Decimal("1.5"), "s": {1, 2} and "x", "k": [1]}) == {
        "d": "1.5",
        "s": "x",
        "k": [1],
    }


def test_frames_of_one_shape_are_stored_as_columns_and_read_back_as_records() -> None:
    """What each reader sees: raw_frames() as stored, frames() and batches() as records,
    exactly as written (types, key order, record order, a record with no keys at all)."""
    one_shape = [{"id": str(i), "n": i, "f": None if i % 2 else 0.5} for i in range(7)]
    shapes = [{"id": "a"}, {"id": "b", "x": 1}]
    empty = [{}, {}]
    with StagedFileWriter("id", None, track_schema=True) as w:
        written = [list(b) for b in (one_shape, shapes, empty, [{"n": 1, "id": "c"}])]
        for batch in written:
            w.write(batch)
        stage = w.finish()
    # The lists turned into columns were emptied (their values live in the columns alone).
    assert [len(b) for b in written] == [0, 2, 2, 0]
    raw = list(stage.raw_frames())
    assert [type(f).__name__ for f in raw] == ["dict", "list", "list", "dict"]
    assert raw[0]["n"] == tuple(range(7))
    assert list(stage.frames()) == [one_shape, shapes, empty, [{"n": 1, "id": "c"}]]
    assert [list(r) for r in next(stage.frames(stage.frame_offsets()[3]))] == [["n", "id"]]
    assert stage.rows == 12
    assert [len(b) for b in stage.batches(5)] == [5, 5, 2]
    assert stage.columns["n"].type == "int" and stage.columns["f"].type == "float"
    assert stage.columns["x"].type == "int"


def test_values_are_typed_and_merged_as_json_where_objects_meet() -> None:
    assert value_type(datetime(2024, 1, 1, tzinfo=timezone.utc)) == "datetime"
    assert value_type({"a": 1}) == value_type([1]) == "json"
    assert merge_types("json", "int") == merge_types("string", "json") == "json"
    record = {"at": datetime(2024, 1, 2, 3, 4, tzinfo=timezone.utc), "raw": b"\xffok"}
    assert as_json_values(record) == {"at": "2024-01-02T03:04:00+00:00", "raw": "\ufffdok"}


def full_disk(buffered: bool) -> Any:
    return open("/dev/full", "wb", buffering=-1 if buffered else 0)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_is_one_clear_line_and_leaves_no_file() -> None:
    writer = StagedFileWriter("id", None)
    writer._fh.close()
    writer._fh = full_disk(buffered=False)
    with pytest.raises(StagingError) as info:
        writer.write([{"id": "1"}])
    assert str(info.value).startswith(f"staging: cannot write {writer.path}: No space left")
    assert "after 0 records; free space on that disk or point ES_MYSQL_PIPELINE_SCRATCH" in (
        str(info.value)
    )
    assert not os.path.exists(writer.path)

    writer = StagedFileWriter("id", None)
    writer._fh.close()
    writer._fh = full_disk(buffered=True)
    writer.write([{"id": "1"}, {"id": "2"}])  # still in the buffer
    with pytest.raises(StagingError, match="after 2 records"):
        writer.finish()
    assert not os.path.exists(writer.path)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_appending_a_part_to_a_full_disk_fails_the_same_way() -> None:
    with StagedFileWriter("id", None) as w:
        w.write([{"id": "1"}])
        part = w.finish()
    writer = StagedFileWriter("id", None)
    writer._fh.close()
    writer._fh = full_disk(buffered=False)
    with pytest.raises(StagingError, match="cannot write"):
        writer.append(part)
    assert not os.path.exists(writer.path)
    assert os.path.exists(part.path)  # the part is kept: nothing was appended


def test_a_part_that_vanished_is_the_os_error_itself() -> None:
    writer = StagedFileWriter("id", None)
    with pytest.raises(FileNotFoundError):
        writer.append(StagedRecords("/nonexistent/part.stage", 1, "id", None, {}))
    assert not os.path.exists(writer.path)


def test_a_handle_survives_json_and_a_failed_block_leaves_no_file() -> None:
    with StagedFileWriter("id", "ts", track_schema=True) as w:
        w.write([])  # nothing to stage
        w.write([{"id": "1", "ts": "2024-01-01", "n": 5}])
        staged = w.finish()
    again = StagedRecords.from_json(staged.to_json())
    assert again == staged
    assert [r for b in again.batches(10) for r in b] == [{"id": "1", "ts": "2024-01-01", "n": 5}]
    with pytest.raises(RuntimeError), StagedFileWriter("id", None) as w:
        w.write([{"id": "1"}])
        raise RuntimeError("the step failed")
    assert not os.path.exists(w.path)
    w.discard()  # twice is fine
