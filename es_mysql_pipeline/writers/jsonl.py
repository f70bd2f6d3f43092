"""A JSON Lines file written whole under a temporary name and renamed into place when the
load commits, so a crash leaves no half file; a delete-marked record is left out."""

from __future__ import annotations

import os
import threading
from typing import IO

from es_mysql_pipeline.records import Batch
from es_mysql_pipeline.value_types import JSON_ENCODER
from es_mysql_pipeline.writers.base import (
    SinkSession,
    SinkWriter,
    WriteCounts,
    delete_marker_test,
)


class JsonlSession(SinkSession, SinkWriter):
    """Its own writer for every load thread: lines are joined per batch, written under a lock."""

    def __init__(self, target: str, delete_marker: str | None = None) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        self.target = target
        self.is_marked = delete_marker_test(delete_marker) if delete_marker else None
        self.tmp = f"{target}.tmp-{os.getpid()}"
        self._fh: IO[str] = open(self.tmp, "w", encoding="utf-8")
        self._lock = threading.Lock()

    def writer(self) -> SinkWriter:
        return self

    def write(self, batch: Batch) -> WriteCounts:
        marked = self.is_marked
        kept = batch if marked is None else [r for r in batch if not marked(r)]
        if kept:
            text = "\n".join(map(JSON_ENCODER.encode, kept)) + "\n"
            with self._lock:
                self._fh.write(text)
        # a delete-marked record is left out of the new file: its row is gone
        return WriteCounts(inserted=len(kept), deleted=len(batch) - len(kept))

    def commit(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        os.replace(self.tmp, self.target)

    def abort(self) -> None:
        self._fh.close()
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)
