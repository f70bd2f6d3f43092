"""The transform's pure logic: flatten, select, rename, cast and validate one record."""

from __future__ import annotations

import importlib
import json
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from es_mysql_pipeline.errors import ConfigError
from es_mysql_pipeline.identifiers import column_name, validate_identifier
from es_mysql_pipeline.records import (
    ERROR_KEY,
    Batch,
    Columns,
    Frame,
    Record,
    columns_of,
    iso_utc,
    parse_timestamp,
    rows_of,
    utc_text,
    utc_texts,
)

CASTS = ("int", "float", "bool", "datetime", "string", "json")
_TRUE = {"1", "true", "t", "yes", "y", "on"}
_FALSE = {"0", "false", "f", "no", "n", "off", ""}


class RecordRejected(ValueError):
    """A record that cannot be loaded; the message is the dead-letter reason."""


@dataclass(frozen=True)
class FieldMapping:
    """How raw records become rows; built once per step from the transform settings."""

    id_key: str
    #: ``None``: the data has no time field; rows get no timestamp column.
    timestamp_key: str | None
    id_column: str = "id"
    timestamp_column: str = "timestamp"
    #: Output columns to keep (after flatten and rename); empty keeps all.
    select: tuple[str, ...] = ()
    rename: Mapping[str, str] = field(default_factory=dict)
    casts: Mapping[str, str] = field(default_factory=dict)
    flatten: bool = True
    #: Source key → output column, filled as keys are first seen (the hot path's cache).
    _names: dict[str, str] = field(default_factory=dict, compare=False, repr=False)
    #: Key order of a flat record → (output names, names of the source's key fields).
    _plans: dict[tuple[str, ...], tuple[tuple[str, ...], tuple[str, ...]]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        validate_identifier(self.id_column, "id_column")
        validate_identifier(self.timestamp_column, "timestamp_column")
        for src, dst in self.rename.items():
            validate_identifier(dst, f"rename[{src!r}]")
        for name in self.select:
            validate_identifier(name, "select")
        for name, cast in self.casts.items():
            validate_identifier(name, "casts")
            if cast not in CASTS:
                raise ConfigError(f"casts[{name!r}]={cast!r}: use one of {', '.join(CASTS)}")

    @property
    def declared_types(self) -> dict[str, str]:
        """Columns whose type the mapping fixes; they hold UTC ISO 8601 text in the stage."""
        types = {name: "datetime" for name, cast in self.casts.items() if cast == "datetime"}
        if self.timestamp_key is not None:
            types[self.timestamp_column] = "datetime"
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
        named.pop(self.id_column, None)
        named.pop(self.timestamp_column, None)
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
        rid = raw.get(self.id_key)
        if rid is None or rid == "" or isinstance(rid, (dict, list, bool)):
            raise RecordRejected(f"missing or empty id field {self.id_key!r}")
        if isinstance(rid, float):
            raise RecordRejected(f"id field {self.id_key!r} is a float: {rid!r}")
        ts_key = self.timestamp_key
        ts: str | None = None
        if ts_key is not None:
            value = raw.get(ts_key)
            if value is None and "." in ts_key:  # a nested field, as a mapping names it
                value = _at_path(raw, ts_key)
            # A record without a time is loaded with none (windowed and partitioned runs
            # never see one: the source only yields records inside the window).
            if value is not None and value != "":
                try:
                    ts = utc_text(value)
                except ValueError as exc:
                    raise RecordRejected(f"timestamp field {ts_key!r}: {exc}") from None

        values = raw.values()
        if _NESTED.isdisjoint(map(type, values)):
            # Flat record (every CSV row, most documents): one C-level dict build from the
            # output names cached for this key order.
            keys = tuple(raw)
            out = self._plans.get(keys)
            if out is None:
                out = self._plan(keys)
            row = dict(zip(out[0], values, strict=True))
            for name in out[1]:
                row.pop(name, None)
        else:
            row = self._nested_row(raw)
        row[self.id_column] = str(rid)  # the key fields win over same-named data fields
        if ts_key is not None:
            row[self.timestamp_column] = ts
        if self.select:
            keep = set(self.select) | {self.id_column, self.timestamp_column}
            row = {k: v for k, v in row.items() if k in keep}
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
        return row

    def apply_batch(self, batch: Batch) -> list[Record] | None:
        """The rows :meth:`apply` gives for each record, computed column by column.

        Only for the common batch (every CSV batch, most JSON Lines and Elasticsearch ones):
        records of one shape, their objects too, every id and time valid, no casts.
        Otherwise ``None``: the caller maps the records one by one, and the bad ones get
        their exact reasons."""
        columns = self.apply_columns(batch)
        return None if columns is None else rows_of(columns)

    def apply_columns(self, frame: Frame) -> Columns | None:
        """:meth:`apply_batch`'s rows as columns (name → the rows' values, in row order),
        from records or from columns (a staged frame), which need not become records."""
        if not frame or self.casts:
            return None
        given = frame if isinstance(frame, dict) else columns_of(frame)
        if given is None:
            return None  # records of several shapes
        keys = tuple(given)
        columns = list(given.values())
        if ERROR_KEY in keys or self.id_key not in keys:
            return None
        ids = _valid_ids(columns[keys.index(self.id_key)])
        if ids is None:
            return None
        named = self._named_columns(keys, columns)
        if named is None or len({name for name, _ in named}) != len(named):
            return None  # shapes differ inside objects, or two fields meet in one column
        out: Columns = dict(named)
        for name in map(self._name, self._key_fields()):
            out.pop(name, None)
        out[self.id_column] = ids
        ts_key = self.timestamp_key
        if ts_key is not None:
            if ts_key in keys:
                values = columns[keys.index(ts_key)]
                if "." in ts_key and None in values:
                    return None  # apply() looks such a record up as a path into its objects
            else:  # absent, or a path into objects (``event.created``)
                values = _column_at_path(keys, columns, ts_key)
            times = _utc_texts(values)
            if times is None:
                return None
            out[self.timestamp_column] = times
        if self.select:
            keep = set(self.select) | {self.id_column, self.timestamp_column}
            out = {name: column for name, column in out.items() if name in keep}
        return out

    def _named_columns(
        self, keys: tuple[str, ...], columns: list[Sequence[Any]]
    ) -> list[tuple[str, Sequence[Any]]] | None:
        """Each output column with its name, as :meth:`_nested_row` names them; ``None``
        when the records' objects differ in shape (their rows have different columns)."""
        out: list[tuple[str, Sequence[Any]]] = []
        for key, column in zip(keys, columns, strict=True):
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
                out.extend((rename.get(name) or column_name(name), col) for name, col in flat)
            else:
                return None
        return out

    def _name(self, key: str) -> str:
        name = self._names.get(key)
        if name is None:
            name = self._names[key] = self.rename.get(key) or column_name(key)
        return name

    def _plan(self, keys: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        if len(self._plans) >= 1024:  # records of ever-new shapes: keep the cache bounded
            self._plans.clear()
        plan = (tuple(map(self._name, keys)), tuple(map(self._name, self._key_fields())))
        self._plans[keys] = plan
        return plan

    def _nested_row(self, raw: Record) -> Record:
        """The general path: objects flattened to ``parent_child``, arrays as JSON text."""
        rename = self.rename
        row: Record = {}
        for key, value in raw.items():
            tp = type(value)
            if tp is dict and value and self.flatten:
                for fkey, fval in _flatten(key, value):
                    row[rename.get(fkey) or column_name(fkey)] = fval
            elif tp is dict or tp is list:
                row[self._name(key)] = json.dumps(value, ensure_ascii=False)
            else:
                row[self._name(key)] = value
        for key in self._key_fields():  # the source's key fields, renamed below
            row.pop(self._name(key), None)
        return row

    def _key_fields(self) -> tuple[str, ...]:
        if self.timestamp_key is None:
            return (self.id_key,)
        return (self.id_key, self.timestamp_key)


_NESTED = frozenset({dict, list})
_ID_TYPES = frozenset({str, int})


def _valid_ids(values: Sequence[Any]) -> Sequence[Any] | None:
    """The ids as text, or ``None`` when one would be rejected (missing, empty, a float, a
    bool, an object)."""
    types = set(map(type, values))
    if not types <= _ID_TYPES or "" in values:
        return None
    return values if types == {str} else list(map(str, values))


def _utc_texts(values: Sequence[Any]) -> Sequence[str | None] | None:
    """Each time as :func:`utc_text` gives it (``None`` for a missing or empty one), or
    ``None`` when one does not parse."""
    sliced = utc_texts(values)
    if sliced is not None:
        return sliced
    try:
        return [None if v is None or v == "" else utc_text(v) for v in values]
    except ValueError:
        return None


def _column_at_path(keys: tuple[str, ...], columns: list[Sequence[Any]], dotted: str) -> list[Any]:
    """:func:`_at_path` for every record of a frame's columns."""
    head, _, rest = dotted.partition(".")
    if head not in keys:
        return [None] * len(columns[0])
    column = columns[keys.index(head)]
    return [_at_path(value, rest) for value in column] if rest else list(column)


def _at_path(raw: Any, dotted: str) -> Any:
    """``raw["event"]["created"]`` for ``event.created``; ``None`` when a step is missing."""
    value: Any = raw
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _flatten(prefix: str, obj: dict[str, Any], depth: int = 0) -> list[tuple[str, Any]]:
    """``{"a": {"b": 1}}`` → ``[("a_b", 1)]``; arrays stay values (stored as JSON text)."""
    out: list[tuple[str, Any]] = []
    for key, value in obj.items():
        name = f"{prefix}_{key}"
        if isinstance(value, dict) and value and depth < 32:
            out.extend(_flatten(name, value, depth + 1))
        elif isinstance(value, (dict, list)):
            out.append((name, json.dumps(value, ensure_ascii=False)))
        else:
            out.append((name, value))
    return out


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
    """Cast one value; raises ``ValueError`` with a short reason."""
    if cast == "string":
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if cast == "json":
        return json.loads(value) if isinstance(value, str) else value
    if cast == "int":
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
    if cast == "float":
        return float(value)
    if cast == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(f"{value!r} is not a boolean")
    if cast == "datetime":
        return parse_timestamp(value)
    raise ValueError(f"unknown cast {cast!r}")


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
