from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import hypothesis
import hypothesis.strategies as st
import pytest

from es_mysql_pipeline.errors import ConfigError, SourceError
from es_mysql_pipeline.readers.file_reading import SpanReader
from es_mysql_pipeline.records import ERROR_KEY, TimeWindow
from es_mysql_pipeline.resources.sources import FileSource


def read_all(src: FileSource, window: TimeWindow | None = None) -> list[dict[str, object]]:
    return [r for b in src.read_batches(window, 2) for r in b]


def test_values_arrive_byte_exact(tmp_path: Path) -> None:
    p = tmp_path / "in.csv"
    p.write_bytes(
        "id,timestamp,text\n"
        '1,2024-01-01T00:00:00Z,"  spaced, with comma  "\n'
        "2,2024-01-01T00:00:01Z,NULL\n"
        '3,2024-01-01T00:00:02Z,"line1\r\nline2 ""quoted"""\n'
        "4,2024-01-01T00:00:03Z,Zürich ✓ 数据\n".encode()
    )
    rows = read_all(FileSource(path=str(p)))
    assert [r["text"] for r in rows] == [
        "  spaced, with comma  ",
        "NULL",
        'line1\r\nline2 "quoted"',
        "Zürich ✓ 数据",
    ]


def test_bom_and_at_timestamp(tmp_path: Path) -> None:
    p = tmp_path / "bom.csv"
    p.write_bytes(b"\xef\xbb\xbfid,@timestamp\r\n1,2024-01-01\r\n")
    src = FileSource(path=str(p))
    assert src.timestamp_key() == "@timestamp"
    assert read_all(src) == [{"id": "1", "@timestamp": "2024-01-01"}]


def test_wrong_field_count_and_duplicate_header_are_marked(tmp_path: Path) -> None:
    p = tmp_path / "bad.csv"
    p.write_text("id,timestamp,a\n1,2024-01-01,x\n2,2024-01-01\n3,2024-01-01,x,extra\n")
    rows = read_all(FileSource(path=str(p)))
    assert ERROR_KEY not in rows[0]
    assert "expected 3 fields, found 2" in rows[1][ERROR_KEY]  # type: ignore[operator]
    assert "found 4" in rows[2][ERROR_KEY]  # type: ignore[operator]
    p.write_text("id,timestamp,a,a\n1,2024-01-01,x,y\n")
    (row,) = read_all(FileSource(path=str(p)))
    assert "duplicate column names" in row[ERROR_KEY]  # type: ignore[operator]


def test_jsonl_input_and_window(tmp_path: Path) -> None:
    p = tmp_path / "in.jsonl"
    docs = [
        {"id": "a", "timestamp": "2024-01-01T23:59:59Z", "n": {"x": 1}},
        {"id": "b", "timestamp": "2024-01-02T00:00:00Z"},
        {"id": "c", "timestamp": "garbage"},
    ]
    p.write_text("\n".join(json.dumps(d) for d in docs) + "\n{broken\n")
    src = FileSource(path=str(p))
    assert read_all(src, TimeWindow.from_dates("2024-01-01", "2024-01-02")) == [docs[0]]
    everything = read_all(src)
    assert everything[:3] == docs
    assert "invalid JSON" in everything[3][ERROR_KEY]  # type: ignore[operator]


def test_header_only_and_empty_files(tmp_path: Path) -> None:
    (tmp_path / "h.csv").write_text("id,timestamp\n")
    (tmp_path / "e.csv").write_text("")
    assert read_all(FileSource(path=str(tmp_path / "h.csv"))) == []
    assert read_all(FileSource(path=str(tmp_path / "e.csv"))) == []


