"""An oracle for "every field survives": each leaf value of a document is found in its row.

Independent of the pipeline's naming rules: it compares the multiset of a document's leaf
values with the multiset of the row's values (its columns plus the leaves of the
``_overflow`` JSON object), each reduced to one canonical text. A value dropped, cut or
overwritten by another field changes the multiset; where a value lives is the naming
tests' business. Objects are opened to their leaves; arrays and empty objects are leaves
(stored as JSON text); the time field is compared as an instant.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

OVERFLOW = "_overflow"
_NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][+-]?\d+)?")


def leaves(value: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(path, value) of every leaf: non-empty objects are opened, anything else is a leaf."""
    if isinstance(value, dict) and value:
        for key, inner in value.items():
            yield from leaves(inner, (*path, key))
    else:
        yield path, value


def canon(value: Any) -> str | None:
    """One text per value, whatever the column type that holds it (``None``: no value)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer() and abs(value) <= 2**53:
            return str(int(value))  # 5 in a DOUBLE column comes back as 5.0
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, str):
        # an int or float written as text into a column of mixed types: canonical too
        if _NUMBER.fullmatch(value):
            return canon(json.loads(value))
        return value
    raise AssertionError(f"unexpected value type {type(value).__name__}: {value!r}")


def as_instant(value: Any) -> dt.datetime:
    """A time as the pipeline reads it (ISO 8601 text or epoch milliseconds), naive UTC."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=value)
    parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return parsed


def read_rows(url: str, table: str, key: str) -> dict[str, dict[str, Any]]:
    """Rows by ``key``, booleans as booleans (MariaDB and SQLite return 1/0)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            t = sa.Table(table, sa.MetaData(), autoload_with=conn)
            booleans = {
                c.name
                for c in t.columns
                if "BOOL" in str(c.type).upper() or str(c.type).upper().startswith("TINYINT")
            }
            times = {c.name for c in t.columns if "DATETIME" in str(c.type).upper()}
            q = engine.dialect.identifier_preparer.quote
            result = conn.exec_driver_sql(f"SELECT * FROM {q(table)}")
            rows = {}
            for r in result.mappings():
                row = {k: (bool(v) if k in booleans and v is not None else v) for k, v in r.items()}
                for k in times:  # SQLite's driver hands DATETIME back as text
                    if isinstance(row[k], str):
                        row[k] = dt.datetime.fromisoformat(row[k])
                rows[str(row[key])] = row
            return rows
    finally:
        engine.dispose()


def row_values(row: dict[str, Any], skip: set[str]) -> Counter[str]:
    values: Counter[str] = Counter()
    for name, value in row.items():
        if name in skip or value is None:
            continue
        if name == OVERFLOW:
            extra = json.loads(value) if isinstance(value, str) else value
            for _, leaf in leaves(extra):
                if leaf is not None:
                    values[canon(leaf)] += 1  # type: ignore[index]
            continue
        if isinstance(value, dt.datetime):
            values[value.isoformat()] += 1
            continue
        values[canon(value)] += 1  # type: ignore[index]
    return values


def doc_values(doc: dict[str, Any], skip: set[tuple[str, ...]]) -> Counter[str]:
    values: Counter[str] = Counter()
    for path, leaf in leaves(doc):
        if path not in skip and leaf is not None:
            values[canon(leaf)] += 1  # type: ignore[index]
    return values


def assert_every_value_survives(
    docs: dict[str, dict[str, Any]],
    rows: dict[str, dict[str, Any]],
    *,
    id_column: str,
    time_field: str | None = None,
    time_column: str | None = None,
) -> None:
    """Each document's leaf values are its row's values, exactly; its time is its instant."""
    assert set(rows) == set(docs), (sorted(set(docs) - set(rows))[:5], len(rows), len(docs))
    problems = []
    time_path = tuple(time_field.split(".")) if time_field else None
    for doc_id, doc in docs.items():
        row = rows[doc_id]
        skip_paths = {time_path} if time_path else set()
        want = doc_values(doc, skip_paths)
        got = row_values(row, {id_column, time_column} - {None})  # type: ignore[arg-type]
        if want != got:
            problems.append((doc_id, dict(want - got), dict(got - want)))
        if time_path is not None and time_column is not None:
            raw = dict(leaves(doc)).get(time_path)
            expected = None if raw is None else as_instant(raw)
            if row[time_column] != expected:
                problems.append((doc_id, time_column, row[time_column], expected))
    assert not problems, f"{len(problems)} documents differ, e.g. {problems[:3]}"
