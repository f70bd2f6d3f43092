"""The transform's pure logic: flatten, select, rename, cast and validate one record."""

from __future__ import annotations

import functools
import importlib
import json
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from es_mysql_pipeline.errors import ConfigError
from es_mysql_pipeline.identifiers import (
    column_name,
    suffixed,
    time_column_name,
    validate_identifier,
)
from es_mysql_pipeline.records import (
    ERROR_KEY,
    OVERFLOW_COLUMN,
    Columns,
    Frame,
    Record,
    at_path,
    columns_of,
    iso_utc,
    parse_timestamp,
    time_at,
    utc_text,
    utc_texts,
)

CASTS = ("int", "float", "bool", "datetime", "string", "json")
_TRUE = {"1", "true", "t", "yes", "y", "on"}
_FALSE = {"0", "false", "f", "no", "n", "off", ""}


class RecordRejected(ValueError):
    """A record that cannot be loaded; the message is the dead-letter reason."""


#: Marks keys of a flat record that are not copied as data (the id and time fields).
_SKIP = "\x00"


@dataclass(frozen=True)
class FieldMapping:
    """How raw records become rows; built once per step from the transform settings.

    Every field keeps its own column (objects flattened to ``parent_child``). The id and
    time fields keep their names too unless ``id_column``/``timestamp_column`` rename them;
    a data field whose name is taken by the id, time or overflow column is stored under a
    distinct name (:func:`~es_mysql_pipeline.identifiers.suffixed`), never overwritten."""

    id_key: str
    #: ``None``: the data has no time field; rows get no time column.
    timestamp_key: str | None
    #: Column of the id field; ``None``: the field's own name (``_id`` for Elasticsearch).
    id_column: str | None = None
    #: Column of the time field (UTC); ``None``: the field's own name (``@timestamp`` →
    #: ``timestamp``, ``event.created`` → ``event_created``).
    timestamp_column: str | None = None
    #: Output columns to keep (after flatten and rename); empty keeps all.
    select: tuple[str, ...] = ()
    rename: Mapping[str, str] = field(default_factory=dict)
    casts: Mapping[str, str] = field(default_factory=dict)
    flatten: bool = True
    #: Dotted paths of objects stored whole in :data:`OVERFLOW_COLUMN` (``labels``,
    #: ``kubernetes.labels``): dynamic keys that would otherwise become ever more columns.
    keep_whole: tuple[str, ...] = ()
    #: Source key → output column, filled as keys are first seen (the hot path's cache).
    _names: dict[str, str] = field(default_factory=dict, compare=False, repr=False)
    #: Key order of a flat record → output names (``_SKIP`` for the id and time fields).
    _plans: dict[tuple[str, ...], tuple[str, ...]] = field(
        default_factory=dict, compare=False, repr=False
    )
    #: The id field's column.
    id_name: str = field(init=False, compare=False)
    #: The time field's column; ``None`` without a time field.
    ts_name: str | None = field(init=False, compare=False)
    #: Columns the pipeline fills itself: no data field may take them.
    reserved: frozenset[str] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.id_column is not None:
            validate_identifier(self.id_column, "id_column")
        if self.timestamp_column is not None:
            validate_identifier(self.timestamp_column, "timestamp_column")
        for src, dst in self.rename.items():
            validate_identifier(dst, f"rename[{src!r}]")
        for name in self.select:
            validate_identifier(name, "select")
        for name, cast in self.casts.items():
            validate_identifier(name, "casts")
            if cast not in CASTS:
                raise ConfigError(f"casts[{name!r}]={cast!r}: use one of {', '.join(CASTS)}")
        for path in self.keep_whole:
            if not path or "" in path.split("."):
                raise ConfigError(f"keep_whole: {path!r} is not a dotted field path")
        id_name = self.id_column or column_name(self.id_key)
        ts_name = None
        if self.timestamp_key is not None:
            ts_name = self.timestamp_column or time_column_name(self.timestamp_key)
        object.__setattr__(self, "id_name", id_name)
        object.__setattr__(self, "ts_name", ts_name)
        reserved = {id_name, OVERFLOW_COLUMN} | ({ts_name} if ts_name else set())
        object.__setattr__(self, "reserved", frozenset(reserved))
        if self.ts_name == self.id_name:
            raise ConfigError(
                f"the id and time fields would share column {self.id_name!r}: set id_column "
                "or timestamp_column"
            )

    @property
    def declared_types(self) -> dict[str, str]:
        """Columns whose type the mapping fixes; they hold UTC ISO 8601 text in the stage."""
        types = {name: "datetime" for name, cast in self.casts.items() if cast == "datetime"}
        if self.ts_name is not None:
            types[self.ts_name] = "datetime"
        return types

    def named_columns(self) -> dict[str, str]:
        """Output columns the settings name (``select``, ``casts``, ``rename`` targets), each
        with the setting that names it: the transform fails when one never appears in the
        data, because a typo there would otherwise silently drop or leave uncast a field."""
        named: dict[str, str] = {}
        for name in self.select:
            named[name] = "select"
        for name in self.casts:
            named.setdefault(name, f"casts[{name!r}]")
        for src, dst in self.rename.items():
            named.setdefault(dst, f"rename[{src!r}]")
        for name in self.reserved:
            named.pop(name, None)
        return named

    @staticmethod
    def unknown_columns_message(unseen: Mapping[str, str], seen: list[str]) -> str:
        """One line naming each setting whose column is not in the data, and the fix."""
        what = "; ".join(f"{setting}: column {name!r}" for name, setting in unseen.items())
        shown = ", ".join(seen[:20]) + (f" (and {len(seen) - 20} more)" if len(seen) > 20 else "")
        return (
            f"{what} not in the data (columns: {shown}); fix the name (nested fields are "
            "flattened to parent_child) or remove it from the mapping"
        )

    def apply(self, raw: Record) -> Record:
        """Map one raw record to a row or raise :class:`RecordRejected` with the reason."""
        if ERROR_KEY in raw:
            raise RecordRejected(str(raw[ERROR_KEY]))
        rid = self._record_id(raw)
        ts = self._record_time(raw)
        values = raw.values()
        if _NESTED.isdisjoint(map(type, values)):
            # Flat record (every CSV row, most documents): one C-level dict build from the
            # output names cached for this key order.
            keys = tuple(raw)
            plan = self._plans.get(keys)
            if plan is None:
                plan = self._plan(keys)
            row = dict(zip(plan, values, strict=True))
            row.pop(_SKIP, None)
        else:
            row = self._nested_row(raw)
        row[self.id_name] = rid
        if self.ts_name is not None:
            row[self.ts_name] = ts
        if self.select:
            keep = set(self.select) | self.reserved
            row = {k: v for k, v in row.items() if k in keep}
        if self.casts:
            self._cast(row)
        return row

    def _record_id(self, raw: Record) -> str:
        rid = raw.get(self.id_key)
        if rid is None or rid == "" or isinstance(rid, (dict, list, bool)):
            raise RecordRejected(f"missing or empty id field {self.id_key!r}")
        if isinstance(rid, float):
            raise RecordRejected(f"id field {self.id_key!r} is a float: {rid!r}")
        return str(rid)

    def _record_time(self, raw: Record) -> str | None:
        """``None`` without a time (only a run without a window sees such a record)."""
        ts_key = self.timestamp_key
        if ts_key is None:
            return None
        value = time_at(raw, ts_key)  # a nested field too, as a mapping names it
        if value is None or value == "":
            return None
        try:
            return utc_text(value)
        except ValueError as exc:
            raise RecordRejected(f"timestamp field {ts_key!r}: {exc}") from None

    def _cast(self, row: Record) -> None:
        for name, cast in self.casts.items():
            if name in row and row[name] is not None:
                try:
                    value = cast_value(row[name], cast)
                except (ValueError, TypeError, OverflowError) as exc:
                    raise RecordRejected(f"cast of {name!r} to {cast} failed: {exc}") from None
                if isinstance(value, datetime):
                    value = iso_utc(value)
                elif isinstance(value, (dict, list)):
                    value = json.dumps(value, ensure_ascii=False)
                row[name] = value

    def apply_columns(self, frame: Frame) -> Columns | None:
        """The rows :meth:`apply` gives, computed column by column from records or columns
        (a staged frame). Only for the common batch (every CSV batch, most JSON Lines and
        Elasticsearch ones): records of one shape, their objects too, every id and time
        valid, no casts. Otherwise ``None``: the caller maps the records one by one, and the
        bad ones get their exact reasons."""
        if not frame or self.casts:
            return None
        given = frame if isinstance(frame, dict) else columns_of(frame)
        if given is None:
            return None  # records of several shapes
        keys = tuple(given)
        columns = list(given.values())
        if ERROR_KEY in keys or self.id_key not in keys:
            return None
        if self.keep_whole and any(p[0] in keys for p in _whole_paths(self.keep_whole)):
            return None  # objects kept whole: the record path builds the overflow column
        ids = _valid_ids(columns[keys.index(self.id_key)])
        if ids is None:
            return None
        named = self._named_columns(keys, columns)
        if named is None:
            return None
        out: Columns = dict(named)
        if len(out) != len(named) or not self.reserved.isdisjoint(out):
            return None  # two fields meet in one name: the record path tells them apart
        out[self.id_name] = ids
        if self.ts_name is not None:
            times = self._time_column(keys, columns)
            if times is None:
                return None
            out[self.ts_name] = times
        if self.select:
            keep = set(self.select) | self.reserved
            out = {name: column for name, column in out.items() if name in keep}
        return out

    def _time_column(
        self, keys: tuple[str, ...], columns: list[Sequence[Any]]
    ) -> Sequence[str | None] | None:
        ts_key = str(self.timestamp_key)
        if ts_key in keys:
            values = columns[keys.index(ts_key)]
            if "." in ts_key and None in values:
                return None  # apply() looks such a record up as a path into its objects
        else:  # absent, or a path into objects (``event.created``)
            values = _column_at_path(keys, columns, ts_key)
        sliced = utc_texts(values)
        if sliced is not None:
            return sliced
        try:  # value by value, as apply() does; ``None``: one does not parse
            return [None if v is None or v == "" else utc_text(v) for v in values]
        except ValueError:
            return None

    def _named_columns(
        self, keys: tuple[str, ...], columns: list[Sequence[Any]]
    ) -> list[tuple[str, Sequence[Any]]] | None:
        """Each data column with its name, as :meth:`_nested_row` names them (the id and
        time fields left out); ``None`` when the records' objects differ in shape (their
        rows have different columns)."""
        out: list[tuple[str, Sequence[Any]]] = []
        ts_key = self.timestamp_key
        ts_nested = ts_key is not None and "." in ts_key and ts_key not in keys
        ts_joined = ts_key.replace(".", "_") if ts_nested and ts_key else None
        for key, column in zip(keys, columns, strict=True):
            if key == self.id_key or key == ts_key:
                continue
            types = set(map(type, column))
            if _NESTED.isdisjoint(types):
                out.append((self._name(key), column))
            elif dict not in types or not self.flatten or not any(column):
                if dict in types and not types <= _NESTED:
                    return None  # an object in one record, a value in another
                out.append((self._name(key), _as_json_text(column)))
            elif types == {dict} and all(column):
                flat = _flatten_columns(key, column, 0)
                if flat is None:
                    return None
                rename = self.rename
                for joined, col in flat:
                    if joined == ts_joined:
                        continue  # the time field inside its object
                    out.append((rename.get(joined) or column_name(joined), col))
            else:
                return None
        return out

    def _name(self, key: str) -> str:
        name = self._names.get(key)
        if name is None:
            name = self.rename.get(key) or column_name(key)
            if name in self.reserved:
                name = suffixed(name, key)
            self._names[key] = name
        return name

    def _plan(self, keys: tuple[str, ...]) -> tuple[str, ...]:
        if len(self._plans) >= 1024:  # records of ever-new shapes: keep the cache bounded
            self._plans.clear()
        skip = (self.id_key, self.timestamp_key)
        names: list[str] = []
        for key in keys:
            if key in skip:
                names.append(_SKIP)
                continue
            name = self._name(key)
            if name in names:  # two fields renamed alike: the later one apart
                name = suffixed(name, key)
            names.append(name)
        plan = tuple(names)
        self._plans[keys] = plan
        return plan

    def _nested_row(self, raw: Record) -> Record:
        """The general path: objects flattened to ``parent_child`` (or kept whole), arrays
        as JSON text; a name two fields would share goes to the later one with a hash."""
        rename = self.rename
        reserved = self.reserved
        ts_key = self.timestamp_key
        skip: set[tuple[str, ...]] = {(self.id_key,)}
        if ts_key is not None:
            skip.add((ts_key,) if ts_key in raw else tuple(ts_key.split(".")))
        whole = _whole_paths(self.keep_whole)
        row: Record = {}
        overflow: dict[str, Any] = {}
        for joined, path, value in _leaves(raw, self.flatten, whole):
            if path in skip:
                continue
            if len(path) == 1:
                name = self._name(joined)
            else:
                name = rename.get(joined) or column_name(joined)
                if name in reserved:
                    name = suffixed(name, "\x00".join(path))
            if path in whole:
                overflow[name] = value
                continue
            if name in row:
                name = suffixed(name, "\x00".join(path))
            row[name] = value
        if overflow:
            row[OVERFLOW_COLUMN] = overflow
        return row


