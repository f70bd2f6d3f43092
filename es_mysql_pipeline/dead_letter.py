"""Dead-letter files: every record the pipeline could not load, with the reason, per partition.

A file is written under a temporary name and published on close, replacing the previous
run's file for the same partition, so a re-run leaves exactly its own failures.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from datetime import datetime, timezone
from typing import IO, Any

from es_mysql_pipeline.records import ERROR_KEY, Record
from es_mysql_pipeline.staging import JSON_ENCODER


class DeadLetterWriter:
    """Thread-safe writer of ``{"stage", "reason", "record", "at"}`` lines."""

    def __init__(self, directory: str, stage: str, partition: str | None) -> None:
        self.path = os.path.join(directory, stage, f"{partition or 'all'}.jsonl")
        self.stage = stage
        self.count = 0
        self._fh: IO[str] | None = None
        self._lock = threading.Lock()
        self._closed = False

    def write(self, record: Record, reason: str) -> None:
        rec = {k: v for k, v in record.items() if k != ERROR_KEY}
        line = JSON_ENCODER.encode(
            {
                "stage": self.stage,
                "reason": reason,
                "record": rec,
                "at": datetime.now(timezone.utc).isoformat(),
            }
        )
        with self._lock:
            self._open().write(line + "\n")
            self.count += 1

    def append_file(self, path: str, count: int) -> None:
        """Add the ``count`` entries another writer published at ``path``, then delete it."""
        with self._lock, open(path, encoding="utf-8") as src:
            shutil.copyfileobj(src, self._open(), 1 << 20)
            self.count += count
        os.unlink(path)

    def _open(self) -> IO[str]:
        if self._fh is None:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self._fh = open(self.path + ".tmp", "w", encoding="utf-8")
        return self._fh

    def close(self) -> str | None:
        """Publish the file (or remove an old one when nothing failed); returns its path."""
        with self._lock:
            if self._closed:
                return self.path if self.count else None
            self._closed = True
            if self._fh is None:
                if os.path.exists(self.path):
                    os.unlink(self.path)
                return None
            self._fh.close()
            self._fh = None
            os.replace(self.path + ".tmp", self.path)
            return self.path

    def __enter__(self) -> DeadLetterWriter:
        return self

    def discard(self) -> None:
        """Drop this run's unpublished failures (the run failed; its re-run rewrites them)."""
        with self._lock:
            self._closed = True
            if self._fh is not None:
                self._fh.close()
                self._fh = None
                os.unlink(self.path + ".tmp")

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()


def read_dead_letters(path: str) -> list[dict[str, Any]]:
    """All entries of a dead-letter file (for tests and inspection)."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
