"""Shared record vocabulary: time windows, timestamp parsing and the error marker."""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from itertools import repeat
from typing import Any, overload

Record = dict[str, Any]
Batch = list[Record]
#: Records of one shape, column by column: name → the records' values, in record order
#: (every record has exactly these keys, in this order). Staged frames hold most batches
#: this way: no dict per record to build, encode, decode and take apart again.
Columns = dict[str, Sequence[Any]]
#: A batch as a step reads or writes it: records, or the same records as columns.
Frame = Batch | Columns

#: A source sets this key on a record it could only partly read (for example a CSV row with
#: too many fields); the transform sends such records to the dead letter with the reason.
ERROR_KEY = "__error__"
#: The pipeline's own column for what does not get a column of its own: objects kept whole
#: (the ``keep_whole`` setting) and, in a SQL table, fields beyond the column budget. A JSON
#: object keyed by column name.
OVERFLOW_COLUMN = "_overflow"

#: What users write for "this data has no time field" (``--timestamp_column none``).
NO_TIMESTAMP = "none"

#: Field names taken as the event time when none is configured, most specific first.
TIMESTAMP_CANDIDATES = (
    "@timestamp", "timestamp", "ts", "time", "event_time", "event_timestamp", "eventtime",
    "datetime", "created_at", "createdat", "created", "logged_at", "occurred_at", "date",
)  # fmt: skip

_EPOCH_RE = re.compile(r"^-?\d{9,13}(\.\d+)?$")


@dataclass(frozen=True)
class TimeWindow:
    """A half-open UTC interval ``[start, end)`` on the record timestamp."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("TimeWindow bounds must be timezone-aware")
        if self.end <= self.start:
            raise ValueError(f"empty time window: {self.start} .. {self.end}")

    def __contains__(self, ts: datetime) -> bool:
        return self.start <= ts < self.end

    @classmethod
    def from_dates(cls, start: date | str, end: date | str) -> TimeWindow:
        """Whole days ``start`` through ``end - 1`` (``end`` exclusive), in UTC."""
        s = date.fromisoformat(start) if isinstance(start, str) else start
        e = date.fromisoformat(end) if isinstance(end, str) else end
        return cls(
            datetime(s.year, s.month, s.day, tzinfo=timezone.utc),
            datetime(e.year, e.month, e.day, tzinfo=timezone.utc),
        )

    def label(self) -> str:
        return f"{self.start.isoformat()}..{self.end.isoformat()}"


def detect_timestamp_field(names: Iterable[str]) -> str | None:
    """The first of :data:`TIMESTAMP_CANDIDATES` among ``names`` (case-insensitive), as spelt
    in the data; ``None`` when the data has none of them."""
    by_lower: dict[str, str] = {}
    for name in names:
        by_lower.setdefault(name.lower(), name)
    for candidate in TIMESTAMP_CANDIDATES:
        if candidate in by_lower:
            return by_lower[candidate]
    return None


def timestamp_setting(value: str | None) -> tuple[bool, str | None]:
    """``(detect, field)`` for a time-field setting: unset → detect; ``none`` → no field."""
    if value is None or not value.strip():
        return True, None
    if value.strip().lower() == NO_TIMESTAMP:
        return False, None
    return False, value


def parse_timestamp(value: Any) -> datetime:
    """Parse the timestamps real sources carry into an aware UTC datetime.

    ISO 8601 with or without offset (naive means UTC), ``YYYY-MM-DD HH:MM:SS``, a bare
    date, and epoch seconds or milliseconds (numbers or digit strings).

    Raises:
        ValueError: with a short reason when the value is not a timestamp.
    """
    if type(value) is str:  # the common case, fastest path first
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            dt = _parse_text(value)
    elif isinstance(value, datetime):
        dt = value
    elif isinstance(value, bool) or value is None:
        raise ValueError(f"not a timestamp: {value!r}")
    elif isinstance(value, (int, float)):
        dt = _from_epoch(float(value))
    else:
        raise ValueError(f"not a timestamp: {type(value).__name__}")
    if dt.tzinfo is None:
        return dt.replace(tzinfo=timezone.utc)
    if dt.tzinfo is timezone.utc:
        return dt
    try:
        return dt.astimezone(timezone.utc)
    except OverflowError:
        # 9999-12-31T23:59:59-05:00 or 0001-01-01T00:00:00+01:00: the UTC instant falls
        # outside datetime's range; a bad value for one record, never a crash of the step.
        raise ValueError(f"timestamp out of range in UTC: {str(value)[:60]!r}") from None


def _parse_text(value: str) -> datetime:
    text = value.strip()
    if not text:
        raise ValueError("empty timestamp")
    if _EPOCH_RE.match(text):
        return _from_epoch(float(text))
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO 8601 timestamp: {value[:60]!r}") from None


def iso_utc(dt: datetime) -> str:
    """The stage's timestamp text: ``YYYY-MM-DDTHH:MM:SS.ffffff+00:00`` (always microseconds,
    always UTC), so the sinks can slice it instead of parsing it."""
    return dt.astimezone(timezone.utc).isoformat(timespec="microseconds")


def utc_text(value: Any) -> str:
    """``iso_utc(parse_timestamp(value))``, with the two shapes most sources write
    (``…T….ffffffZ`` and the stage's own ``+00:00`` form, and Elasticsearch's ``…T…Z``
    and ``…T….fffZ``) sliced instead of formatted:
    ``isoformat`` is a large share of the transform's work (docs/benchmarks.md)."""
    dt = parse_timestamp(value)
    if type(value) is str and dt.tzinfo is timezone.utc and value[10:11] == "T":
        n = len(value)
        if n == 27 and value[19] == "." and value[26] in "Zz":
            return value[:26] + "+00:00"
        if n == 32 and value[19] == "." and value.endswith("+00:00"):
            return value
        if value[13:14] == ":" and value[16:17] == ":":  # extended format, as ES writes it
            if n == 20 and value[19] in "Zz":
                return value[:19] + ".000000+00:00"
            if n == 24 and value[19] == "." and value[23] in "Zz":
                return value[:23] + "000+00:00"
            if n == 19:  # no offset: UTC
                return value + ".000000+00:00"
    return iso_utc(dt)