@functools.lru_cache(maxsize=64)
def _whole_paths(keep_whole: tuple[str, ...]) -> frozenset[tuple[str, ...]]:
    return frozenset(tuple(path.split(".")) for path in keep_whole)


def _leaves(
    raw: Record, flatten: bool, whole: frozenset[tuple[str, ...]]
) -> list[tuple[str, tuple[str, ...], Any]]:
    """Each field of a record as (joined name, path, value): objects opened up to depth 32
    (unless kept whole), other objects and arrays as JSON text."""
    out: list[tuple[str, tuple[str, ...], Any]] = []

    def visit(joined: str, path: tuple[str, ...], value: Any) -> None:
        tp = type(value)
        if tp is dict and path in whole:
            out.append((joined, path, value))
        elif tp is dict and value and flatten and len(path) < 34:
            for key, inner in value.items():
                visit(f"{joined}_{key}", (*path, key), inner)
        elif tp is dict or tp is list:
            out.append((joined, path, _JSON_TEXT(value)))
        else:
            out.append((joined, path, value))

    for key, value in raw.items():
        visit(key, (key,), value)
    return out


_NESTED = frozenset({dict, list})
_ID_TYPES = frozenset({str, int})


def _valid_ids(values: Sequence[Any]) -> Sequence[Any] | None:
    """The ids as text, or ``None`` when one would be rejected (missing, empty, a float, a
    bool, an object)."""
    types = set(map(type, values))
    if not types <= _ID_TYPES or "" in values:
        return None
    return values if types == {str} else list(map(str, values))


