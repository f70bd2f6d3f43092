"""A file read in parts by worker processes gives exactly what one process reads."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from dataclasses import replace
from pathlib import Path
from typing import Any
from unittest import mock

import hypothesis
import hypothesis.strategies as st
import pytest

from es_mysql_pipeline.readers import engine
from es_mysql_pipeline.readers import file_reading as fp
from es_mysql_pipeline.readers.file_reading import SpanReader, TextFile
from es_mysql_pipeline.records import Batch, TimeWindow
from es_mysql_pipeline.resources.sources import FileSource
from es_mysql_pipeline.staging import StagedPart

Rows = list[dict[str, Any]]


def serial(src: FileSource, window: TimeWindow | None = None, size: int = 3) -> Rows:
    return [r for b in src.read_batches(window, size) for r in b]


def joined(parts: Iterator[StagedPart]) -> Rows:
    rows: Rows = []
    for part in parts:
        rows.extend(r for frame in part.staged.frames() for r in frame)
        os.unlink(part.staged.path)
    return rows


class RunNow(Executor):
    """Runs each job at once in this process (the join logic, without a pool)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_result(fn(*args, **kwargs))
        return future


@contextlib.contextmanager
def run_now(workers: int, unused: Any = ()) -> Iterator[Executor]:
    yield RunNow()


def read_units_now(
    units: Iterable[SpanReader], ts_key: str | None, ahead: int
) -> Iterator[StagedPart]:
    """The engine's join (in order, checked ends, fallback) with the jobs run in-process."""
    with mock.patch.object(engine, "spawn_pool", run_now):
        yield from engine.read_units(units, ts_key, 1, ahead)


def read_in_spans(file: TextFile, parts: int, size: int = 3, window: Any = None) -> Rows:
    """The parallel algorithm (cuts, spans, checked ends, in-order join, fallback) in-process."""
    header = file.header() if file.kind == "csv" else None
    spans = fp.plan_spans(file, os.path.getsize(file.path), parts, header)
    ts_key = "ts" if window else None
    units = (SpanReader(file, size, window, ts_key, span) for span in spans)
    return joined(read_units_now(units, ts_key, parts))


def text_lines(data: bytes, encoding: str = "utf-8") -> int:
    """Lines as Python's text files count them (what the readers' line numbers count)."""
    with open_text(data, encoding) as fh:
        return sum(1 for _ in fh)


def open_text(data: bytes, encoding: str) -> Any:
    import io

    return io.TextIOWrapper(
        io.BytesIO(data), encoding=encoding, errors="surrogateescape", newline=""
    )


# --- where the file is cut -------------------------------------------------------------


@pytest.mark.parametrize("block", [1, 2, 3, 7, 1 << 20])
def test_cuts_follow_line_breaks_outside_quotes_and_count_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int
) -> None:
    """Tiny scan blocks put \\r\\n pairs and quotes across block edges."""
    monkeypatch.setattr(fp, "_SCAN_BLOCK", block)
    data = b'id,ts\r\n1,"a\r\nb"\r\n2,x\r3,"q\n\n"\n4,y\r\n5,"""\n"""\n6,z\n'
    p = tmp_path / "in.csv"
    p.write_bytes(data)
    cuts = list(fp.find_cuts(TextFile(str(p), "csv"), len(data), len(data)))
    assert cuts, "a cut after every record boundary is possible here"
    for cut in cuts:
        before = data[: cut.offset]
        assert before.endswith(b"\n") and before.count(b'"') % 2 == 0
        assert cut.lines == text_lines(before)
    offsets = [c.offset for c in cuts]
    assert offsets == sorted(set(offsets))


def test_jsonl_cuts_ignore_quotes(tmp_path: Path) -> None:
    data = b'{"a": "\\""}\n{"b": 1}\n\n{"c": 2}\n'
    p = tmp_path / "in.jsonl"
    p.write_bytes(data)
    cuts = list(fp.find_cuts(TextFile(str(p), "jsonl"), len(data), len(data)))
    assert [c.offset for c in cuts] == [12, 21, 22]
    assert [c.lines for c in cuts] == [1, 2, 3]


# --- the parts, joined, are the serial read -----------------------------------------------

AWKWARD_CSV = (
    b"\xef\xbb\xbfid,ts,text\r\n"
    b'1,2024-01-01T00:00:00Z,"multi\nline, ""quoted"""\r\n'
    b"2,2024-01-01T01:00:00Z,bare\rcarriage\n"
    b"3,2024-01-02T00:00:00Z,caf\xe9 latin-1 byte in UTF-8\n"
    b"4,2024-01-02T00:00:00Z,too,many,fields\n"
    b'5,2024-01-02T00:00:00Z,stray " quote\n'
    b'6,2024-01-03T00:00:00Z,"after the stray"\n'
    b"\n"
    b"7,2024-01-03T00:00:00Z,short\n"
    b'8,2024-01-03T00:00:00Z,"ends in a quoted\r\n\r\nblank line"\n'
    b"9,2024-01-03T00:00:00Z,\xe2\x9c\x93 \xf0\x9f\x98\x80 \xe6\x95\xb0\n"
    b"10,not a time,last"
)