def test_bad_config_and_bad_bytes(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        FileSource(path=str(tmp_path / "missing.csv")).check()
    p = tmp_path / "latin.csv"
    p.write_bytes(b"id,timestamp,t\n1,2024-01-01,caf\xe9\n")
    (bad,) = read_all(FileSource(path=str(p)))  # only that record fails, not the run
    assert "not valid utf-8" in bad[ERROR_KEY]  # type: ignore[operator]
    assert read_all(FileSource(path=str(p), encoding="latin-1"))[0]["t"] == "café"


def test_streams_without_reading_the_whole_file(tmp_path: Path) -> None:
    p = tmp_path / "big.csv"
    with p.open("w") as fh:
        fh.write("id,timestamp,payload\n")
        for i in range(200_000):
            fh.write(f"{i},2024-01-01T00:00:00Z,{'x' * 100}\n")
    tracemalloc.start()
    batches = FileSource(path=str(p)).read_batches(None, 1000)
    total = 0
    for batch in batches:
        total += len(batch)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert total == 200_000
    assert peak < 5_000_000, f"peak {peak} bytes: the file (~24 MB) was held in memory"


def test_undecodable_bytes_in_a_multiline_field_fail_only_that_record(tmp_path: Path) -> None:
    p = tmp_path / "multi.csv"
    p.write_bytes(b'id,timestamp,t\n1,2024-01-01,"ok\nstill ok"\n2,2024-01-01,"a\nb\xff"\n3,x,y\n')
    rows = read_all(FileSource(path=str(p)))
    assert rows[0] == {"id": "1", "timestamp": "2024-01-01", "t": "ok\nstill ok"}
    assert "line 5: bytes that are not valid" in rows[1][ERROR_KEY]  # type: ignore[operator]
    assert rows[1]["__raw__"] == ["2", "2024-01-01", "a\nb\\xff"]
    assert rows[2] == {"id": "3", "timestamp": "x", "t": "y"}


@pytest.mark.parametrize(
    "line",
    [
        '{"id": "a", "n": -9223372036854775809}',
        '{"id": "a", "n": 123456789012345678901234567890}',
        '{"id": "a", "n": {"deep": [18446744073709551616, 1.5]}}',
        '{"id": "a", "n": NaN, "m": Infinity}',
        '{"id": "a", "n": 1e400, "s": "\\ud800"}',
        '{"id": "a", "id": "b", "f": 0.1, "z": -0.0, "big": 9223372036854775807}',
    ],
)
def test_jsonl_values_are_what_json_reads(tmp_path: Path, line: str) -> None:
    """orjson reads most lines, but every record equals json's own reading: a long int
    stays an exact int, NaN and lone surrogates are accepted as json accepts them."""
    p = tmp_path / "n.jsonl"
    p.write_text(line + "\n", encoding="utf-8")
    (rec,) = read_all(FileSource(path=str(p)))
    expected = json.loads(line)
    assert repr(rec) == repr(expected)
    assert [type(v) for v in rec.values()] == [type(v) for v in expected.values()]


_JSON_VALUES = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=3),
    st.none(),
    st.booleans(),
    st.lists(st.integers(-(2**65), 2**65), max_size=2),
)
_AWKWARD_LINES = [
    *("", "  ", "[1", "2]", '{"a": 1', '"b": 2}', '{"x": [{"y": 1}', '{"z": 2}]}'),
    *('{"c": 1}, {"d": 2}', "1", "[]", "NaN", '{"s": "\\ud800"}', "\x1c", "\udcff"),
]
_JSONL_LINES = st.one_of(
    st.dictionaries(st.text(max_size=3), _JSON_VALUES, max_size=3).map(
        lambda d: json.dumps(d, ensure_ascii=False)
    ),
    # Blank lines, fragments, several values, values that are not objects, NaN, a lone
    # surrogate, undecodable bytes: each sends its batch line by line, for the reasons.
    st.sampled_from(_AWKWARD_LINES),
)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(st.lists(_JSONL_LINES, max_size=12), st.integers(1, 5))
def test_jsonl_batches_read_what_line_by_line_reads(
    tmp_path_factory: pytest.TempPathFactory, lines: list[str], size: int
) -> None:
    """A batch of lines is parsed in one go only where that gives exactly the records,
    reasons and line numbers of reading each line on its own."""
    p = tmp_path_factory.mktemp("j") / "in.jsonl"
    p.write_bytes(("\n".join(lines) + "\n").encode("utf-8", "surrogateescape"))
    reader = SpanReader(FileSource(path=str(p)).text_file(), size)
    with reader.file.open() as fh:
        one_by_one = list(reader._jsonl_records(list(fh), 1))
    got = [r for batch in reader for r in batch]
    assert repr(got) == repr(one_by_one)
    assert [list(map(type, r.values())) for r in got] == [
        list(map(type, r.values())) for r in one_by_one
    ]


def test_more_bad_settings_are_one_line_each(tmp_path: Path) -> None:
    p = tmp_path / "in.csv"
    p.write_text("id,timestamp\n1,2024-01-01\n")
    with pytest.raises(ConfigError, match=r"delimiter=';;' must be exactly one character"):
        FileSource(path=str(p), delimiter=";;").check()
    with pytest.raises(ConfigError, match=r"encoding='klingon' is not a known text encoding"):
        read_all(FileSource(path=str(p), encoding="klingon"))
    window = TimeWindow.from_dates("2024-01-01", "2024-01-02")
    with pytest.raises(ConfigError, match=r"in\.csv: no time field .* 2024-01-01T00:00:00"):
        read_all(FileSource(path=str(p), timestamp_column="none"), window)


def test_an_explicit_format_wins_over_the_file_name(tmp_path: Path) -> None:
    p = tmp_path / "export.txt"
    p.write_text('{"id": "1", "ts": "2024-01-01T00:00:00Z", "n": [1, 2]}\n')
    source = FileSource(path=str(p), format="jsonl")
    assert source.describe()["format"] == "jsonl"
    assert read_all(source) == [{"id": "1", "ts": "2024-01-01T00:00:00Z", "n": [1, 2]}]
    assert FileSource(path=str(p)).describe()["format"] == "csv"


def test_bytes_the_codec_cannot_escape_fail_the_read_naming_the_encoding(tmp_path: Path) -> None:
    p = tmp_path / "utf16.csv"
    p.write_bytes("id,timestamp\n1,2024-01-01\n".encode("utf-16") + b"A")  # a byte too many
    with pytest.raises(SourceError) as info:
        read_all(FileSource(path=str(p), encoding="utf-16"))
    assert str(info.value) == (
        f"{p}: bytes at offset 0 are not valid utf-16; set encoding to the file's real encoding"
    )
    # JSON Lines: finding the field names meets the bytes first; the read names them too
    j = tmp_path / "utf16.jsonl"
    j.write_bytes('{"id": "1", "ts": "2024-01-01"}\n'.encode("utf-16") + b"A")
    with pytest.raises(SourceError, match=r"utf16\.jsonl: bytes at offset 0 are not valid"):
        read_all(FileSource(path=str(j), encoding="utf-16"))
