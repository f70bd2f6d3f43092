"""Elasticsearch documents for end-to-end tests, and the exact MariaDB rows they must become.

The expected rows are derived here independently of the pipeline's transform: nested objects
flatten to ``parent_child`` columns (a name that is not a plain identifier, like
``http-status``, gets its hash suffix: ``column_name``), arrays (and empty objects) are JSON
text, ``_id`` is ``_id`` and the time field (``@timestamp`` unless told) is a naive UTC
value in its own column (``@timestamp`` → ``timestamp``, ``event.created`` →
``event_created``); a field a document lacks is NULL. Documents may carry their time
under another name, or none at all.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from es_mysql_pipeline.identifiers import column_name, time_column_name

DAY0 = dt.datetime(2024, 3, 1, tzinfo=dt.timezone.utc)
DAYS = 5
Doc = tuple[str, dict[str, Any]]

#: strings a loader tends to mangle: SQL/CSV/LOAD DATA specials, control and 4-byte characters
TRICKY = [
    "NULL",
    "\\N",
    "",
    " leading and trailing ",
    "tab\there, newline\nthere, cr\r, backslash \\ and quote ' \" `",
    "comma, semicolon; pipe |",
    "emoji 😀🚀 and 𝄞, combining é (e\u0301), zero\u200bwidth",
    "RTL: שלום عربى",
    "日本語のテキストと中文",
    "nul\x00byte",
]


def day(n: int) -> str:
    """``YYYY-MM-DD`` of day ``n`` of the data set (0-based)."""
    return (DAY0 + dt.timedelta(days=n)).strftime("%Y-%m-%d")


def _timestamp(i: int, ts: dt.datetime) -> Any:
    """Formats ES accepts for a date field, rotated: Z, micro/milliseconds, offsets, epoch ms."""
    kind = i % 5
    if kind == 0:
        return ts.strftime("%Y-%m-%dT%H:%M:%SZ")
    if kind == 1:
        return ts.replace(microsecond=(i * 37) % 1_000_000).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if kind == 2:
        return ts.astimezone(dt.timezone(dt.timedelta(hours=2))).isoformat()
    if kind == 3:
        return int(ts.timestamp() * 1000) + i % 1000  # epoch milliseconds (a number)
    return ts.astimezone(dt.timezone(dt.timedelta(hours=-5, minutes=-30))).isoformat(
        timespec="milliseconds"
    )


def make_docs(n: int, prefix: str = "doc", time_field: str | None = "@timestamp") -> list[Doc]:
    """``n`` documents over five days: nested objects, arrays, unicode, missing fields.

    ``time_field`` names the event-time field (``event_time``, ``event.created`` for a
    nested one); ``None`` makes documents without any time (no date field at all).
    """
    docs: list[Doc] = []
    span = DAYS * 86_400
    for i in range(n):
        ts = DAY0 + dt.timedelta(seconds=(i * 7919) % span)
        src: dict[str, Any] = {
            "@timestamp": _timestamp(i, ts),
            "message": f"event {i} — naïve café ☕ 日本語 {'𝄞' if i % 3 == 0 else ''}",
            "level": ["info", "warn", "error"][i % 3],
            "count": i - 7_000,
            "ratio": i / 8,
            "ok": i % 4 == 0,
            "user": {
                "id": i % 97,
                "name": f"user-{i % 97}",
                "geo": {"country": "DE", "city": ["Köln", "München", "Zürich"][i % 3]},
            },
            "http": {"request": {"method": ["GET", "POST"][i % 2], "bytes": i * 13}},
            "http-status": [200, 404, 500][i % 3],
            "tags": [f"t{i % 5}", f"t{i % 7}"],
        }
        if i % 11 == 0:
            del src["user"]  # a missing nested object: all its columns NULL
        elif i % 23 == 0:
            del src["user"]["geo"]
        if i % 13 == 0:
            src["tags"] = []
        if i % 17 == 0:
            src["score"] = None
        if i % 19 == 0:
            src["items"] = [{"sku": f"s{i}", "qty": 1}, {"sku": "ü", "qty": [2, 3]}]
        if i % 29 == 0:
            src["extra"] = {}  # an empty object is a JSON value, not flattened
        if i % 31 == 0:
            src["message"] = TRICKY[(i // 31) % len(TRICKY)]
        if i % 5000 == 3:
            src["count"] = 2**63 - 1 - i
            src["blob"] = "ß" * 40_000  # 80,000 UTF-8 bytes: more than TEXT holds
        if i % 997 == 0:
            del src["@timestamp"]  # belongs to no day: a full run dead-letters it
        if i % 1000 == 1:
            # exactly on a day boundary: belongs to the later day only
            src["@timestamp"] = (DAY0 + dt.timedelta(days=i % DAYS)).strftime(
                "%Y-%m-%dT%H:%M:%S.000Z"
            )
        _move_time(src, time_field)
        doc_id = f"{prefix}-{i:05d}"
        if i % 2500 == 7:
            doc_id = f"{prefix}-Ünï-ид-{i}"
        elif i % 2500 == 8:
            doc_id = f"{prefix.upper()}-{i:05d}"  # ids are case-sensitive
        docs.append((doc_id, src))
    return docs


def _move_time(src: dict[str, Any], time_field: str | None) -> None:
    """Put the ``@timestamp`` value under ``time_field`` (dotted: nested), or drop it."""
    if time_field == "@timestamp":
        return
    value = src.pop("@timestamp", _ABSENT)
    if time_field is None or value is _ABSENT:
        return
    *parents, leaf = time_field.split(".")
    obj = src
    for part in parents:
        obj = obj.setdefault(part, {})
    obj[leaf] = value


_ABSENT = object()


def time_of(src: dict[str, Any], time_field: str = "@timestamp") -> Any:
    """The raw time value at ``time_field`` (dotted: nested), or None."""
    value: Any = src
    for part in time_field.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def parse_es_time(value: Any) -> dt.datetime:
    """An ES date value (ISO 8601 text or epoch milliseconds) as aware UTC."""
    if isinstance(value, int):
        return dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(milliseconds=value)
    parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed.astimezone(dt.timezone.utc)


@dataclass(frozen=True)
class Json:
    """A column holding JSON text: compared after parsing, not byte for byte."""

    value: Any


def _columns(prefix: str, value: Any) -> Iterable[tuple[str, Any]]:
    if isinstance(value, dict) and value:
        for key, sub in value.items():
            yield from _columns(f"{prefix}_{key}", sub)
    elif isinstance(value, (dict, list)):
        yield column_name(prefix), Json(value)
    elif isinstance(value, bool):
        yield column_name(prefix), int(value)  # MariaDB BOOLEAN is TINYINT(1)
    else:
        yield column_name(prefix), value


def expected_rows(
    docs: Iterable[Doc],
    days: set[str] | None = None,
    *,
    time_field: str | None = "@timestamp",
    untimed: bool = False,
) -> dict[str, dict[str, Any]]:
    """Rows by id for the documents with a timestamp (on ``days`` if given).

    ``untimed=True``: a full load keeps documents without a time too, their ``timestamp``
    NULL. ``time_field=None``: the data has no time field; no ``timestamp`` column at all.
    A nested ``time_field`` (``event.created``) leaves its parent's other fields as columns.
    """
    out: dict[str, dict[str, Any]] = {}
    for doc_id, src in docs:
        row: dict[str, Any] = {"_id": doc_id}
        if time_field is not None:
            raw = time_of(src, time_field)
            if raw is None and not untimed:
                continue
            ts = parse_es_time(raw) if raw is not None else None
            if days is not None and (ts is None or ts.strftime("%Y-%m-%d") not in days):
                continue
            row[time_column_name(time_field)] = ts.replace(tzinfo=None) if ts is not None else None
        for key, value in _without(src, time_field).items():
            row.update(_columns(key, value))
        out[doc_id] = row
    return out


def _without(src: dict[str, Any], time_field: str | None) -> dict[str, Any]:
    """``src`` without the time field (a nested one removed from its copied parents)."""
    if time_field is None:
        return src
    head, _, rest = time_field.partition(".")
    if not rest or not isinstance(src.get(head), dict):
        return {k: v for k, v in src.items() if k != time_field}
    inner = _without(src[head], rest)
    return {**src, head: inner} if inner else {k: v for k, v in src.items() if k != head}


def untimed_ids(docs: Iterable[Doc], time_field: str = "@timestamp") -> set[str]:
    return {doc_id for doc_id, src in docs if time_of(src, time_field) is None}


def read_table(url: str, table: str) -> tuple[dict[str, sa.types.TypeEngine[Any]], list[Any]]:
    """Column types and all rows (as mappings) of ``table``."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            t = sa.Table(table, sa.MetaData(), autoload_with=conn)
            # the driver's own values (reflected DOUBLE would come back as Decimal)
            result = conn.exec_driver_sql(f"SELECT * FROM `{table}`")
            rows = [dict(r._mapping) for r in result]
        return {c.name: c.type for c in t.columns}, rows
    finally:
        engine.dispose()


