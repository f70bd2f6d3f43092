"""CSV and JSON Lines files as a source (the reading itself is in
:mod:`es_mysql_pipeline.readers.file_reading`)."""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from typing import ClassVar, Literal

from es_mysql_pipeline.errors import ConfigError, SourceError
from es_mysql_pipeline.readers import file_reading
from es_mysql_pipeline.readers.file_reading import SpanReader, TextFile
from es_mysql_pipeline.records import (
    Batch,
    TimeWindow,
    detect_timestamp_field,
    timestamp_setting,
)
from es_mysql_pipeline.resources.sources.base import RecordSource
from es_mysql_pipeline.staging import StagedPart


class FileSource(RecordSource):
    """A CSV or JSON Lines file (``--source_type csv``): nothing trimmed, ``NULL`` stays text."""

    path: str
    delimiter: str = ","
    #: ``utf-8-sig`` reads UTF-8 with or without a byte-order mark.
    encoding: str = "utf-8-sig"
    id_column: str = "id"
    #: The event-time field; unset: detected from the header (or the first JSON Lines
    #: records) among :data:`~es_mysql_pipeline.records.TIMESTAMP_CANDIDATES`; ``none``:
    #: the file has none.
    timestamp_column: str | None = None
    format: Literal["auto", "csv", "jsonl"] = "auto"

    timestamp_setting_names: ClassVar[str] = "--timestamp_column (CSV_TIMESTAMP_COLUMN)"

    def id_key(self) -> str:
        return self.id_column

    def timestamp_key(self) -> str | None:
        detect, name = timestamp_setting(self.timestamp_column)
        if not detect or not os.path.isfile(self.path):
            return name
        return detect_timestamp_field(self.text_file().field_names())

    def describe(self) -> dict[str, str]:
        detect, _ = timestamp_setting(self.timestamp_column)
        ts = self.timestamp_key() or "none"
        return {
            "type": "csv",
            "target": os.path.basename(self.path),
            "format": self._file_format(),
            "timestamp_field": f"{ts} (detected)" if detect and ts != "none" else ts,
        }

    def check(self) -> None:
        if not os.path.isfile(self.path):
            raise ConfigError(f"csv_file: {self.path!r} does not exist or is not a file")
        if len(self.delimiter) != 1:
            raise ConfigError(f"delimiter={self.delimiter!r} must be exactly one character")
        try:
            "".encode(self.encoding)
        except LookupError:
            raise ConfigError(f"encoding={self.encoding!r} is not a known text encoding") from None

    def read_batches(self, window: TimeWindow | None, batch_size: int) -> Iterator[Batch]:
        ts_key = self._checked(window)
        try:
            yield from SpanReader(self.text_file(), batch_size, window, ts_key)
        except UnicodeDecodeError as exc:
            raise SourceError(
                f"{self.path}: bytes at offset {exc.start} are not valid {self.encoding}; "
                "set encoding to the file's real encoding"
            ) from None

    def read_parts(
        self, window: TimeWindow | None, batch_size: int, processes: int
    ) -> Generator[StagedPart, None, None] | None:
        """A big file is read by worker processes, a part each (see
        :func:`~es_mysql_pipeline.readers.file_reading.read_parts`)."""
        ts_key = self._checked(window)
        return file_reading.read_parts(self.text_file(), batch_size, window, ts_key, processes)

    def _checked(self, window: TimeWindow | None) -> str | None:
        """The time field, after the settings and the window's need of it are checked."""
        self.check()
        return self.require_timestamp(window)

    def text_file(self) -> TextFile:
        return TextFile(self.path, self._file_format(), self.delimiter, self.encoding)

    def _file_format(self) -> Literal["csv", "jsonl"]:
        if self.format != "auto":
            return self.format
        return "jsonl" if self.path.lower().endswith((".jsonl", ".ndjson", ".json")) else "csv"
