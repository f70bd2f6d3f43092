"""The threaded load engine, without Dagster: counts, dead letter, failures, back-pressure."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from es_mysql_pipeline import lifecycle
from es_mysql_pipeline.dead_letter import read_dead_letters
from es_mysql_pipeline.errors import SinkError
from es_mysql_pipeline.load_engine import load_staged
from es_mysql_pipeline.metrics.recorder import NullRecorder, set_recorder
from es_mysql_pipeline.records import Batch, Record, TimeWindow
from es_mysql_pipeline.resources.sinks.base import RecordSink
from es_mysql_pipeline.staging import StagedFileWriter, StagedRecords
from es_mysql_pipeline.writers.base import (
    SinkSession,
    SinkWriter,
    TableShape,
    WriteCounts,
)
from es_mysql_pipeline_tests.support.encoders import JsonEncoder

#: name -> the rows a MemorySink of that name holds, and what its sessions did
TABLES: dict[str, dict[str, Record]] = {}
EVENTS: dict[str, list[str]] = {}


class MemorySink(RecordSink):
    """Keeps rows in memory; refuses ids ending in 7; can fail or dawdle on purpose; with
    ``encode_to`` set, takes whole files a worker process encodes (like LOAD DATA)."""

    name: str
    fail_on_batch: int = -1
    seconds_per_batch: float = 0.0
    encode_to: str = ""
    refuse_to_encode: str = ""
    encode_min_rows: int = 0

    def open_session(self, shape: TableShape, partition: str | None) -> SinkSession:
        TABLES.setdefault(self.name, {})
        EVENTS.setdefault(self.name, []).append("open")
        return _Session(self)

    def count_rows(
        self, shape: TableShape, window: TimeWindow | None, partition: str | None
    ) -> int:
        return len(TABLES.get(self.name, {}))

    def describe(self) -> dict[str, str]:
        return {"type": "memory", "target": self.name}


class _Session(SinkSession):
    def __init__(self, sink: MemorySink) -> None:
        self.sink = sink
        self.batches = 0
        self.lock = threading.Lock()

    def writer(self) -> SinkWriter:
        return _Writer(self)

    def commit(self) -> None:
        EVENTS[self.sink.name].append("commit")

    def abort(self) -> None:
        EVENTS[self.sink.name].append("abort")

    def encoder(self) -> JsonEncoder | None:
        if not self.sink.encode_to:
            return None
        return JsonEncoder(
            self.sink.encode_to, self.sink.refuse_to_encode, self.sink.encode_min_rows
        )


class _Writer(SinkWriter):
    def __init__(self, session: _Session) -> None:
        self.session = session

    def write_encoded(self, path: str, rows: int, records: Callable[[], Batch]) -> WriteCounts:
        with open(path, encoding="utf-8") as fh:
            encoded = json.load(fh)
        assert len(encoded["records"]) == rows and encoded["pid"] != os.getpid()
        EVENTS[self.session.sink.name].append(f"file:{rows}")
        return self.write(encoded["records"])

    def write(self, batch: Batch) -> WriteCounts:
        sink = self.session.sink
        with self.session.lock:
            self.session.batches += 1
            n = self.session.batches
        EVENTS[sink.name].append(f"worker:{threading.current_thread().name}")
        if n == sink.fail_on_batch:
            raise SinkError("the sink broke on purpose")
        time.sleep(sink.seconds_per_batch)
        counts = WriteCounts()
        table = TABLES[sink.name]
        for record in batch:
            if str(record["id"]).endswith("7"):
                counts.failed += 1
                counts.failures.append((record, "sevens are refused"))
            elif record["id"] in table:
                counts.skipped += 1
            else:
                table[record["id"]] = record
                counts.inserted += 1
        return counts


def staged_ids(n: int, frame: int = 50) -> StagedRecords:
    with StagedFileWriter("id", None) as staging:
        for start in range(0, n, frame):
            staging.write([{"id": f"r{i}", "v": i} for i in range(start, min(n, start + frame))])
        return staging.finish()


def shape_of(staged: StagedRecords) -> TableShape:
    return TableShape("id", None, staged.columns)


@pytest.fixture
def sink_name(request: pytest.FixtureRequest) -> Iterator[str]:
    name = request.node.name
    yield name
    TABLES.pop(name, None)
    EVENTS.pop(name, None)


def test_counts_add_up_across_workers_and_rerun_skips(sink_name: str, tmp_path: Path) -> None:
    staged = staged_ids(1000)
    sink = MemorySink(name=sink_name, workers=3, batch_size=25, seconds_per_batch=0.002)
    first = load_staged(staged, sink, shape_of(staged), "all", str(tmp_path))
    assert (first.counts.inserted, first.counts.failed, first.counts.skipped) == (900, 100, 0)
    assert first.counts.processed == 1000
    assert len(TABLES[sink_name]) == 900
    workers = {e for e in EVENTS[sink_name] if e.startswith("worker:")}
    assert len(workers) == 3  # every worker thread wrote
    assert EVENTS[sink_name][-1] == "commit"
    assert first.dead_letter is not None
    dead = read_dead_letters(first.dead_letter)
    assert len(dead) == 100 and {d["reason"] for d in dead} == {"sevens are refused"}
    assert sorted(d["record"]["id"] for d in dead) == sorted(
        f"r{i}" for i in range(1000) if str(i).endswith("7")
    )

    again = load_staged(staged, sink, shape_of(staged), "all", str(tmp_path / "again"))
    assert (again.counts.inserted, again.counts.skipped, again.counts.failed) == (0, 900, 100)


def test_an_empty_stage_opens_nothing(sink_name: str, tmp_path: Path) -> None:
    staged = staged_ids(0)
    outcome = load_staged(
        staged, MemorySink(name=sink_name), shape_of(staged), "all", str(tmp_path)
    )
    assert outcome.counts.processed == 0 and sink_name not in EVENTS


def test_a_writer_error_stops_the_load_aborts_and_publishes_no_dead_letter(
    sink_name: str, tmp_path: Path
) -> None:
    staged = staged_ids(2000)
    sink = MemorySink(name=sink_name, workers=2, batch_size=10, fail_on_batch=5)
    with pytest.raises(SinkError, match="broke on purpose"):
        load_staged(staged, sink, shape_of(staged), "all", str(tmp_path / "dl"))
    assert EVENTS[sink_name][-1] == "abort" and "commit" not in EVENTS[sink_name]
    written = sum(1 for e in EVENTS[sink_name] if e.startswith("worker:"))
    assert written < 200 / 2  # stopped early, far from all 200 batches
    assert not list((tmp_path / "dl").rglob("*.jsonl"))


class QueueWatch(NullRecorder):
    def __init__(self) -> None:
        self.depths: list[int] = []

    def queue_depth(self, depth: int) -> None:
        self.depths.append(depth)


def test_the_queue_is_bounded_by_the_workers(sink_name: str, tmp_path: Path) -> None:
    staged = staged_ids(600)
    watch = QueueWatch()
    previous = set_recorder(watch)
    try:
        sink = MemorySink(name=sink_name, workers=2, batch_size=10, seconds_per_batch=0.005)
        load_staged(staged, sink, shape_of(staged), "all", str(tmp_path))
    finally:
        set_recorder(previous)
    assert watch.depths and max(watch.depths) <= 2 * 2  # never more than 2 batches a worker
    assert max(watch.depths) >= 2  # and the reader did run ahead of slow writers


def test_a_stop_request_ends_after_the_batches_in_flight(sink_name: str, tmp_path: Path) -> None:
    staged = staged_ids(1000)
    sink = MemorySink(name=sink_name, workers=2, batch_size=10)
    lifecycle.request_stop()
    try:
        with pytest.raises(Exception, match="load"):
            load_staged(staged, sink, shape_of(staged), "all", str(tmp_path / "dl"))
    finally:
        lifecycle.reset()
    assert EVENTS[sink_name][-1] == "abort"
    assert not list((tmp_path / "dl").rglob("*.jsonl"))


@pytest.fixture
def encode_small_loads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Encode ahead in a worker process whatever the size; the directory it writes to."""
    from es_mysql_pipeline import load_encoding

    monkeypatch.setattr(load_encoding, "ENCODE_AHEAD_MIN_ROWS", 0)
    scratch = tmp_path / "encoded"
    scratch.mkdir()
    return scratch


