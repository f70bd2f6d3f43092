"""What every source gets from RecordSource unless it overrides it: records no window holds,
the ids of a window, no worker processes, and the one line refusing a window without a
time field. Checked on a source that only implements the abstract methods."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from es_mysql_pipeline.errors import ConfigError
from es_mysql_pipeline.records import Batch, TimeWindow
from es_mysql_pipeline.resources.sources.base import RecordSource

RECORDS: list[dict[str, Any]] = [
    {"id": "1", "ts": "2024-01-01T10:00:00Z"},
    {"id": "2", "ts": ""},
    {"id": 3, "ts": "yesterday"},
    {"id": "", "ts": "2024-01-01T11:00:00Z"},
    {"ts": "2024-01-02T00:00:00Z"},
]


class ListSource(RecordSource):
    """The records above, two to a batch; a window keeps those whose time parses into it."""

    ts: str | None = "ts"

    def read_batches(self, window: TimeWindow | None, batch_size: int) -> Iterator[Batch]:
        rows = [dict(r) for r in RECORDS]
        for i in range(0, len(rows), 2):
            yield rows[i : i + 2]

    def id_key(self) -> str:
        return "id"

    def timestamp_key(self) -> str | None:
        return self.ts

    def describe(self) -> dict[str, str]:
        return {"type": "list", "target": "list://records"}


DAY = TimeWindow.from_dates("2024-01-01", "2024-01-02")


def test_records_no_window_holds_come_with_their_reason() -> None:
    unplaced = [[(r["id"], why) for r, why in batch] for batch in ListSource().read_unplaced(2)]
    assert unplaced == [
        [("2", "no time in field 'ts': the record belongs to no partition")],
        [
            (
                3,
                "time field 'ts': not an ISO 8601 timestamp: 'yesterday': the record belongs "
                "to no partition",
            )
        ],
    ]
    assert list(ListSource(ts=None).read_unplaced(2)) == []


def test_the_ids_of_a_read_skip_records_without_one() -> None:
    assert ListSource().read_ids(None) == {"1", "2", "3"}


def test_by_default_a_source_reads_in_one_process() -> None:
    source = ListSource()
    assert source.read_parts(DAY, 100, 2) is None
    source.check()  # nothing to check by default


def test_a_window_needs_a_time_field() -> None:
    ListSource().require_timestamp(DAY)
    ListSource(ts=None).require_timestamp(None)
    with pytest.raises(ConfigError) as info:
        ListSource(ts=None).require_timestamp(DAY)
    assert str(info.value) == (
        "list://records: no time field (none configured, and none of @timestamp, timestamp, "
        "ts, time, event_time, event_timestamp, ... in the data); the run for "
        "2024-01-01T00:00:00+00:00..2024-01-02T00:00:00+00:00 needs one: set the source's "
        "time field, or run without a window to load everything"
    )
