"""JSON Lines files: one per partition, published by rename so a crash leaves no half file."""

from __future__ import annotations

import os
import threading
from typing import IO

from es_mysql_pipeline.errors import ConfigError
from es_mysql_pipeline.records import Batch, TimeWindow
from es_mysql_pipeline.resources.sinks.base import (
    RecordSink,
    SinkSession,
    SinkWriter,
    TableShape,
    WriteCounts,
    delete_marker_test,
)
from es_mysql_pipeline.staging import JSON_ENCODER


class JsonlSink(RecordSink):
    """Writes ``<directory>/<partition>.jsonl``, or exactly ``path`` when it is set (CLI).

    Each load writes its file whole and renames it into place, so every write mode is a
    refresh of the file, and a record gone from the source is gone from the next file
    (deletes need no second pass); a delete-marked record is left out."""

    directory: str = "out"
    #: A single output file for a whole (unpartitioned) run; overrides ``directory``.
    path: str | None = None

    def target(self, partition: str | None) -> str:
        if self.path:
            return self.path
        return os.path.join(self.directory, f"{partition or 'all'}.jsonl")

    def describe(self) -> dict[str, str]:
        return {"type": "file", "target": self.path or self.directory, "mode": self.write_mode}

    def check(self) -> None:
        parent = os.path.dirname(os.path.abspath(self.path or os.path.join(self.directory, "x")))
        if os.path.exists(parent) and not os.path.isdir(parent):
            raise ConfigError(f"output_file: {parent!r} is not a directory")

    def open_session(self, shape: TableShape, partition: str | None) -> SinkSession:
        self.check()
        return _JsonlSession(self.target(partition), shape.delete_marker)

    def count_rows(
        self, shape: TableShape, window: TimeWindow | None, partition: str | None
    ) -> int:
        target = self.target(partition)
        if not os.path.exists(target):
            return 0
        with open(target, "rb") as fh:
            return sum(1 for _ in fh)

    def delete_missing(
        self, shape: TableShape, window: TimeWindow | None, source_ids: set[str]
    ) -> int:
        """Nothing to do: the file was just written whole from the source's records."""
        return 0


class _JsonlSession(SinkSession):
    def __init__(self, target: str, delete_marker: str | None = None) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        self.target = target
        self.is_marked = delete_marker_test(delete_marker) if delete_marker else None
        self.tmp = f"{target}.tmp-{os.getpid()}"
        self._fh: IO[str] = open(self.tmp, "w", encoding="utf-8")
        self._lock = threading.Lock()

    def writer(self) -> SinkWriter:
        return _JsonlWriter(self)

    def write_lines(self, text: str) -> None:
        with self._lock:
            self._fh.write(text)

    def commit(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        os.replace(self.tmp, self.target)

    def abort(self) -> None:
        self._fh.close()
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)


class _JsonlWriter(SinkWriter):
    def __init__(self, session: _JsonlSession) -> None:
        self.session = session

    def write(self, batch: Batch) -> WriteCounts:
        encode = JSON_ENCODER.encode
        marked = self.session.is_marked
        kept = batch if marked is None else [r for r in batch if not marked(r)]
        if kept:
            self.session.write_lines("\n".join(encode(r) for r in kept) + "\n")
        # a delete-marked record is left out of the new file: its row is gone
        return WriteCounts(inserted=len(kept), deleted=len(batch) - len(kept))