def test_files_encoded_ahead_carry_every_record_once_and_are_deleted(
    sink_name: str, tmp_path: Path, encode_small_loads: Path
) -> None:
    staged = staged_ids(1000, frame=120)  # frames of 120 rows, batches of 50: 50+50+20
    sink = MemorySink(name=sink_name, workers=2, batch_size=50, encode_to=str(encode_small_loads))
    outcome = load_staged(staged, sink, shape_of(staged), "all", str(tmp_path / "dl"))
    assert (outcome.counts.inserted, outcome.counts.failed) == (900, 100)
    assert sorted(TABLES[sink_name]) == sorted(f"r{i}" for i in range(1000) if i % 10 != 7)
    files = [int(e[5:]) for e in EVENTS[sink_name] if e.startswith("file:")]
    assert sum(files) == 1000 and max(files) == 50
    assert sorted(files) == sorted([50, 50, 20] * 8 + [40])  # 8 frames of 120, then 40
    assert EVENTS[sink_name][-1] == "commit"
    assert not list(encode_small_loads.iterdir())  # every encoded file was deleted


@pytest.fixture
def any_file_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files as big as the encoder asks, however few (a load is otherwise cut in 16 at least)."""
    from es_mysql_pipeline import load_encoding

    monkeypatch.setattr(load_encoding, "_MIN_FILES", 1)


def joining_sink(name: str, scratch: Path, batch_size: int, min_rows: int, **kw: Any) -> MemorySink:
    """A sink whose encoder asks for files of ``min_rows`` records or more."""
    return MemorySink(
        name=name,
        batch_size=batch_size,
        encode_to=str(scratch),
        encode_min_rows=min_rows,
        **kw,
    )


def test_frames_are_joined_into_files_of_the_encoders_minimum(
    sink_name: str, tmp_path: Path, encode_small_loads: Path, any_file_count: None
) -> None:
    """A sink that takes big files faster (LOAD DATA) gets files of at least ``min_rows``
    records whatever the batch size, but the last of each job of frames: here jobs of 3
    frames of 120 rows, written in batches of 50 until a file holds 300 or more (340, then
    the job's last 20); the last job holds 120 + 120 + 40."""
    staged = staged_ids(1000, frame=120)
    sink = joining_sink(sink_name, encode_small_loads, 50, 300, workers=2)
    outcome = load_staged(staged, sink, shape_of(staged), "all", str(tmp_path / "dl"))
    assert (outcome.counts.inserted, outcome.counts.failed) == (900, 100)
    assert sorted(TABLES[sink_name]) == sorted(f"r{i}" for i in range(1000) if i % 10 != 7)
    files = [int(e[5:]) for e in EVENTS[sink_name] if e.startswith("file:")]
    assert sorted(files) == [20, 20, 280, 340, 340]
    assert not list(encode_small_loads.iterdir())


def test_a_refused_joined_file_takes_the_writers_path_with_its_own_records(
    sink_name: str, tmp_path: Path, encode_small_loads: Path, any_file_count: None
) -> None:
    staged = staged_ids(300)  # frames of 50, joined in files of 100
    sink = joining_sink(sink_name, encode_small_loads, 25, 100, refuse_to_encode="r123")
    outcome = load_staged(staged, sink, shape_of(staged), "all", str(tmp_path / "dl"))
    assert (outcome.counts.inserted, outcome.counts.failed) == (270, 30)
    assert sorted(TABLES[sink_name]) == sorted(f"r{i}" for i in range(300) if i % 10 != 7)
    files = [int(e[5:]) for e in EVENTS[sink_name] if e.startswith("file:")]
    assert files == [100, 100]  # the file holding r123 went through write(): r100..r199


def test_a_small_load_is_still_cut_in_sixteen_files(
    sink_name: str, tmp_path: Path, encode_small_loads: Path
) -> None:
    """However big the encoder would like its files: the writers share them, and a kill
    leaves a file per writer at most to redo (batches of 10 joined to 60 here)."""
    staged = staged_ids(1000, frame=10)
    sink = joining_sink(sink_name, encode_small_loads, 10, 10_000, workers=2)
    outcome = load_staged(staged, sink, shape_of(staged), "all", str(tmp_path / "dl"))
    assert outcome.counts.processed == 1000
    files = [int(e[5:]) for e in EVENTS[sink_name] if e.startswith("file:")]
    assert sorted(files) == [40] + [60] * 16


def test_records_the_encoder_refuses_take_the_writers_own_path(
    sink_name: str, tmp_path: Path, encode_small_loads: Path
) -> None:
    staged = staged_ids(300)
    sink = MemorySink(
        name=sink_name,
        batch_size=25,
        encode_to=str(encode_small_loads),
        refuse_to_encode="r123",
    )
    outcome = load_staged(staged, sink, shape_of(staged), "all", str(tmp_path / "dl"))
    assert outcome.counts.processed == 300 and "r123" in TABLES[sink_name]
    files = [e for e in EVENTS[sink_name] if e.startswith("file:")]
    assert len(files) == 300 // 25 - 1  # one batch went through write() instead
    assert not list(encode_small_loads.iterdir())


def test_a_writer_error_with_files_encoded_ahead_leaves_no_file(
    sink_name: str, tmp_path: Path, encode_small_loads: Path
) -> None:
    staged = staged_ids(3000)
    sink = MemorySink(
        name=sink_name,
        workers=2,
        batch_size=10,
        fail_on_batch=5,
        encode_to=str(encode_small_loads),
    )
    with pytest.raises(SinkError, match="broke on purpose"):
        load_staged(staged, sink, shape_of(staged), "all", str(tmp_path / "dl"))
    assert EVENTS[sink_name][-1] == "abort"
    assert not list(encode_small_loads.iterdir())