@pytest.mark.parametrize("parts", [2, 3, 5, 8, 40, 400])
def test_awkward_csv_in_any_number_of_parts(tmp_path: Path, parts: int) -> None:
    p = tmp_path / "in.csv"
    p.write_bytes(AWKWARD_CSV)
    src = FileSource(path=str(p))
    want = serial(src)
    # A bare \r ends a record too: "carriage" is a short row of its own.
    assert sum("__error__" in r for r in want) == 3 and len(want) == 11
    assert read_in_spans(src.text_file(), parts) == want


def test_well_formed_parts_are_used_as_read(tmp_path: Path) -> None:
    """No fallback where every cut is between records: each span is its own part."""
    p = tmp_path / "in.csv"
    p.write_bytes(
        b"id,ts,text\r\n" + b"".join(b'%d,t,"a\r\nb ""%d"""\r\n' % (i, i) for i in range(40))
    )
    file = TextFile(str(p), "csv")
    size = p.stat().st_size
    spans = list(fp.plan_spans(file, size, 10, file.header()))
    assert len(spans) == 10
    units = (SpanReader(file, 3, None, None, span) for span in spans)
    parts = list(read_units_now(units, None, 10))
    assert len(parts) == 10
    assert joined(iter(parts)) == serial(FileSource(path=str(p)))


def test_parts_keep_clean_csv_batches_as_columns(tmp_path: Path) -> None:
    """A batch of well-formed rows is staged as columns (never built as records); a batch
    holding a bad row as records, with the reason; the records read back are the same."""
    p = tmp_path / "in.csv"
    p.write_bytes(b"id,ts,text\n1,a,x\n2,b,y\n3,c\n4,d,z\n5,e,w\n6,f,v\n")
    file = TextFile(str(p), "csv")
    part = engine._read(None, str(tmp_path), SpanReader(file, 2)).part
    frames = list(part.staged.raw_frames())
    assert frames[0] == {"id": ("1", "2"), "ts": ("a", "b"), "text": ("x", "y")}
    assert isinstance(frames[1], list) and "line 4" in frames[1][0]["__error__"]
    assert frames[2] == {"id": ("5", "6"), "ts": ("e", "f"), "text": ("w", "v")}
    assert joined(iter([part])) == serial(FileSource(path=str(p)), size=2)


def test_window_is_applied_in_each_part(tmp_path: Path) -> None:
    p = tmp_path / "in.csv"
    p.write_bytes(AWKWARD_CSV)
    src = FileSource(path=str(p), timestamp_column="ts")
    window = TimeWindow.from_dates("2024-01-02", "2024-01-03")
    want = serial(src, window)
    assert [r["id"] for r in want] == ["4", "5"]  # 3's bad byte makes it a reason only
    assert read_in_spans(src.text_file(), 9, window=window) == want


def test_a_wrong_cut_falls_back_to_reading_on_in_process(tmp_path: Path) -> None:
    """An unquoted stray quote makes the quote count lie: the cut after it lands inside
    the next quoted value. The worker's end check catches it; nothing is lost or doubled."""
    lines = [b"id,ts,text\n"] + [b"%d,t,plain\n" % i for i in range(50)]
    lines[10] = b'9,t,in"side\n'  # a literal quote: parity is odd from here on
    lines[20] = b'19,t,"quoted\nover two lines"\n'
    data = b"".join(lines)
    p = tmp_path / "in.csv"
    p.write_bytes(data)
    file = TextFile(str(p), "csv")
    cuts = list(fp.find_cuts(file, len(data), len(data)))
    inside = data.index(b"quoted\n") + len(b"quoted\n")
    assert inside in [c.offset for c in cuts], "a cut inside the quoted value is the point"
    src = FileSource(path=str(p))
    assert read_in_spans(file, len(data)) == serial(src)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(
    rows=st.lists(
        st.lists(
            st.sampled_from(["a", "", '"', '""', "\n", "\r", "\r\n", ",", "é", "x y"]), max_size=5
        ),
        max_size=12,
    ),
    seps=st.lists(st.sampled_from(["\n", "\r\n", "\r"]), min_size=1),
    raw_quotes=st.booleans(),
    parts=st.integers(2, 30),
)
def test_any_csv_text_reads_the_same_in_parts(
    tmp_path_factory: pytest.TempPathFactory,
    rows: list[list[str]],
    seps: list[str],
    raw_quotes: bool,
    parts: int,
) -> None:
    """Quoted or raw fields holding quotes, delimiters and every kind of line break."""
    out = []
    for i, row in enumerate(rows):
        fields = [v if raw_quotes else '"' + v.replace('"', '""') + '"' for v in row]
        out.append(",".join(fields) + seps[i % len(seps)])
    p = tmp_path_factory.mktemp("h") / "in.csv"
    p.write_bytes(("id,ts,text" + seps[0] + "".join(out)).encode())
    src = FileSource(path=str(p))
    assert read_in_spans(src.text_file(), parts, size=2) == serial(src, size=2)


