"""Dead-letter files on an object store (a ``scheme://`` directory): written in scratch,
uploaded whole on close, and an older run's file removed when nothing failed."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from upath import UPath

from es_mysql_pipeline.dead_letter import DeadLetterWriter, read_dead_letters
from es_mysql_pipeline.records import ERROR_KEY


@pytest.fixture
def bucket() -> str:
    return f"memory://dead-letters-{uuid.uuid4().hex[:8]}"


def scratch_files(tmp_path: Path) -> list[Path]:
    return [p for p in (tmp_path / "scratch").rglob("*") if p.is_file()]


def test_a_remote_dead_letter_is_uploaded_whole_on_close(bucket: str, tmp_path: Path) -> None:
    with DeadLetterWriter(bucket, "load", "2024-01-01") as dead:
        dead.write({"id": "1", ERROR_KEY: "line 2: bad"}, "line 2: bad")
        dead.write({"id": "2"}, "too long")
        assert not UPath(dead.path).exists()  # nothing is visible before the close
    assert dead.path == f"{bucket}/load/2024-01-01.jsonl"
    entries = read_dead_letters(dead.path)
    assert [(e["stage"], e["reason"], e["record"]) for e in entries] == [
        ("load", "line 2: bad", {"id": "1"}),
        ("load", "too long", {"id": "2"}),
    ]
    assert dead.close() == dead.path  # closing again answers the same
    assert scratch_files(tmp_path) == []  # the local copy is gone


def test_a_clean_rerun_removes_the_old_remote_file(bucket: str, tmp_path: Path) -> None:
    with DeadLetterWriter(bucket, "transform", None) as dead:
        dead.write({"id": "1"}, "bad")
    assert UPath(f"{bucket}/transform/all.jsonl").exists()
    with DeadLetterWriter(bucket, "transform", None) as clean:
        pass
    assert clean.close() is None
    assert not UPath(f"{bucket}/transform/all.jsonl").exists()


def test_a_failed_run_publishes_nothing(bucket: str, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), DeadLetterWriter(bucket, "load", None) as dead:
        dead.write({"id": "1"}, "bad")
        raise RuntimeError("the step failed")
    assert not UPath(dead.path).exists()
    assert scratch_files(tmp_path) == []


def test_nothing_failed_and_nothing_to_remove(tmp_path: Path) -> None:
    with DeadLetterWriter(str(tmp_path / "dl"), "load", None) as dead:
        pass
    assert dead.close() is None
    failed = DeadLetterWriter(str(tmp_path / "dl"), "load", None)
    failed.discard()  # a failed run that had no failure to write
    assert not (tmp_path / "dl").exists()
