"""Staged record files: how records travel between steps without living in memory.

A staged file is frames, one per written batch, each a 9-byte header (the payload's length
and codec, so a range of frames can go to another process) and the batch; its ``.meta.json``
sidecar is written last, so a file without one (a killed run) is never taken as complete.
A batch of records of one shape is stored as columns (name → values), which encode and
decode faster than a list of dicts and are what the later steps work on anyway
(docs/benchmarks.md); other batches as records. Frames are ``marshal`` (faster than pickle
for JSON-shaped values); a batch holding anything else (a user's analyzer may return any
object) is pickled, so every value keeps its type. The files are the pipeline's own
scratch data, written and read by the same Python release. :class:`StagedRecords` is what
the IO manager stores: a path, a row count and the column schema, never the rows.
"""

from __future__ import annotations

import contextlib
import errno
import marshal
import os
import pickle
import shutil
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import IO, Any

from upath import UPath

from es_mysql_pipeline.errors import PipelineError
from es_mysql_pipeline.records import (
    Batch,
    Frame,
    as_rows,
    columns_of,
    frame_length,
    rebatch,
)
from es_mysql_pipeline.value_types import ColumnStats, merge_types, observe

META_SUFFIX = ".meta.json"
STAGED_FILE_SUFFIX = ".stage"

#: Write errors that mean "the staging disk is full" (no space, quota, file size limit).
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class StagingError(PipelineError):
    """Staged data could not be written (disk full, quota, file size limit)."""


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
            observe(self.columns, stored, self._declared)
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


_MARSHAL_VERSION = 4
_PICKLE_PROTOCOL = 5
#: Frame header: payload length in bytes, then its codec.
_HEADER = struct.Struct("<QB")
#: A frame's codec; either holds a list of records or columns (told apart by their type).
_MARSHAL, _PICKLE = 1, 2
