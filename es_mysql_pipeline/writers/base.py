"""The interface every sink implements: a session per load with one writer per load thread."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from es_mysql_pipeline.records import Batch, Frame, Record
from es_mysql_pipeline.value_types import ColumnStats

#: ``refresh`` loads into a new table (file) and swaps it in whole when the load succeeds.
WriteMode = Literal["skip", "upsert", "append", "refresh"]
#: The column a soft delete stamps (UTC time of the delete); live rows have it NULL.
DELETED_AT_COLUMN = "_deleted_at"
#: What a load does with data that does not fit an existing table (dlt's schema contracts):
#: ``evolve`` adds columns and widens text columns, ``freeze`` refuses the load, ``discard``
#: drops unknown fields (and values that do not fit go to the dead letter).
SchemaContract = Literal["evolve", "freeze", "discard"]


@dataclass
class WriteCounts:
    """What happened to a batch; ``failures`` carries each failed record with its reason."""

    inserted: int = 0
    updated: int = 0
    skipped: int = 0
    failed: int = 0
    retries: int = 0
    #: Records carrying the delete marker whose row was deleted (or stamped).
    deleted: int = 0
    failures: list[tuple[Record, str]] = field(default_factory=list)

    def add(self, other: WriteCounts) -> None:
        for name in ("inserted", "updated", "skipped", "failed", "retries", "deleted"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def processed(self) -> int:
        return self.inserted + self.updated + self.skipped + self.failed + self.deleted


@dataclass(frozen=True)
class TableShape:
    """What the load knows before the first batch: columns, their types and widths."""

    id_column: str
    #: ``None`` when the rows have no time column.
    timestamp_column: str | None
    columns: dict[str, ColumnStats]
    #: ``field`` or ``field=value``: a record carrying it deletes its row instead of
    #: being loaded (see :func:`delete_marker_test`).
    delete_marker: str | None = None
    #: Deletes stamp :data:`DELETED_AT_COLUMN` instead of removing the row.
    soft_delete: bool = False


_TRUE = frozenset({"true", "1", "yes", "y", "t"})


def delete_marker_test(marker: str) -> Callable[[Record], bool]:
    """Whether a record carries ``marker``: ``deleted`` (the field is true: ``true``,
    ``1``, ``yes``) or ``status=deleted`` (the field's text equals the value)."""
    name, sep, value = marker.partition("=")
    name = name.strip()
    if sep:
        want = value.strip()
        return lambda record: record.get(name) is not None and str(record[name]) == want

    def truthy(record: Record) -> bool:
        v = record.get(name)
        if isinstance(v, bool):
            return v
        if isinstance(v, (int, float)):
            return v != 0
        return isinstance(v, str) and v.strip().lower() in _TRUE

    return truthy


@dataclass
class SchemaReport:
    """What preparing the target did to fit the data, for logs, metadata and metrics."""

    #: DDL run, one line each: ``CREATE TABLE ...``, ``ALTER TABLE ... ADD COLUMN ...``.
    changes: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    widened: list[str] = field(default_factory=list)
    #: Data fields left out of the load (``discard``).
    discarded: list[str] = field(default_factory=list)
    #: Field → column for every field loaded into a column of its own.
    plan: dict[str, str] = field(default_factory=dict)
    #: Field → column where they differ: a case variant of a taken name (``userId`` beside
    #: ``userid``) gets a column of its own with a hash suffix.
    renamed: dict[str, str] = field(default_factory=dict)
    #: Fields beyond the column budget, stored in the overflow column's JSON object.
    overflowed: list[str] = field(default_factory=list)
    #: The target's columns and types after preparing it (for ``dagster/column_schema``).
    columns: list[tuple[str, str]] = field(default_factory=list)


class SinkWriter(ABC):
    """Writes batches on one connection; used by exactly one worker thread."""

    @abstractmethod
    def write(self, batch: Batch) -> WriteCounts:
        """Write a batch as one transaction, isolating bad records when it is refused."""

    def write_encoded(self, path: str, rows: int, records: Callable[[], Batch]) -> WriteCounts:
        """Write a file the session's :meth:`SinkSession.encoder` made of ``rows`` records;
        ``records()`` gives them back when the file is refused, to isolate the bad ones."""
        raise NotImplementedError(f"{type(self).__name__} has no encoder")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the connection."""


class SinkSession(ABC):
    """One load of one partition (or a whole CLI run)."""

    @abstractmethod
    def writer(self) -> SinkWriter:
        """A writer for one worker thread."""

    def commit(self) -> None:  # noqa: B027 - optional hook
        """Make the load visible (a file sink renames its temporary file here)."""

    def abort(self) -> None:  # noqa: B027 - optional hook
        """Drop what is not yet visible."""

    def schema_report(self) -> SchemaReport:
        """What was done to the target's schema for this load (nothing by default)."""
        return SchemaReport()

    def encoder(self) -> BatchEncoder | None:
        """What turns a batch into a file this sink loads whole, if it has such a format;
        the load engine runs it in a worker process ahead of the writers."""
        return None


class BatchEncoder(Protocol):
    """Picklable: ``encode(frames)`` writes the frames, in order, as one new file and returns
    its path. Each frame is a staged one: records, or records of one shape as columns (see
    ``records.Frame``)."""

    @property
    def min_rows(self) -> int:
        """Records a file should hold at least, when the sink takes big files faster than
        batch-sized ones (the load then joins batches); 0: a file per batch."""
        ...

    def encode(self, frames: Iterable[Frame]) -> str: ...


class Sink(Protocol):
    """What the load engine needs of a sink (``resources.sinks.base.RecordSink`` is one)."""

    batch_size: int
    workers: int

    def open_session(self, shape: TableShape, partition: str | None) -> SinkSession: ...
