"""CSV and JSON Lines files, streamed row by row with values kept byte-exact."""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterator
from itertools import islice, repeat
from typing import IO, ClassVar, Literal

from es_mysql_pipeline import json_codec
from es_mysql_pipeline.errors import ConfigError, SourceError
from es_mysql_pipeline.records import (
    ERROR_KEY,
    Batch,
    Record,
    TimeWindow,
    batched,
    detect_timestamp_field,
    parse_timestamp,
    timestamp_setting,
)
from es_mysql_pipeline.resources.sources.base import RecordSource

csv.field_size_limit(2**31 - 1)  # a 20 MB field is data, not an attack

#: Bytes the codec could not decode arrive as lone surrogates (``errors="surrogateescape"``).
_UNDECODED_RE = re.compile("[\udc80-\udcff]")
#: JSON Lines records whose keys are looked at to detect the time field.
_DETECT_LINES = 100


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
        return detect_timestamp_field(self._field_names())

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
        self.check()
        try:
            yield from self._batches(window, batch_size)
        except UnicodeDecodeError as exc:
            raise SourceError(
                f"{self.path}: bytes at offset {exc.start} are not valid {self.encoding}; "
                "set encoding to the file's real encoding"
            ) from None

    def _batches(self, window: TimeWindow | None, batch_size: int) -> Iterator[Batch]:
        ts_key = self.timestamp_key()
        if window is not None and ts_key is None:
            raise self.no_time_field(window)
        batches = (
            batched(self._jsonl_records(), batch_size)
            if self._file_format() == "jsonl"
            else self._csv_batches(batch_size)
        )
        if window is None:
            yield from batches
            return
        pending: Batch = []
        for batch in batches:
            pending.extend(r for r in batch if _in_window(r, ts_key or "", window))
            while len(pending) >= batch_size:
                yield pending[:batch_size]
                del pending[:batch_size]
        if pending:
            yield pending

    def _file_format(self) -> str:
        if self.format != "auto":
            return self.format
        return "jsonl" if self.path.lower().endswith((".jsonl", ".ndjson", ".json")) else "csv"

    def _open(self) -> IO[str]:
        """The file as text; bytes the encoding cannot decode become lone surrogates.

        ``surrogateescape`` instead of strict decoding, so one bad line costs one record
        (sent to the dead letter with the reason) instead of failing the whole run.
        newline="" lets the csv module keep newlines inside quoted fields.
        """
        return open(self.path, encoding=self.encoding, errors="surrogateescape", newline="")

    def _undecodable(self, line_desc: str) -> str:
        return (
            f"{line_desc}: bytes that are not valid {self.encoding}; "
            "fix the line or set encoding to the file's real encoding"
        )

    def _field_names(self) -> list[str]:
        """The header of a CSV file; the keys of the first records of a JSON Lines file."""
        try:
            with self._open() as fh:
                if self._file_format() == "csv":
                    header = next(csv.reader(fh, delimiter=self.delimiter), [])
                    return [_printable(h) for h in header]
                names: dict[str, None] = {}
                for _, line in zip(range(_DETECT_LINES), fh, strict=False):
                    try:
                        value = json.loads(line)
                    except (json.JSONDecodeError, RecursionError):
                        continue
                    if isinstance(value, dict):
                        names.update(dict.fromkeys(value))
                return list(names)
        except (OSError, UnicodeDecodeError):
            return []  # read_batches reports the file's problem with its own message

    def _csv_batches(self, size: int) -> Iterator[Batch]:
        """Rows a batch at a time: a batch of well-formed, decodable rows (nearly all) becomes
        records in C-level maps; only a batch holding a bad row is looked at row by row."""
        with self._open() as fh:
            reader = csv.reader(fh, delimiter=self.delimiter, strict=False)
            header = next(reader, None)
            if header is None:
                return
            # Undecodable bytes in a field name are shown escaped, not rejected.
            header = [_printable(h) for h in header]
            dupes = sorted({h for h in header if header.count(h) > 1})
            width = len(header)
            while True:
                rows: list[list[str]] = []
                lines: list[int] = []
                for row in islice(reader, size):
                    rows.append(row)
                    lines.append(reader.line_num)
                if not rows:
                    return
                if width and not dupes and set(map(len, rows)) == {width} and _decodable(rows):
                    batch = list(map(dict, map(zip, repeat(header), rows)))
                else:
                    batch = [
                        self._csv_record(row, line, header, dupes)
                        for row, line in zip(rows, lines, strict=True)
                        if row  # a blank line between records
                    ]
                # Free the rows first: a value still referenced twice makes marshal track it
                # for back-references, which doubles what staging the batch costs.
                del rows, lines
                if batch:
                    yield batch

    def _csv_record(self, row: list[str], line: int, header: list[str], dupes: list[str]) -> Record:
        # Every character of the lines a record was read from lands in one of its fields (a
        # lone surrogate is never a delimiter or quote), so checking the fields finds
        # exactly the records holding undecodable bytes.
        if not _decodable([row]):
            return {
                ERROR_KEY: self._undecodable(f"line {line}"),
                "__raw__": list(map(_printable, row)),
            }
        width = len(header)
        if len(row) == width and not dupes:
            return dict(zip(header, row, strict=True))
        record: Record = {}
        for i, value in enumerate(row[:width]):
            record.setdefault(header[i], value)
        if dupes:
            record[ERROR_KEY] = f"duplicate column names in header: {', '.join(dupes)}"
        else:
            record[ERROR_KEY] = f"line {line}: expected {width} fields, found {len(row)}"
            record["__raw__"] = row
        return record

    def _jsonl_records(self) -> Iterator[Record]:
        with self._open() as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                if not line.isascii() and _UNDECODED_RE.search(line):
                    yield {
                        ERROR_KEY: self._undecodable(f"line {lineno}"),
                        "__raw__": _printable(line),
                    }
                    continue
                try:
                    value = json_codec.loads(line)
                except (json.JSONDecodeError, RecursionError) as exc:
                    yield {ERROR_KEY: f"line {lineno}: invalid JSON ({exc})", "__raw__": line}
                    continue
                if not isinstance(value, dict):
                    yield {ERROR_KEY: f"line {lineno}: not a JSON object", "__raw__": line}
                    continue
                yield value


def _decodable(rows: list[list[str]]) -> bool:
    """Whether no field of ``rows`` holds an undecodable byte (one C-level scan when all
    text is ASCII, one regex search over the batch otherwise)."""
    text = "".join(map("".join, rows))
    return text.isascii() or not _UNDECODED_RE.search(text)


def _printable(text: str) -> str:
    """Undecodable bytes as ``\\xff`` escapes: dead-letter and stage files stay valid UTF-8."""
    if text.isascii() or not _UNDECODED_RE.search(text):
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _in_window(record: Record, ts_key: str, window: TimeWindow) -> bool:
    """Records whose timestamp is missing or unparsable belong to no day (see README)."""
    try:
        return parse_timestamp(record.get(ts_key)) in window
    except ValueError:
        return False
