"""Staged record files: how records travel between assets without living in memory.

A staged file is a data file of frames, one per written batch (a 9-byte header: the
payload's length and its codec, then the batch, so a range of frames can be handed to
another process), plus a ``.meta.json`` sidecar written last; one without its sidecar (a
killed run) is never taken as complete. A batch of records of one shape (every CSV batch,
most JSON Lines and Elasticsearch ones) is stored as columns, name → values: a
frame of columns encodes and decodes faster than a list of dicts (docs/benchmarks.md), and
the steps that read it work column by column anyway (the transform's batch path, the
schema tracking, the load files), so no dict per record is built only to be taken apart.
Other batches are stored as records. Frames are ``marshal``: records are JSON-shaped (str,
int, float, bool, None, lists, dicts), which marshal encodes and decodes faster than
pickle. A batch holding anything else (a user's analyzer may return
any object) is pickled instead, frame by frame, so every value keeps its type. The files
are the pipeline's own scratch data, written and read by the same Python release, never
input from elsewhere. The handle :class:`StagedRecords` is what the IO manager stores and
loads: a path, a row count and the column schema, never the rows.
"""

from __future__ import annotations

import contextlib
import errno
import json
import marshal
import operator
import os
import pickle
import shutil
import struct
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import partial
from itertools import repeat
from typing import IO, Any

from upath import UPath

from es_mysql_pipeline.errors import PipelineError
from es_mysql_pipeline.records import (
    Batch,
    Columns,
    Frame,
    as_rows,
    columns_of,
    frame_length,
    rebatch,
)

META_SUFFIX = ".meta.json"
STAGED_FILE_SUFFIX = ".stage"
_INT64 = (-(2**63), 2**63 - 1)

#: Write errors that mean "the staging disk is full" (no space, quota, file size limit).
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class StagingError(PipelineError):
    """Staged data could not be written (disk full, quota, file size limit)."""


#: Column types a staged file can declare, from narrowest to widest.
#: ``int`` holds integers a double keeps exactly (|n| <= 2**53), ``bigint`` the rest of int64:
#: beside decimals (``float``) they need text, or a DOUBLE would round them.
TYPES = ("bool", "int", "bigint", "float", "datetime", "string", "json")
_EXACT_IN_DOUBLE = 2**53


