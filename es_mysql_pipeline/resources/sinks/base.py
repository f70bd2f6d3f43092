"""The Dagster resource every sink is: settings, and the writers' sessions (``writers/``)."""

from __future__ import annotations

from abc import ABC, abstractmethod

import dagster as dg

from es_mysql_pipeline.records import TimeWindow
from es_mysql_pipeline.writers.base import SinkSession, TableShape, WriteMode


class RecordSink(dg.ConfigurableResource, ABC):
    """A destination for rows; the load asset is typed against this base only."""

    #: ``skip`` keeps an existing row (the duplicate is counted as skipped), ``upsert``
    #: updates it, ``append`` inserts every record.
    write_mode: WriteMode = "skip"
    batch_size: int = 1000
    workers: int = 2

    @abstractmethod
    def open_session(self, shape: TableShape, partition: str | None) -> SinkSession:
        """Prepare the target (create or check the table) and start a load."""

    @abstractmethod
    def count_rows(
        self, shape: TableShape, window: TimeWindow | None, partition: str | None
    ) -> int:
        """Rows in the sink for a partition, for the reconciliation check."""

    @abstractmethod
    def describe(self) -> dict[str, str]:
        """Type and target for logs, metadata and ``/info``; never credentials."""

    def check(self) -> None:
        """Fail fast with a :class:`~es_mysql_pipeline.errors.ConfigError` on bad settings."""

    def delete_missing(
        self, shape: TableShape, window: TimeWindow | None, source_ids: set[str]
    ) -> int:
        """Delete (or, with ``shape.soft_delete``, stamp) the rows of ``window`` (all rows
        when ``None``) whose id is not in ``source_ids``, a complete read of the source's
        ids for that window; the rows touched."""
        raise NotImplementedError(f"{type(self).__name__} does not delete rows")