def _column_at_path(keys: tuple[str, ...], columns: list[Sequence[Any]], dotted: str) -> list[Any]:
    head, _, rest = dotted.partition(".")
    if head not in keys:
        return [None] * len(columns[0])
    column = columns[keys.index(head)]
    return [at_path(value, rest) for value in column] if rest else list(column)


def _flatten_columns(
    prefix: str, column: Sequence[dict[str, Any]], depth: int
) -> list[tuple[str, Sequence[Any]]] | None:
    """:func:`_flatten` for a column of objects of one shape; ``None`` for other shapes."""
    shapes = dict.fromkeys(map(tuple, column))
    if len(shapes) != 1:
        return None
    out: list[tuple[str, Sequence[Any]]] = []
    for key in next(iter(shapes)):
        name = f"{prefix}_{key}"
        values = list(map(operator.itemgetter(key), column))
        types = set(map(type, values))
        if _NESTED.isdisjoint(types):
            out.append((name, values))
        elif types == {dict} and all(values) and depth < 32:
            inner = _flatten_columns(name, values, depth + 1)
            if inner is None:
                return None
            out.extend(inner)
        elif dict in types and depth < 32 and any(type(v) is dict and v for v in values):
            return None  # flattened in some records, JSON text in others
        else:
            out.append((name, _as_json_text(values)))
    return out


