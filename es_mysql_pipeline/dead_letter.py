"""Dead-letter files: every record the pipeline could not load, with the reason, per partition.

A file is written under a temporary name and published on close, replacing the previous
run's file for the same partition, so a re-run leaves exactly its own failures. A directory
may be a URL (``s3://bucket/data/dead_letter``): the lines then go to a local scratch file
and the final key is written on close, so a failed run leaves nothing in the bucket.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from datetime import datetime, timezone
from typing import IO, Any

from upath import UPath

from es_mysql_pipeline.records import ERROR_KEY, Record
from es_mysql_pipeline.staging import scratch_dir
from es_mysql_pipeline.value_types import JSON_ENCODER


class DeadLetterWriter:
    """Thread-safe writer of ``{"stage", "reason", "record", "at"}`` lines.

    ``stage`` in each line names the step (``transform`` or ``load``); the key stays as it is
    because it is the dead-letter file format people and tools already read.
    """

    def __init__(self, directory: str, step: str, partition: str | None) -> None:
        name = f"{partition or 'all'}.jsonl"
        self._remote = "://" in directory
        if self._remote:
            self.path = str(UPath(directory) / step / name)
        else:
            self.path = os.path.join(directory, step, name)
        self._tmp = self.path + ".tmp"
        self.step = step
        self.count = 0
        self._fh: IO[str] | None = None
        self._lock = threading.Lock()
        self._closed = False

    def write(self, record: Record, reason: str) -> None:
        clean = {k: v for k, v in record.items() if k != ERROR_KEY}
        at = datetime.now(timezone.utc).isoformat()
        line = JSON_ENCODER.encode(
            {"stage": self.step, "reason": reason, "record": clean, "at": at}
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
            if self._remote:  # an object store has no rename: publish by upload on close
                os.makedirs(scratch_dir(), exist_ok=True)
                fd, self._tmp = tempfile.mkstemp(".jsonl", "dead-letter-", scratch_dir())
                os.close(fd)
            else:
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self._fh = open(self._tmp, "w", encoding="utf-8")
        return self._fh

    def close(self) -> str | None:
        """Publish the file (or remove an old one when nothing failed); returns its path."""
        with self._lock:
            if self._closed:
                return self.path if self.count else None
            self._closed = True
            if self._fh is None:  # nothing failed: an older run's failures are gone too
                final = UPath(self.path)
                if final.exists():
                    final.unlink()
                return None
            self._fh.close()
            self._fh = None
            if self._remote:
                try:
                    UPath(self.path).fs.put_file(self._tmp, self.path)
                finally:
                    os.unlink(self._tmp)
            else:
                os.replace(self._tmp, self.path)
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
                os.unlink(self._tmp)

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()


def read_dead_letters(path: str) -> list[dict[str, Any]]:
    """All entries of a dead-letter file (for tests and inspection)."""
    with UPath(path).open("r", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