def value_type(value: Any) -> str | None:
    """The column type a single value needs; ``None`` for SQL NULL."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        if -_EXACT_IN_DOUBLE <= value <= _EXACT_IN_DOUBLE:
            return "int"
        return "bigint" if _INT64[0] <= value <= _INT64[1] else "string"
    if isinstance(value, float):
        return "float"
    if isinstance(value, datetime):
        return "datetime"
    if isinstance(value, (dict, list)):
        return "json"
    return "string"


def _plain_type(kinds: set[type], values: Sequence[Any]) -> str | None:
    """:func:`value_type` of every value of a column of one numeric or boolean type (no
    NULLs), found without a Python step per value; ``None`` for any other column."""
    if kinds == {int}:
        low, high = min(values), max(values)
        if low >= -_EXACT_IN_DOUBLE and high <= _EXACT_IN_DOUBLE:
            return "int"
        return "bigint" if _INT64[0] <= low and high <= _INT64[1] else None
    if kinds == {float}:
        return "float"
    if kinds == {bool}:
        return "bool"
    return None


def _observe_text(st: ColumnStats, values: Sequence[str]) -> None:
    """A column of text: its type, and its widest value in UTF-8 bytes, encoding only when
    the width could have grown (chars <= bytes <= 4 * chars; ASCII is one byte a char)."""
    if st.type != "string":
        st.type = merge_types(st.type, "string")
    longest = max(map(len, values))
    if longest <= st.max_bytes:
        if longest * 4 <= st.max_bytes or "".join(values).isascii():
            return
        widest = max(map(len, map(str.encode, values)))
    elif "".join(values).isascii():
        widest = longest
    else:
        widest = max(map(len, map(str.encode, values)))
    st.max_bytes = max(st.max_bytes, widest)


def _observe_values(st: ColumnStats, values: Sequence[Any]) -> None:
    """A column of mixed types, value by value."""
    for value in values:
        t = value_type(value)
        if t != st.type:
            st.type = merge_types(st.type, t)
        if t == "string":
            size = len(value.encode("utf-8")) if isinstance(value, str) else len(str(value))
            st.max_bytes = max(st.max_bytes, size)


def merge_types(a: str | None, b: str | None) -> str | None:
    """The narrowest type that holds values of both types (``int`` + ``float`` → ``float``)."""
    if a is None or a == b:
        return b
    if b is None:
        return a
    if {a, b} == {"int", "float"}:
        return "float"
    if {a, b} == {"int", "bigint"}:
        return "bigint"
    if "json" in (a, b):
        return "json"
    return "string"


@dataclass
class ColumnStats:
    type: str | None = None
    #: Longest value in UTF-8 bytes, as text (sizes the SQL text type).
    max_bytes: int = 0


@dataclass(frozen=True)
class StagedRecords:
    """A handle to a staged file: what passes between the fetch, transform and load assets."""

    path: str
    rows: int
    id_key: str
    #: ``None`` when the records have no time field.
    timestamp_key: str | None
    columns: dict[str, ColumnStats] = field(default_factory=dict)
    #: Records read from the source for this partition (processed so far).
    source_rows: int = 0
    #: Records the transform sent to the dead letter, and where.
    rejected: int = 0
    dead_letter: str | None = None

    def batches(self, size: int) -> Iterator[Batch]:
        """Stream the records back in batches of ``size``; memory holds about one batch."""
        return rebatch(self.frames(), size)

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[Batch]:
        """The batches as written, from the frame at byte ``start`` up to byte ``stop``."""
        return map(as_rows, self.raw_frames(start, stop))

    def raw_frames(self, start: int = 0, stop: int | None = None) -> Iterator[Frame]:
        """:meth:`frames` as stored: a frame of one shape as :data:`Columns`."""
        with UPath(self.path).open("rb") as fh:
            if start:
                fh.seek(start)
            pos = start
            while stop is None or pos < stop:
                header = fh.read(_HEADER.size)
                if not header:
                    return
                size, codec = _HEADER.unpack(header)
                payload = fh.read(size)
                yield marshal.loads(payload) if codec == _MARSHAL else pickle.loads(payload)
                pos += _HEADER.size + size

    def frame_offsets(self) -> list[int]:
        """Byte offset of every frame (headers only: a seek per frame)."""
        offsets = []
        with UPath(self.path).open("rb") as fh:
            pos = 0
            while header := fh.read(_HEADER.size):
                offsets.append(pos)
                pos += _HEADER.size + _HEADER.unpack(header)[0]
                fh.seek(pos)
        return offsets

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StagedRecords:
        cols = {k: ColumnStats(**v) for k, v in data.get("columns", {}).items()}
        return cls(**{**data, "columns": cols})


@dataclass(frozen=True)
class StagedPart:
    """A part of a step's output staged by a worker process, for the step to append."""

    staged: StagedRecords
    #: How long each of its batches took to read (the fetch duration histogram's samples).
    read_seconds: list[float] = field(default_factory=list)


def scratch_dir() -> str:
    """Where assets write stages before the IO manager publishes them."""
    path = os.environ.get("ES_MYSQL_PIPELINE_SCRATCH") or tempfile.gettempdir()
    os.makedirs(path, exist_ok=True)
    return path


