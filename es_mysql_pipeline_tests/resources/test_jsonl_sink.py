from __future__ import annotations

import json
from pathlib import Path

from es_mysql_pipeline.resources.sinks import JsonlSink
from es_mysql_pipeline.writers.base import TableShape

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
