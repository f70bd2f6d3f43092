from __future__ import annotations

import json
from pathlib import Path

import pytest

from es_mysql_pipeline.errors import ConfigError
from es_mysql_pipeline.resources.sinks import JsonlSink
from es_mysql_pipeline.resources.sinks.base import RecordSink
from es_mysql_pipeline.writers.base import SinkSession, TableShape

SHAPE = TableShape("id", "timestamp", {})


def test_file_appears_only_when_complete(tmp_path: Path) -> None:
    sink = JsonlSink(directory=str(tmp_path))
    session = sink.open_session(SHAPE, "2024-01-01")
    session.writer().write([{"id": "1", "v": "é"}])
    target = tmp_path / "2024-01-01.jsonl"
    assert not target.exists()  # still under its temporary name
    session.commit()
    assert [json.loads(x) for x in target.read_text().splitlines()] == [{"id": "1", "v": "é"}]
    assert sink.count_rows(SHAPE, None, "2024-01-01") == 1


def test_abort_leaves_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    target.write_text('{"id": "old"}\n')
    session = JsonlSink(path=str(target)).open_session(SHAPE, None)
    session.writer().write([{"id": "new"}])
    session.abort()
    assert target.read_text() == '{"id": "old"}\n'
    assert list(tmp_path.iterdir()) == [target]


def test_delete_markers_leave_records_out_of_the_file(tmp_path: Path) -> None:
    for marker, deleted in [
        ("deleted", ["t-bool", "t-int", "t-text"]),
        ("status = gone", ["s-gone"]),
    ]:
        shape = TableShape("id", None, {}, delete_marker=marker)
        sink = JsonlSink(path=str(tmp_path / "out.jsonl"))
        session = sink.open_session(shape, None)
        batch = [
            {"id": "t-bool", "deleted": True},
            {"id": "t-int", "deleted": 1},
            {"id": "t-text", "deleted": " Yes "},
            {"id": "f-zero", "deleted": 0.0},
            {"id": "f-obj", "deleted": {"x": 1}},
            {"id": "s-gone", "status": "gone"},
            {"id": "s-none", "status": None},
        ]
        counts = session.writer().write(batch)
        assert (counts.inserted, counts.deleted) == (7 - len(deleted), len(deleted))
        assert session.writer().write([r for r in batch if r["id"] in deleted]).inserted == 0
        session.commit()
        kept = [json.loads(x)["id"] for x in (tmp_path / "out.jsonl").read_text().splitlines()]
        assert kept == [r["id"] for r in batch if r["id"] not in deleted]


def test_a_file_never_written_counts_no_rows_and_deletes_nothing(tmp_path: Path) -> None:
    sink = JsonlSink(directory=str(tmp_path / "out"))
    assert sink.count_rows(SHAPE, None, "2024-01-01") == 0
    assert sink.delete_missing(SHAPE, None, {"1"}) == 0
    session = sink.open_session(SHAPE, None)
    session.abort()
    session.abort()  # twice: the temporary file is already gone
    assert list((tmp_path / "out").iterdir()) == []


def test_an_output_file_under_a_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("")
    sink = JsonlSink(path=str(tmp_path / "a_file" / "out.jsonl"))
    with pytest.raises(ConfigError, match=r"output_file: '.*a_file' is not a directory"):
        sink.open_session(SHAPE, None)


class KeepOnlySink(RecordSink):
    """A sink that loads but does not delete: it implements only the abstract methods."""

    def open_session(self, shape: TableShape, partition: str | None) -> SinkSession:
        raise AssertionError("not used")

    def count_rows(self, shape: TableShape, window: object, partition: str | None) -> int:
        return 0

    def describe(self) -> dict[str, str]:
        return {"type": "keep-only", "target": "-"}


def test_a_sink_without_deletes_or_an_encoder_says_so(tmp_path: Path) -> None:
    with pytest.raises(NotImplementedError, match="KeepOnlySink does not delete rows"):
        KeepOnlySink().delete_missing(SHAPE, None, set())
    session = JsonlSink(directory=str(tmp_path)).open_session(SHAPE, None)
    assert session.encoder() is None
    with pytest.raises(NotImplementedError, match="JsonlSession has no encoder"):
        session.writer().write_encoded("f", 1, list)
    session.abort()