def _as_json_text(values: Sequence[Any]) -> list[Any]:
    """Objects and arrays as the JSON text :func:`_flatten` writes; other values as they are."""
    encode = _JSON_TEXT
    return [encode(v) if type(v) is dict or type(v) is list else v for v in values]


class _JsonText:
    """``json.dumps(value, ensure_ascii=False)`` for a column of values, cheaper for a
    short array: ``JSONEncoder.encode`` builds json's C encoder anew for every value;
    this builds it once (checked to write the same text, else ``encode`` it is)."""

    def __init__(self) -> None:
        self._plain = json.JSONEncoder(ensure_ascii=False)
        self._markers: dict[int, Any] = {}  # what the C encoder tracks to refuse cycles
        self._c: Callable[[Any, int], Sequence[str]] | None = None
        make = getattr(json.encoder, "c_make_encoder", None)
        if make is None:  # json without its C part (another Python)
            return
        p = self._plain
        try:
            self._c = make(self._markers, p.default, json.encoder.encode_basestring, p.indent,
                           p.key_separator, p.item_separator, p.sort_keys, p.skipkeys,
                           p.allow_nan)  # fmt: skip
            probe = [{"a": [1, 2.5, None, True, float("inf"), 'é\n"']}, "x", {}]
            if self(probe) != p.encode(probe):
                self._c = None
        except Exception:  # another signature: the public path
            self._c = None
            self._markers.clear()

    def __call__(self, value: Any) -> str:
        if self._c is None:
            return self._plain.encode(value)
        try:
            return "".join(self._c(value, 0))
        except BaseException:  # a cycle, an unknown type: json's error, and clean markers
            self._markers.clear()
            raise


