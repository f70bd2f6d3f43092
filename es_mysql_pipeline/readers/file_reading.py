"""Reading a CSV or JSON Lines file into record batches: whole, or cut into byte spans that
worker processes read.

Nothing here imports Dagster: the worker processes that read the spans of a big file import
this module and nothing heavier. :class:`~es_mysql_pipeline.resources.sources.files.FileSource`
is the resource around it. Values stay byte-exact: nothing is trimmed, ``NULL`` stays text,
bytes the encoding cannot decode make their record a dead letter (with the line number)
instead of failing the run.

Parsing text into records is pure Python, one core per process. So a big file is cut, after
line breaks, into about four spans per worker; each span is a read unit of
:mod:`es_mysql_pipeline.readers.engine`, staged by a worker, and the parts are appended in
order: the staged file holds the same records in the same order, with the same dead-letter
reasons and line numbers, as one process reading the whole file writes.

Where to cut: a JSON Lines record never spans lines, so after any line break. A CSV record
may (a quoted value holding newlines): the cut goes after a line break with an even number of
quote characters before it, which lies between two records in any well-formed file, and the
worker reading the span before the cut proves it (see :attr:`Span.check_end`). Where the
proof fails (a stray quote inside an unquoted value), the parts from there on are thrown away
and the rest of the file is read in this process, from the last proven cut, as a serial read
would.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import re
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, replace
from itertools import chain, islice, repeat
from typing import IO, Literal, cast

from es_mysql_pipeline import json_codec
from es_mysql_pipeline.readers.engine import Unit, read_units, timed
from es_mysql_pipeline.records import (
    ERROR_KEY,
    Batch,
    Frame,
    Record,
    TimeWindow,
    parse_timestamp,
    rebatch,
    time_at,
)
from es_mysql_pipeline.staging import StagedPart
from es_mysql_pipeline.worker_processes import may_spawn, process_count

csv.field_size_limit(2**31 - 1)  # a 20 MB field is data, not an attack

#: Bytes the codec could not decode arrive as lone surrogates (``errors="surrogateescape"``).
_UNDECODED_RE = re.compile("[\udc80-\udcff]")
#: JSON Lines records whose keys are looked at to detect the time field.
_DETECT_LINES = 100
#: Encodings in which ``"``, ``\\r`` and ``\\n`` are single bytes that never occur inside
#: another character: a file in one of them can be cut into parts by looking at bytes.
SPLITTABLE_ENCODINGS = frozenset({"utf-8", "utf-8-sig", "ascii", "iso8859-1", "cp1252"})
#: The line a CSV reader adds after a span's end to prove it (see :class:`Span`).
SENTINEL = "es-mysql-pipeline:end-of-part"


@dataclass(frozen=True)
class Span:
    """A byte range of the file, cut right after a line break.

    ``lines_before`` is the number of lines before ``start`` (error messages give the
    file's own line numbers); ``header`` is the CSV header when ``start`` is past it.
    With ``check_end`` a CSV reader proves that ``stop`` fell between two records, not
    inside a quoted value: it reads one more line, :data:`SENTINEL`, and only a reader that
    was between records at ``stop`` reads it back as a record of one field.
    """

    start: int = 0
    stop: int | None = None
    lines_before: int = 0
    #: Lines up to ``stop`` (where the sentinel line's number comes from).
    lines_at_stop: int = 0
    header: tuple[str, ...] | None = None
    check_end: bool = False


WHOLE_FILE = Span()


@dataclass(frozen=True)
class TextFile:
    """How to read the file: path, format and text settings."""

    path: str
    kind: Literal["csv", "jsonl"]
    delimiter: str = ","
    encoding: str = "utf-8-sig"

    def splittable(self) -> bool:
        """Whether :func:`read_parts` may cut it."""
        name = codecs.lookup(self.encoding).name  # the source's check() refused unknown ones
        return name in SPLITTABLE_ENCODINGS and self.delimiter not in '"\r\n'

    def open(self, span: Span = WHOLE_FILE) -> IO[str]:
        """The file (or the span) as text; undecodable bytes become lone surrogates.

        ``surrogateescape`` instead of strict decoding, so one bad line costs one record
        (sent to the dead letter with the reason) instead of failing the whole run.
        newline="" lets the csv module keep newlines inside quoted fields.
        """
        raw = open(self.path, "rb", buffering=0)
        raw.seek(span.start)
        # A byte-order mark is only the file's first bytes: a later part decodes as UTF-8.
        encoding = self.encoding
        if span.start and codecs.lookup(encoding).name == "utf-8-sig":
            encoding = "utf-8"
        stream = _ByteRange(raw, span.stop) if span.stop is not None else raw
        return io.TextIOWrapper(
            io.BufferedReader(stream, 1 << 16),
            encoding=encoding,
            errors="surrogateescape",
            newline="",
        )

    def undecodable(self, line_desc: str) -> str:
        return (
            f"{line_desc}: bytes that are not valid {self.encoding}; "
            "fix the line or set encoding to the file's real encoding"
        )

    def header(self) -> tuple[str, ...] | None:
        """The CSV header as the readers name the columns; ``None`` for an empty file."""
        with self.open() as fh:
            row = next(csv.reader(fh, delimiter=self.delimiter, strict=False), None)
        return None if row is None else tuple(map(printable, row))

    def field_names(self) -> list[str]:
        """The header of a CSV file; the keys of the first records of a JSON Lines file."""
        try:
            if self.kind == "csv":
                return list(self.header() or ())
            names: dict[str, None] = {}
            with self.open() as fh:
                for _, line in zip(range(_DETECT_LINES), fh, strict=False):
                    try:
                        value = json.loads(line)
                    except (json.JSONDecodeError, RecursionError):
                        continue
                    if isinstance(value, dict):
                        names.update(dict.fromkeys(value))
            return list(names)
        except (OSError, UnicodeDecodeError):
            return []  # reading the records reports the file's problem with its own message


@dataclass
class SpanReader(Unit):
    """Batches of the span's records (those in ``window`` when one is given); a read unit
    of :mod:`~es_mysql_pipeline.readers.engine` (after the read, :attr:`end_ok` says
    whether a checked end fell between two records, and :meth:`rest` what to read if not)."""

    file: TextFile
    size: int
    window: TimeWindow | None = None
    ts_key: str | None = None
    span: Span = WHOLE_FILE

    def __post_init__(self) -> None:
        self.end_ok = not (self.span.check_end and self.file.kind == "csv")

    def batches(self) -> Iterator[Frame]:
        """The batches as a staged file keeps them, each one's read time recorded: a CSV batch
        of well-formed rows read without a window comes as columns, never built as records
        (see :mod:`es_mysql_pipeline.staging`)."""
        if self.file.kind == "csv" and self.window is None:
            return timed(self._csv_batches(as_columns=True))
        return timed(iter(self))

    def rest(self) -> SpanReader | None:
        """When the span's checked end fell inside a quoted value: from the span's start to
        the end of the file, unchecked (its records, whatever it finds)."""
        if self.end_ok:
            return None
        span = self.span
        return replace(self, span=Span(span.start, None, span.lines_before, 0, span.header))

    def __iter__(self) -> Iterator[Batch]:
        batches = (
            rebatch(self._jsonl_batches(), self.size)
            if self.file.kind == "jsonl"
            else cast("Iterator[Batch]", self._csv_batches())
        )
        window = self.window
        if window is None:
            yield from batches
            return
        ts_key = self.ts_key or ""
        kept = ([r for r in batch if in_window(r, ts_key, window)] for batch in batches)
        yield from rebatch(kept, self.size)

    def _csv_batches(self, as_columns: bool = False) -> Iterator[Frame]:
        """Rows a batch at a time: a batch of well-formed, decodable rows (nearly all) becomes
        records in C-level maps (or columns); only a batch holding a bad row is looked at
        row by row."""
        span = self.span
        with self.file.open(span) as fh:
            lines: Iterable[str] = fh
            sentinel_line = -1
            if span.check_end:
                lines = chain(fh, (SENTINEL + "\n",))
                sentinel_line = span.lines_at_stop - span.lines_before + 1
            reader = csv.reader(lines, delimiter=self.file.delimiter, strict=False)
            if span.header is not None:
                header = list(span.header)
            else:
                first = next(reader, None)
                if first is None:
                    return
                # Undecodable bytes in a field name are shown escaped, not rejected.
                header = list(map(printable, first))
            dupes = sorted({h for h in header if header.count(h) > 1})
            width = len(header)
            offset = span.lines_before
            while True:
                rows: list[list[str]] = []
                row_lines: list[int] = []
                for row in islice(reader, self.size):
                    rows.append(row)
                    row_lines.append(reader.line_num)
                if row_lines and row_lines[-1] == sentinel_line:
                    # The last row: the sentinel alone, or a quoted value that swallowed it.
                    self.end_ok = rows.pop() == [SENTINEL]
                    row_lines.pop()
                if not rows:
                    return
                batch: Frame
                if width and not dupes and set(map(len, rows)) == {width} and decodable(rows):
                    if as_columns:
                        batch = dict(zip(header, zip(*rows, strict=True), strict=True))
                    else:
                        batch = list(map(dict, map(zip, repeat(header), rows)))
                else:
                    batch = [
                        self._csv_record(row, offset + line, header, dupes)
                        for row, line in zip(rows, row_lines, strict=True)
                        if row  # a blank line between records
                    ]
                # Free the rows first: a value still referenced twice makes marshal track it
                # for back-references, which doubles what staging the batch costs.
                del rows, row_lines
                if batch:
                    yield batch

    def _csv_record(self, row: list[str], line: int, header: list[str], dupes: list[str]) -> Record:
        # Every character of the lines a record was read from lands in one of its fields (a
        # lone surrogate is never a delimiter or quote), so checking the fields finds
        # exactly the records holding undecodable bytes.
        if not decodable([row]):
            return {
                ERROR_KEY: self.file.undecodable(f"line {line}"),
                "__raw__": list(map(printable, row)),
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

    def _jsonl_batches(self) -> Iterator[Batch]:
        """The records of ``size`` lines at a time: parsed in one go where every line holds
        a JSON object json reads the same way (nearly always), else line by line, for
        each bad line's reason."""
        with self.file.open(self.span) as fh:
            lineno = self.span.lines_before
            while lines := list(islice(fh, self.size)):
                text = "".join(lines)
                batch: Batch | None = None
                if text.isascii() or not _UNDECODED_RE.search(text):
                    body = [line for line in lines if not line.isspace()]
                    values = json_codec.loads_lines(body, text)
                    if values is not None and set(map(type, values)) <= {dict}:
                        batch = values
                if batch is None:
                    batch = list(self._jsonl_records(lines, lineno + 1))
                lineno += len(lines)
                del lines, text
                if batch:
                    yield batch

    def _jsonl_records(self, lines: list[str], first: int) -> Iterator[Record]:
        for lineno, line in enumerate(lines, start=first):
            if not line.strip():
                continue
            if not line.isascii() and _UNDECODED_RE.search(line):
                yield {
                    ERROR_KEY: self.file.undecodable(f"line {lineno}"),
                    "__raw__": printable(line),
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


class _ByteRange(io.RawIOBase):
    """An open binary file read up to byte ``stop`` only."""

    def __init__(self, raw: io.FileIO, stop: int) -> None:
        super().__init__()
        self._raw = raw
        self._left = stop - raw.tell()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self._left)
        if n <= 0:
            return 0
        got = self._raw.readinto(memoryview(buffer)[:n]) or 0
        self._left -= got
        return got

    def close(self) -> None:
        self._raw.close()
        super().close()


def decodable(rows: list[list[str]]) -> bool:
    """Whether no field of ``rows`` holds an undecodable byte (one C-level scan when all
    text is ASCII, one regex search over the batch otherwise)."""
    text = "".join(map("".join, rows))
    return text.isascii() or not _UNDECODED_RE.search(text)


def printable(text: str) -> str:
    """Undecodable bytes as ``\\xff`` escapes: dead-letter and stage files stay valid UTF-8."""
    if text.isascii() or not _UNDECODED_RE.search(text):
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def in_window(record: Record, ts_key: str, window: TimeWindow) -> bool:
    """Records whose timestamp is missing or unparsable belong to no day (docs/configuration.md)."""
    try:
        return parse_timestamp(time_at(record, ts_key)) in window
    except ValueError:
        return False


#: Files smaller than this are read in the step's own process: starting workers costs more.
PARALLEL_MIN_BYTES = 16 << 20
#: Parts per worker: small enough for progress and a prompt stop, big enough that handing
#: a part over costs nothing next to reading it.
_PARTS_PER_WORKER = 4
_SCAN_BLOCK = 1 << 20


@dataclass(frozen=True)
class Cut:
    """A byte offset right after a line break, and the number of lines before it."""

    offset: int
    lines: int


def read_parts(
    file: TextFile,
    batch_size: int,
    window: TimeWindow | None,
    ts_key: str | None,
    processes: int,
) -> Generator[StagedPart, None, None] | None:
    """The file's records as staged parts, in order; ``None`` when one process should read
    it (a small file, one process asked for, an encoding that cannot be cut as bytes, or a
    process that may not have children)."""
    workers = process_count(processes)
    if workers < 2 or not may_spawn() or not file.splittable():
        return None
    size = os.path.getsize(file.path)
    if size < PARALLEL_MIN_BYTES:
        return None
    header = file.header() if file.kind == "csv" else None  # a file this big has one
    parts = workers * _PARTS_PER_WORKER
    spans = plan_spans(file, size, parts, header)
    units = (SpanReader(file, batch_size, window, ts_key, span) for span in spans)
    return read_units(units, ts_key, workers, parts)


def find_cuts(file: TextFile, size: int, parts: int) -> Iterator[Cut]:
    """Cuts near ``size * j / parts`` (j = 1 … parts - 1), in order; fewer where the file
    has no suitable line break after a target. One pass over the bytes up to the last cut."""
    targets = [size * j // parts for j in range(1, parts)]
    quoted = file.kind == "csv"
    pos = lines = quotes = 0
    after_cr = False  # the previous block ended with \r: a \n starting this one ends no line
    t = 0
    with open(file.path, "rb") as fh:
        while t < len(targets):
            block = fh.read(_SCAN_BLOCK)
            if not block:
                return
            end = pos + len(block)
            at = 0
            while t < len(targets) and targets[t] < end:
                i = block.find(b"\n", max(targets[t] - pos, at))
                if i < 0:
                    break
                at = i + 1
                if quoted and (quotes + block.count(b'"', 0, i)) % 2:
                    continue  # inside a quoted value
                cut = pos + i + 1
                if cut >= size:
                    return  # nothing after it to read
                yield Cut(cut, lines + _line_breaks(block, i + 1, after_cr))
                while t < len(targets) and targets[t] < cut:
                    t += 1
            quotes += block.count(b'"')
            lines += _line_breaks(block, len(block), after_cr)
            after_cr = block.endswith(b"\r")
            pos = end


def _line_breaks(block: bytes, n: int, after_cr: bool) -> int:
    """Lines ended in ``block[:n]`` as Python's text files end them (``\\n``, ``\\r``,
    ``\\r\\n``)."""
    breaks = block.count(b"\n", 0, n) + block.count(b"\r", 0, n) - block.count(b"\r\n", 0, n)
    return breaks - 1 if after_cr and block[:1] == b"\n" else breaks


def plan_spans(
    file: TextFile, size: int, parts: int, header: tuple[str, ...] | None
) -> Iterator[Span]:
    """The spans between the cuts, each as soon as its end is found; all but the last have
    their end checked, all but the first start with the CSV header given."""
    start = Cut(0, 0)
    for cut in chain(find_cuts(file, size, parts), [None]):
        yield Span(
            start=start.offset,
            stop=cut.offset if cut else None,
            lines_before=start.lines,
            lines_at_stop=cut.lines if cut else 0,
            header=header if start.offset else None,
            check_end=cut is not None,
        )
        if cut is not None:
            start = cut