def utc_texts(values: Sequence[Any]) -> list[str] | None:
    """:func:`utc_text` of every value of a column whose values are all text of one of the
    shapes it slices (same length, the same separators at the same places), checked and cut
    in a few passes in C, much faster than value by value. ``None`` for
    any other column (mixed shapes, other types, a value that does not parse): the caller
    goes value by value."""
    if not values or set(map(type, values)) != {str}:
        return None
    lengths = set(map(len, values))
    shape = _SLICED_SHAPES.get(lengths.pop()) if len(lengths) == 1 else None
    if shape is None:
        return None
    marks, keep, suffix = shape
    joined, width = "".join(values), len(values[0])
    if any(joined[at::width].strip(char) for at, char in marks):
        return None
    try:  # the parser parse_timestamp tries first; "Z" needs Python 3.11
        deque(map(datetime.fromisoformat, values), maxlen=0)
    except ValueError:
        return None
    if not suffix:
        return list(values)
    return [value[:keep] + suffix for value in values]


#: The shapes :func:`utc_text` slices, by length: the characters at fixed places, how much
#: of the text is kept, and what follows it.
_SLICED_SHAPES: dict[int, tuple[tuple[tuple[int, str], ...], int, str]] = {
    32: (((10, "T"), (13, ":"), (16, ":"), (19, "."), (26, "+"), (27, "0"), (28, "0"),
          (29, ":"), (30, "0"), (31, "0")), 32, ""),
    27: (((10, "T"), (13, ":"), (16, ":"), (19, "."), (26, "Z")), 26, "+00:00"),
    24: (((10, "T"), (13, ":"), (16, ":"), (19, "."), (23, "Z")), 23, "000+00:00"),
    20: (((10, "T"), (13, ":"), (16, ":"), (19, "Z")), 19, ".000000+00:00"),
    19: (((10, "T"), (13, ":"), (16, ":")), 19, ".000000+00:00"),
}  # fmt: skip


def _from_epoch(x: float) -> datetime:
    if abs(x) >= 1e11:  # milliseconds
        x /= 1000.0
    try:
        return datetime.fromtimestamp(x, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"epoch value out of range: {x!r}") from None


def rows_of(columns: Columns) -> Batch:
    """The records of ``columns``, keys in the columns' order."""
    return list(map(dict, map(zip, repeat(tuple(columns)), zip(*columns.values(), strict=True))))


def columns_of(batch: Batch) -> Columns | None:
    """``batch`` as columns when its records have one shape (the same keys in the same
    order, at least one key); otherwise ``None``."""
    if not batch or not batch[0] or len(dict.fromkeys(map(tuple, batch))) != 1:
        return None
    return dict(zip(batch[0], zip(*map(dict.values, batch), strict=True), strict=True))


def as_rows(frame: Frame) -> Batch:
    return rows_of(frame) if isinstance(frame, dict) else frame


def frame_length(frame: Frame) -> int:
    if isinstance(frame, dict):
        return len(next(iter(frame.values()), ()))
    return len(frame)


def column_values(frame: Frame, name: str) -> Sequence[Any]:
    """Every record's value of ``name`` (``None`` where a record lacks it)."""
    if isinstance(frame, dict):
        values = frame.get(name)
        return [None] * frame_length(frame) if values is None else values
    return list(map(dict.get, frame, repeat(name)))


@overload
def rebatch(batches: Iterable[Batch], size: int) -> Iterator[Batch]: ...
@overload
def rebatch(batches: Iterable[Frame], size: int) -> Iterator[Frame]: ...
def rebatch(batches: Iterable[Frame], size: int) -> Iterator[Frame]:
    """Frames of ``size`` records (the last may be shorter) from frames of any length; a
    frame already of ``size`` passes through untouched, columns staying columns (the common
    case: pages and frames are written in the batch size), so no record is handled one by
    one. Other frames are joined and cut as lists of records."""
    pending: Batch = []
    for batch in batches:
        if not pending and frame_length(batch) == size:
            yield batch
            continue
        pending.extend(as_rows(batch))
        while len(pending) >= size:
            yield pending[:size]
            del pending[:size]
    if pending:
        yield pending


def mask_secrets(text: str, secrets: Iterable[str | None]) -> str:
    """Each known secret in ``text`` as ``***``: drivers' errors may echo URLs with passwords."""
    for secret in secrets:
        if secret and len(secret) >= 3:
            text = text.replace(secret, "***")
    return text


def time_at(record: Record, ts_key: str) -> Any:
    """The record's time: under ``ts_key``, else at that dotted path (``event.created``)."""
    value = record.get(ts_key)
    if value is None and "." in ts_key:
        value = at_path(record, ts_key)
    return value


def at_path(raw: Any, dotted: str) -> Any:
    """``raw["event"]["created"]`` for ``event.created``; ``None`` when a step is missing."""
    value: Any = raw
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def unplaced_reason(record: Record, ts_key: str) -> str | None:
    """Why a record belongs to no time window (its time is missing or unreadable), or
    ``None`` when it has a time."""
    value = time_at(record, ts_key)
    if value is None or value == "":
        return f"no time in field {ts_key!r}: the record belongs to no partition"
    try:
        parse_timestamp(value)
    except ValueError as exc:
        return f"time field {ts_key!r}: {exc}: the record belongs to no partition"
    return None