def test_jsonl_in_parts_keeps_line_numbers_and_reasons(tmp_path: Path) -> None:
    p = tmp_path / "in.jsonl"
    p.write_bytes(
        b'{"id": "1", "n": {"x": 1}}\n\n{"id": "2"}\r\nnot json\n[1, 2]\n'
        b'{"id": "3", "bad": "\xff"}\n{"id": "4", "big": 123456789012345678901234}\n'
    )
    src = FileSource(path=str(p))
    want = serial(src)
    reasons = [r.get("__error__", "") for r in want]
    assert any(s.startswith("line 4:") for s in reasons)
    assert any(s.startswith("line 6:") for s in reasons)
    for parts in (2, 4, 7, 100):
        assert read_in_spans(src.text_file(), parts) == want


# --- the real thing: worker processes, through the source ---------------------------------


def big_csv(path: Path, n: int) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write("id,ts,msg\n")
        for i in range(n):
            msg = f'"line {i}\nwith ""quotes"", commas"' if i % 7 == 0 else f"m{i}"
            fh.write(f"e{i},2024-01-0{1 + i % 3}T00:00:00Z,{msg}\n")
            if i % 5000 == 17:
                fh.write(f"bad{i},2024-01-01T00:00:00Z\n")  # a short row: a line number


@pytest.fixture
def low_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fp, "PARALLEL_MIN_BYTES", 1 << 16)


@pytest.mark.slow
@pytest.mark.usefixtures("low_threshold")
def test_worker_processes_read_what_one_process_reads(tmp_path: Path) -> None:
    p = tmp_path / "in.csv"
    big_csv(p, 30_000)
    src = FileSource(path=str(p), timestamp_column="ts")
    window = TimeWindow.from_dates("2024-01-02", "2024-01-03")
    for w in (None, window):
        parts = src.read_parts(w, 1000, 2)
        assert parts is not None
        got = joined(parts)
        assert got == serial(src, w, 1000)
    left = [f for f in (tmp_path / "scratch").rglob("*") if f.is_file()]
    assert left == []


@pytest.mark.usefixtures("low_threshold")
def test_when_one_process_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "in.csv"
    big_csv(p, 5_000)
    assert FileSource(path=str(p)).read_parts(None, 1000, 1) is None  # asked for one
    assert FileSource(path=str(p), encoding="cp1250").read_parts(None, 1000, 2) is None
    monkeypatch.setattr(fp, "PARALLEL_MIN_BYTES", p.stat().st_size + 1)
    assert FileSource(path=str(p)).read_parts(None, 1000, 2) is None  # too small


@pytest.mark.usefixtures("low_threshold")
def test_closing_early_leaves_no_parts(tmp_path: Path) -> None:
    p = tmp_path / "in.csv"
    big_csv(p, 30_000)
    parts = FileSource(path=str(p)).read_parts(None, 1000, 2)
    assert parts is not None
    first = next(parts)
    os.unlink(first.staged.path)  # taken: the step appends (and deletes) it
    parts.close()  # a stop request: the step leaves the loop
    left = [f for f in (tmp_path / "scratch").rglob("*") if f.is_file()]
    assert left == []


@pytest.mark.slow
@pytest.mark.usefixtures("low_threshold")
def test_fetch_step_reads_in_parts_with_metrics(tmp_path: Path) -> None:
    """Through Dagster: the staged fetch output equals the serial one, and every batch's
    read time reaches the fetch duration histogram."""
    import dagster as dg

    from es_mysql_pipeline.assets import build_assets
    from es_mysql_pipeline.io_manager import StagingIOManagerResource
    from es_mysql_pipeline.metrics import recorder
    from es_mysql_pipeline.resources.settings import PipelineSettings
    from es_mysql_pipeline.resources.sinks import JsonlSink

    p = tmp_path / "in.csv"
    big_csv(p, 30_000)
    src = FileSource(path=str(p))
    want = serial(src, None, 1000)
    seen: list[float] = []
    processed: list[int] = []

    class Spy(recorder.NullRecorder):
        def duration(self, kind: Any, seconds: float) -> None:
            if kind == "fetch":
                seen.append(seconds)

        def records(self, status: Any, n: int, stage: Any) -> None:
            if stage == "fetch":
                processed.append(n)

    previous = recorder.set_recorder(Spy())
    try:
        result = dg.materialize(
            build_assets(None),
            resources={
                "source": src,
                "sink": JsonlSink(path=str(tmp_path / "out.jsonl")),
                "settings": PipelineSettings(
                    dead_letter_dir=str(tmp_path / "dl"), fetch_batch_size=1000, fetch_processes=2
                ),
                "io_manager": StagingIOManagerResource(base_path=str(tmp_path / "staging")),
            },
            selection=["raw_records"],
        )
    finally:
        recorder.set_recorder(previous)
    assert result.success
    staged = result.output_for_node("raw_records")
    published = replace(staged, path=str(tmp_path / "staging" / "raw_records.stage"))
    got: Batch = [r for frame in published.frames() for r in frame]
    assert got == want
    assert staged.rows == len(want) == sum(processed)
    assert len(processed) > 2  # parts, each counted as it is joined
    assert len(seen) >= len(want) // 1000  # a read time per batch