class StagedFileWriter:
    """Writes records to a local scratch file, tracking row count and column types."""

    def __init__(
        self,
        id_key: str,
        timestamp_key: str | None,
        track_schema: bool = False,
        declared: dict[str, str] | None = None,
    ) -> None:
        fd, self.path = tempfile.mkstemp(
            prefix="stage-", suffix=STAGED_FILE_SUFFIX, dir=scratch_dir()
        )
        self._fh: IO[bytes] = os.fdopen(fd, "wb", buffering=1 << 20)
        self.rows = 0
        self.id_key = id_key
        self.timestamp_key = timestamp_key
        self._track = track_schema
        self.columns: dict[str, ColumnStats] = {
            name: ColumnStats(t) for name, t in (declared or {}).items()
        }
        self._declared = set(declared or ())

    def write(self, frame: Frame) -> None:
        """Stage ``frame``: :data:`Columns` as they are, records of one shape as columns,
        other records as they are. A list of records turned into columns is emptied: its
        values then live in the columns alone, and marshal tracks every value referenced
        from two places for back-references, which doubles what encoding costs."""
        if not frame:
            return
        n = frame_length(frame)
        columns = frame if isinstance(frame, dict) else columns_of(frame)
        if columns is not None and isinstance(frame, list):
            frame.clear()
        stored: Frame = frame if columns is None else columns
        if self._track:
            self._observe(stored)
        try:
            payload, codec = marshal.dumps(stored, _MARSHAL_VERSION), _MARSHAL
        except ValueError:  # a type marshal does not know (a user's analyzer's object)
            payload, codec = pickle.dumps(stored, _PICKLE_PROTOCOL), _PICKLE
        try:
            self._fh.write(_HEADER.pack(len(payload), codec))
            self._fh.write(payload)
        except OSError as exc:
            raise self._failed(exc) from None
        self.rows += n

    def _observe(self, frame: Frame) -> None:
        """Widen column types and text sizes, column by column.

        Each column is gathered with ``map(dict.get, ...)`` (or taken as given) and typed
        with ``set(map(type))``: loops in C, so tracking the schema costs little beside the
        per-record work.
        """
        columns: Columns | None = frame if isinstance(frame, dict) else None
        batch: Batch = frame if isinstance(frame, list) else []
        keys: dict[str, None] = {}
        for key_set in dict.fromkeys(map(tuple, batch)):  # first-seen order, one per shape
            keys.update(dict.fromkeys(key_set))
        for key in keys if columns is None else columns:
            if key in self._declared:
                continue
            st = self.columns.get(key)
            if st is None:
                st = self.columns[key] = ColumnStats()
            column = list(map(dict.get, batch, repeat(key))) if columns is None else columns[key]
            kinds = set(map(type, column))
            values: Sequence[Any] = column
            if _NONE_TYPE in kinds:  # NULLs say nothing of the type or width
                kinds.discard(_NONE_TYPE)
                if not kinds:
                    continue
                values = list(filter(_not_none, column))
            if kinds == {str}:
                _observe_text(st, values)
                continue
            plain = _plain_type(kinds, values)
            if plain is not None:  # numbers or booleans alone: one type, no width
                if st.type != plain:
                    st.type = merge_types(st.type, plain)
                continue
            _observe_values(st, values)

    def append(self, part: StagedRecords) -> None:
        """Add a whole staged file written elsewhere (a worker process's part), then delete it."""
        try:
            with open(part.path, "rb") as src:
                shutil.copyfileobj(src, self._fh, 1 << 20)
        except OSError as exc:
            raise self._failed(exc) from None
        os.unlink(part.path)
        self.rows += part.rows
        for name, stats in part.columns.items():
            mine = self.columns.setdefault(name, ColumnStats())
            mine.type = merge_types(mine.type, stats.type)
            mine.max_bytes = max(mine.max_bytes, stats.max_bytes)

    def finish(self) -> StagedRecords:
        try:
            self._fh.close()
        except OSError as exc:
            raise self._failed(exc) from None
        return StagedRecords(self.path, self.rows, self.id_key, self.timestamp_key, self.columns)

    def discard(self) -> None:
        with contextlib.suppress(OSError):  # a full disk fails the final flush too
            self._fh.close()
        if os.path.exists(self.path):
            os.unlink(self.path)

    def _failed(self, exc: OSError) -> OSError | StagingError:
        """Drop the partial file; a full disk becomes one clear line naming the fix."""
        self.discard()
        if exc.errno not in _FULL:
            return exc
        return StagingError(
            f"staging: cannot write {self.path}: {exc.strerror or exc} after {self.rows} "
            "records; free space on that disk or point ES_MYSQL_PIPELINE_SCRATCH (scratch) "
            "and --staging-dir / STAGING_PATH at a larger one"
        )

    def __enter__(self) -> StagedFileWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None:
            self.discard()


def _json_default(value: Any) -> Any:
    """Datetimes as ISO 8601 text (the schema says which columns to parse back)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


JSON_ENCODER = json.JSONEncoder(ensure_ascii=False, default=_json_default, check_circular=False)
"""One shared encoder: ``json.dumps`` with options builds a new encoder on every call."""


def as_json_values(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with every value as JSON would carry it (a ``Decimal`` or ``set`` from a
    user's analyzer becomes text), so what the staged file keeps is what any sink can write."""
    return json.loads(JSON_ENCODER.encode(record))  # type: ignore[no-any-return,unused-ignore]


_MARSHAL_VERSION = 4
_PICKLE_PROTOCOL = 5
#: Frame header: payload length in bytes, then its codec.
_HEADER = struct.Struct("<QB")
#: A frame's codec; either holds a list of records or columns (told apart by their type).
_MARSHAL, _PICKLE = 1, 2
_not_none = partial(operator.is_not, None)
_NONE_TYPE = type(None)