def assert_table_equals(url: str, table: str, expected: dict[str, dict[str, Any]]) -> None:
    """The table holds exactly the expected rows, column by column, and nothing else."""
    types, rows = read_table(url, table)
    want_columns = {col for row in expected.values() for col in row}
    assert set(types) == want_columns, sorted(set(types) ^ want_columns)
    for col in want_columns:
        if any(isinstance(row.get(col), dt.datetime) for row in expected.values()):
            assert str(types[col]) == "DATETIME", types[col]
            assert getattr(types[col], "fsp", None) == 6
    ids = [r["_id"] for r in rows]
    assert len(ids) == len(set(ids)), "duplicate ids in the table"
    missing, extra = sorted(set(expected) - set(ids)), sorted(set(ids) - set(expected))
    assert not missing and not extra, f"missing {missing[:5]}, extra {extra[:5]}"
    problems = []
    for row in rows:
        want = expected[row["_id"]]
        for col in want_columns:
            got, exp = row[col], want.get(col)
            if isinstance(exp, Json):
                ok = isinstance(got, str) and json.loads(got) == exp.value
            else:
                ok = got == exp and type(got) is type(exp)  # 1 is not 1.0, "1" is not 1
            if not ok:
                problems.append((row["_id"], col, got, exp))
    assert not problems, f"{len(problems)} cells differ, e.g. {problems[:5]}"
