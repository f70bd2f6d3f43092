"""Search semantics: slices, sort and search_after, source filtering, the query subset."""

from __future__ import annotations

import bisect
import fnmatch
import re
import zlib
from collections.abc import Callable, Sequence
from itertools import accumulate
from typing import Any, overload

from es_mysql_pipeline_tests.es_server.errors import EsError, _search_phase_error
from es_mysql_pipeline_tests.es_server.mapping import _field_values, _parse_date
from es_mysql_pipeline_tests.es_server.store import _Doc, _ShardSnap

#: A search match: its sort key, the document and the name of its index.
_Match = tuple[tuple[Any, ...], _Doc, str]


class _ShardDocOrder(Sequence[_Match]):
    """The matches of a ``_shard_doc`` sort as a view of the shards' document lists, which
    are in that order already: a sliced point-in-time read's first page then costs no tuple
    per document, as in Lucene, which walks its segments in doc order."""

    def __init__(self, parts: list[tuple[int, Sequence[_Doc], str]]) -> None:
        #: per shard: its ``_shard_doc`` base, its matching documents and its index
        self._parts = parts
        self._starts = list(accumulate((len(docs) for _, docs, _ in parts), initial=0))

    def __len__(self) -> int:
        return self._starts[-1]

    @overload
    def __getitem__(self, i: int) -> _Match: ...
    @overload
    def __getitem__(self, i: slice) -> list[_Match]: ...
    def __getitem__(self, i: int | slice) -> _Match | list[_Match]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        part = bisect.bisect_right(self._starts, i) - 1
        base, docs, index = self._parts[part]
        doc = docs[i - self._starts[part]]
        return ((0, base | doc.seq),), doc, index

    def keys(self) -> Sequence[tuple[Any, ...]]:
        """The sort keys, for ``search_after``'s bisection."""
        return _Keys(self)


class _Keys(Sequence[tuple[Any, ...]]):
    def __init__(self, matches: Sequence[_Match]) -> None:
        self._matches = matches

    def __len__(self) -> int:
        return len(self._matches)

    @overload
    def __getitem__(self, i: int) -> tuple[Any, ...]: ...
    @overload
    def __getitem__(self, i: slice) -> list[tuple[Any, ...]]: ...
    def __getitem__(self, i: int | slice) -> tuple[Any, ...] | list[tuple[Any, ...]]:
        if isinstance(i, slice):
            return [m[0] for m in self._matches[i]]
        return self._matches[i][0]


def _shards(n: int) -> dict[str, int]:
    return {"total": n, "successful": n, "skipped": 0, "failed": 0}


def _in_slice(snap: _ShardSnap, doc: _Doc, slice_: dict[str, Any]) -> bool:
    """Shard-level slicing when ``max <= shards``, else docs split within each shard."""
    sid, smax = int(slice_["id"]), int(slice_["max"])
    n = snap.nshards
    if smax <= n:
        return snap.shard % smax == sid
    if sid % n != snap.shard:
        return False
    per_shard = len(range(snap.shard, smax, n))
    return snap.shard + n * (zlib.crc32(doc.doc_id.encode()) % per_shard) == sid


def _parse_sort(sort: Any) -> list[tuple[str, str]]:
    if sort is None:
        return []
    items = sort if isinstance(sort, list) else [sort]
    out: list[tuple[str, str]] = []
    for item in items:
        if isinstance(item, str):
            name, _, order = item.partition(":")
            out.append((name, order or ("desc" if name == "_score" else "asc")))
        elif isinstance(item, dict) and len(item) == 1:
            name, spec = next(iter(item.items()))
            order = spec.get("order", "asc") if isinstance(spec, dict) else spec
            if order not in ("asc", "desc"):
                raise EsError(400, "illegal_argument_exception",
                              f"Unknown SortOrder [{order}]")  # fmt: skip
            out.append((name, order))
        else:
            raise EsError(
                400,
                "parsing_exception",
                "malformed sort format, within the sort array, an object, or an actual string "
                f"are allowed [{item}]",
            )
    return out


_MISSING = object()


