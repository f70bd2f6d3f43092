"""A worker's share of encoding ahead (load_encoding._encode_frames), run in-process with the
real LOAD DATA encoder: files of the right records, the refused ones handed back to the
writers' own path, their newest times, and nothing left on disk when encoding fails."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from es_mysql_pipeline.load_encoding import _encode_frames, _Job, encode_ahead, newest_timestamp
from es_mysql_pipeline.records import Batch, Frame
from es_mysql_pipeline.staging import StagedFileWriter, StagedRecords
from es_mysql_pipeline.writers.sql.bulk_load import BulkEncoder


def staged(*frames: Batch) -> StagedRecords:
    with StagedFileWriter("id", "ts") as w:
        for frame in frames:
            w.write([dict(r) for r in frame])
        return w.finish()


def ts(day: int) -> str:
    return f"2024-01-{day:02d}T00:00:00.000000+00:00"


def epoch(day: int) -> float:
    return datetime(2024, 1, day, tzinfo=timezone.utc).timestamp()


def encoder(tmp_path: Path) -> BulkEncoder:
    (tmp_path / "bulk").mkdir(exist_ok=True)
    return BulkEncoder(("id", "ts"), ("text", "datetime"), str(tmp_path / "bulk"))


def job(data: StagedRecords, enc: Any, batch_size: int, file_rows: int) -> _Job:
    return _Job(data, 0, None, enc, batch_size, file_rows, "ts")


def test_records_the_encoder_refuses_go_back_to_the_writers(tmp_path: Path) -> None:
    good1 = [{"id": "1", "ts": ts(1)}, {"id": "2", "ts": ts(3)}]
    bad = [{"id": "3", "ts": "not a time"}, {"id": "4", "ts": ts(2)}]
    good2 = [{"id": "5", "ts": ts(4)}, {"id": "6", "ts": ts(5)}]
    data = staged(good1, bad, good2)
    chunks = _encode_frames(job(data, encoder(tmp_path), 1, 2))  # files of 2 batches of 1
    assert [(c.rows, c.offset, c.path is None) for c in chunks] == [
        (2, 0, False),
        (2, 2, True),
        (2, 4, False),
    ]
    assert [c.newest for c in chunks] == [epoch(3), epoch(2), epoch(5)]
    assert chunks[1].records(data) == bad
    assert Path(str(chunks[0].path)).read_text() == (
        "1\t2024-01-01 00:00:00.000000\n2\t2024-01-03 00:00:00.000000\n"
    )
    for chunk in chunks:
        chunk.discard()
        chunk.discard()  # twice: the file is already gone
    assert list((tmp_path / "bulk").iterdir()) == []


def test_big_frames_are_cut_into_batches_and_joined_into_files(tmp_path: Path) -> None:
    rows = [{"id": str(i), "ts": ts(i + 1)} for i in range(5)]
    odd = [{"id": "x", "ts": ts(9), "n": 1}, {"id": "y", "ts": ts(8)}, {"id": "z", "ts": ts(6)}]
    data = staged(rows, odd)
    chunks = _encode_frames(job(data, encoder(tmp_path), 2, 4))
    assert [(c.rows, c.offset) for c in chunks] == [(4, 0), (4, 4)]
    assert [c.newest for c in chunks] == [epoch(4), epoch(9)]
    text = "".join(Path(str(c.path)).read_text() for c in chunks)
    assert [line.split("\t")[0] for line in text.splitlines()] == [*"01234", "x", "y", "z"]


class FailsOnSecondFile:
    """The real encoder until the scratch disk fails under it."""

    def __init__(self, inner: BulkEncoder) -> None:
        self.inner = inner
        self.files = 0

    def encode(self, frames: Iterable[Frame]) -> str:
        self.files += 1
        if self.files == 2:
            raise OSError(28, "No space left on device")
        return self.inner.encode(frames)


def test_a_failed_encoding_leaves_no_file_behind(tmp_path: Path) -> None:
    data = staged([{"id": "1", "ts": ts(1)}], [{"id": "2", "ts": ts(2)}])
    with pytest.raises(OSError, match="No space left"):
        _encode_frames(job(data, FailsOnSecondFile(encoder(tmp_path)), 1, 1))
    assert list((tmp_path / "bulk").iterdir()) == []


def test_newest_time_of_mixed_or_missing_values() -> None:
    assert not encode_ahead(10)  # a small load: a process costs more than it saves
    assert newest_timestamp({"ts": [ts(2), 5, None, ts(7)]}, "ts") == epoch(7)
    assert newest_timestamp({"ts": [5, None]}, "ts") == 0.0
    assert newest_timestamp([], "ts") == 0.0
    assert newest_timestamp([{"ts": "later"}], "ts") == 0.0
