"""The JSON Lines sink: a file per partition (writing it: ``writers/jsonl.py``)."""

from __future__ import annotations

import os

from es_mysql_pipeline.errors import ConfigError
from es_mysql_pipeline.records import TimeWindow
from es_mysql_pipeline.resources.sinks.base import RecordSink
from es_mysql_pipeline.writers.base import SinkSession, TableShape
from es_mysql_pipeline.writers.jsonl import JsonlSession


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
        return JsonlSession(self.target(partition), shape.delete_marker)

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