def _sort_value(spec: tuple[str, str], doc: _Doc, shard_doc: int) -> Any:
    name = spec[0]
    if name in ("_shard_doc", "_doc"):
        return shard_doc if name == "_shard_doc" else doc.seq
    if name == "_score":
        return 1.0
    values = _field_values(doc.source, name)
    if not values:
        return None
    dates = [_parse_date(v) for v in values if not isinstance(v, (int, float))]
    if dates and all(d is not None for d in dates):
        millis = [int(d.timestamp() * 1000) for d in dates if d is not None]
        return min(millis) if spec[1] == "asc" else max(millis)
    plain = [v for v in values if isinstance(v, (int, float, str))]
    try:
        return min(plain) if spec[1] == "asc" else max(plain)
    except (TypeError, ValueError):
        return str(plain[0]) if plain else None


class _Rev:
    """Reverses ordering for ``desc`` sort keys."""

    __slots__ = ("v",)

    def __init__(self, v: Any) -> None:
        self.v = v

    def __lt__(self, other: _Rev) -> bool:
        return bool(other.v < self.v)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Rev) and self.v == other.v


def _sort_key(sort: list[tuple[str, str]], values: list[Any]) -> tuple[Any, ...]:
    """Missing values sort last in both directions, as ES does by default."""
    key: list[Any] = []
    for (_, order), value in zip(sort, values, strict=True):
        present = value is not None
        if order == "desc":
            key.append((0, _Rev(value)) if present else (1, 0))
        else:
            key.append((0, value) if present else (1, 0))
    return tuple(key)


def _unsort(spec: tuple[str, str], part: Any) -> Any:
    value = part[1]
    if part[0] == 1:
        return None
    return value.v if isinstance(value, _Rev) else value


def _after_value(v: Any) -> Any:
    if isinstance(v, str) and re.fullmatch(r"-?\d+", v):
        return int(v)
    return v


def _source_filter(source: Any, params: dict[str, str]) -> tuple[list[str] | None, list[str]]:
    """``(includes, excludes)``: ``None`` includes all, ``[]`` means no ``_source`` at all."""
    includes: list[str] | None = None
    excludes: list[str] = []
    if source is False or params.get("_source") == "false":
        return [], []
    if isinstance(source, str):
        includes = [source]
    elif isinstance(source, list):
        includes = list(source)
    elif isinstance(source, dict):
        for key in source:
            if key not in ("includes", "include", "excludes", "exclude"):
                raise EsError(
                    400, "parsing_exception", f"Unknown key for a START_ARRAY in [{key}]."
                )
        inc = source.get("includes", source.get("include"))
        if inc is not None:
            includes = [inc] if isinstance(inc, str) else list(inc)
        exc = source.get("excludes", source.get("exclude"))
        if exc is not None:
            excludes = [exc] if isinstance(exc, str) else list(exc)
    if "_source_includes" in params:
        includes = params["_source_includes"].split(",")
    if "_source_excludes" in params:
        excludes = params["_source_excludes"].split(",")
    return (includes if includes else None), excludes


def _filter_source(obj: dict[str, Any], includes: list[str], excludes: list[str]) -> dict[str, Any]:
    def matches(path: str, patterns: list[str]) -> bool:
        return any(fnmatch.fnmatchcase(path, p) or path.startswith(p + ".") for p in patterns)

    def could_contain(path: str) -> bool:
        return any(p.startswith(path + ".") or "*" in p for p in includes)

    def walk(value: Any, prefix: str, included: bool) -> Any:
        if isinstance(value, list):
            kept = [walk(v, prefix, included) for v in value]
            return [v for v in kept if v is not _MISSING]
        if not isinstance(value, dict):
            return value if included else _MISSING
        out: dict[str, Any] = {}
        for key, sub in value.items():
            path = f"{prefix}{key}"
            if excludes and matches(path, excludes):
                continue
            inc = included or not includes or matches(path, includes)
            if not inc and not (isinstance(sub, (dict, list)) and could_contain(path)):
                continue
            kept = walk(sub, path + ".", inc)
            if kept is _MISSING or (not inc and kept in ({}, [])):
                continue
            out[key] = kept
        return out

    result = walk(obj, "", not includes)
    return result if isinstance(result, dict) else {}


_QUERY_TYPES = {
    "match_all",
    "match_none",
    "bool",
    "range",
    "term",
    "terms",
    "exists",
    "ids",
    "match",
}