_JSON_TEXT = _JsonText()


def cast_value(value: Any, cast: str) -> Any:
    """Raises ``ValueError`` with a short reason."""
    caster = _CASTERS.get(cast)
    if caster is None:
        raise ValueError(f"unknown cast {cast!r}")
    return caster(value)


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"{value!r} is not a whole number")
        return int(value)
    result = int(str(value).strip())
    if not -(2**63) <= result < 2**63:
        raise ValueError(f"{value!r} does not fit in a 64-bit integer")
    return result


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{value!r} is not a boolean")


_CASTERS: dict[str, Callable[[Any], Any]] = {
    "string": lambda v: v if isinstance(v, str) else json.dumps(v, ensure_ascii=False),
    "json": lambda v: json.loads(v) if isinstance(v, str) else v,
    "int": _to_int,
    "float": float,
    "bool": _to_bool,
    "datetime": parse_timestamp,
}


Analyzer = Callable[[Record], "Record | None"]


def load_analyzer(dotted: str) -> Analyzer:
    """Import ``package.module:function`` (or ``package.module.function``)."""
    module_name, _, attr = dotted.replace(":", ".").rpartition(".")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"analyzer={dotted!r} cannot be imported: {exc}") from None
    if not callable(fn):
        raise ConfigError(f"analyzer={dotted!r} is not callable")
    return fn
