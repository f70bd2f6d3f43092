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
)
from es_mysql_pipeline.staging import JSON_ENCODER


class JsonlSink(RecordSink):
    """Writes ``<directory>/<partition>.jsonl``, or exactly ``path`` when it is set (CLI)."""

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
        return _JsonlSession(self.target(partition))

    def count_rows(
        self, shape: TableShape, window: TimeWindow | None, partition: str | None
    ) -> int:
        target = self.target(partition)
        if not os.path.exists(target):
            return 0
        with open(target, "rb") as fh:
            return sum(1 for _ in fh)


class _JsonlSession(SinkSession):
    def __init__(self, target: str) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        self.target = target
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
        lines = [encode(r) for r in batch]
        self.session.write_lines("\n".join(lines) + "\n")
        return WriteCounts(inserted=len(batch))