def _validate_query(query: Any) -> None:
    if not isinstance(query, dict) or len(query) != 1:
        raise EsError(
            400,
            "parsing_exception",
            "[_na] query malformed, must start with start_object"
            if not isinstance(query, dict)
            else "[_na] query malformed, no start_object after query name",
        )
    name, spec = next(iter(query.items()))
    if name not in _QUERY_TYPES:
        err = EsError(
            400, "parsing_exception", f"unknown query [{name}]", line=1, col=len(name) + 13
        )
        err.body["error"]["caused_by"] = {
            "type": "named_object_not_found_exception",
            "reason": f"[1:{len(name) + 13}] unknown field [{name}]",
        }
        raise err
    if name == "bool":
        for key, clauses in spec.items():
            if key in ("minimum_should_match", "boost"):
                continue
            if key not in ("filter", "must", "must_not", "should"):
                raise EsError(400, "parsing_exception", f"[bool] query does not support [{key}]")
            for clause in clauses if isinstance(clauses, list) else [clauses]:
                _validate_query(clause)
    elif name == "range":
        for bounds in spec.values():
            for key in bounds:
                if key not in ("gte", "gt", "lte", "lt", "format", "time_zone", "boost"):
                    raise EsError(
                        400, "parsing_exception", f"[range] query does not support [{key}]"
                    )
            if "format" in bounds and bounds["format"] not in (
                "strict_date_optional_time", "date_optional_time", "epoch_millis",
                "strict_date_optional_time||epoch_millis",
            ):  # fmt: skip
                raise EsError(
                    400, "illegal_argument_exception", f"Invalid format: [{bounds['format']}]"
                )
            for key in ("gte", "gt", "lte", "lt"):
                if (
                    key in bounds
                    and isinstance(bounds[key], str)
                    and _parse_date(bounds[key]) is None
                ):
                    try:
                        float(bounds[key])
                    except ValueError:
                        raise _search_phase_error(
                            400,
                            "parse_exception",
                            f"failed to parse date field [{bounds[key]}] with format "
                            f"[{bounds.get('format', 'strict_date_optional_time||epoch_millis')}]",
                        ) from None


def _matches(query: dict[str, Any], doc: _Doc) -> bool:
    name, spec = next(iter(query.items()))
    src = doc.source
    if name == "match_all":
        return True
    if name == "match_none":
        return False
    if name == "bool":

        def clauses(key: str) -> list[dict[str, Any]]:
            c = spec.get(key, [])
            return c if isinstance(c, list) else [c]

        if not all(_matches(q, doc) for q in clauses("filter") + clauses("must")):
            return False
        if any(_matches(q, doc) for q in clauses("must_not")):
            return False
        should = clauses("should")
        if should:
            default = 0 if clauses("filter") or clauses("must") else 1
            need = int(spec.get("minimum_should_match", default))
            return sum(_matches(q, doc) for q in should) >= need
        return True
    if name == "ids":
        return doc.doc_id in spec.get("values", [])
    if name == "exists":
        return bool(_field_values(src, spec["field"]))
    if name in ("term", "match"):
        fname, value = next(iter(spec.items()))
        if isinstance(value, dict):
            value = value.get("value", value.get("query"))
        return any(_eq(v, value) for v in _field_values(src, fname))
    if name == "terms":
        fname, values = next((k, v) for k, v in spec.items() if k != "boost")
        return any(_eq(v, w) for v in _field_values(src, fname) for w in values)
    if name == "range":
        fname, bounds = next(iter(spec.items()))
        return any(_in_range(v, bounds) for v in _field_values(src, fname))
    return False


def _eq(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, str):
        try:
            return float(a) == float(b)
        except ValueError:
            return False
    return bool(a == b) or (isinstance(a, bool) and str(a).lower() == str(b).lower())


def _in_range(value: Any, bounds: dict[str, Any]) -> bool:
    checks: list[tuple[str, Callable[[Any, Any], bool]]] = [
        ("gte", lambda x, y: x >= y), ("gt", lambda x, y: x > y),
        ("lte", lambda x, y: x <= y), ("lt", lambda x, y: x < y),
    ]  # fmt: skip
    for key, op in checks:
        if key not in bounds or bounds[key] is None:
            continue
        bound = bounds[key]
        left: Any
        right: Any
        if isinstance(bound, str) and _parse_date(bound) is not None:
            left, right = _parse_date(value), _parse_date(bound)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            left, right = value, float(bound)
        else:
            left, right = str(value), str(bound)
        if left is None or right is None:
            return False
        try:
            if not op(left, right):
                return False
        except TypeError:
            return False
    return True
