"""The one interface every source implements: batches of raw records for a time window."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Generator, Iterator
from typing import ClassVar

import dagster as dg

from es_mysql_pipeline.errors import ConfigError
from es_mysql_pipeline.records import (
    TIMESTAMP_CANDIDATES,
    Batch,
    Record,
    TimeWindow,
    unplaced_reason,
)
from es_mysql_pipeline.staging import StagedPart


class RecordSource(dg.ConfigurableResource, ABC):
    """A source of raw records; the fetch asset is typed against this base only.

    Each record is a flat or nested ``dict``. It carries its primary key under
    :meth:`id_key` and, when the data has one, its event time under :meth:`timestamp_key`
    (the transform validates both); a record the source could only partly read carries
    :data:`es_mysql_pipeline.records.ERROR_KEY` with the reason.
    """

    @abstractmethod
    def read_batches(self, window: TimeWindow | None, batch_size: int) -> Iterator[Batch]:
        """Yield lists of at most ``batch_size`` records; ``window=None`` reads everything.

        With a window, only records whose timestamp falls in ``[start, end)`` are yielded.
        """

    def read_parts(
        self, window: TimeWindow | None, batch_size: int, processes: int
    ) -> Generator[StagedPart, None, None] | None:
        """The same records as :meth:`read_batches`, staged in parts by ``processes`` worker
        processes (0: one per core), in order; ``None`` (the default) where the source
        reads in one process. A source cuts its read into read units and hands them to
        :func:`es_mysql_pipeline.readers.engine.read_units`; closing the generator stops the
        workers and deletes their parts."""
        return None

    def read_unplaced(self, batch_size: int) -> Iterator[list[tuple[Record, str]]]:
        """Records no time window holds (their time is missing or unreadable), each with
        the reason; nothing when the data has no time field. The default reads every
        record; a source that can ask for such records directly overrides it."""
        ts_key = self.timestamp_key()
        if ts_key is None:
            return
        for batch in self.read_batches(None, batch_size):
            out = [(r, why) for r in batch if (why := unplaced_reason(r, ts_key)) is not None]
            if out:
                yield out

    def read_ids(self, window: TimeWindow | None) -> set[str]:
        """The ids of every record of ``window`` (all records when ``None``), for deletes:
        a complete read or an exception, never part of the ids. By default the records'
        ids from :meth:`read_batches`; a source with a cheaper id-only read overrides it."""
        key = self.id_key()
        ids: set[str] = set()
        for batch in self.read_batches(window, 10_000):
            ids.update(str(r[key]) for r in batch if r.get(key) not in (None, ""))
        return ids

    @abstractmethod
    def id_key(self) -> str:
        """The record key that holds the primary key."""

    @abstractmethod
    def timestamp_key(self) -> str | None:
        """The record key that holds the event time used for partitioning.

        ``None`` when the data has no time field (configured as ``none``, or none of
        :data:`~es_mysql_pipeline.records.TIMESTAMP_CANDIDATES` found): a full run loads
        such data; a windowed or partitioned run refuses it with one line.
        """

    @abstractmethod
    def describe(self) -> dict[str, str]:
        """Type and target for logs, metadata and ``/info``; never credentials."""

    #: The CLI flag and environment variable that set the time field, for error messages.
    timestamp_setting_names: ClassVar[str] = "the source's time field"

    def check(self) -> None:
        """Fail fast with a :class:`~es_mysql_pipeline.errors.ConfigError` on bad settings."""

    def require_timestamp(self, window: TimeWindow | None) -> str | None:
        """The time field; a windowed or partitioned run reads by time, so without one it is
        refused at once (instead of finding no record in any window)."""
        ts_key = self.timestamp_key()
        if window is not None and ts_key is None:
            raise self.no_time_field(window)
        return ts_key

    def no_time_field(self, window: TimeWindow) -> ConfigError:
        names = ", ".join(TIMESTAMP_CANDIDATES[:6])
        return ConfigError(
            f"{self.describe()['target']}: no time field (none configured, and none of "
            f"{names}, ... in the data); the run for {window.label()} needs one: set "
            f"{self.timestamp_setting_names}, or run without a window to load everything"
        )
