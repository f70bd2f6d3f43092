"""Dynamic mapping and date parsing: how the test server types fields like real ES."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

from es_mysql_pipeline_tests.es_server.errors import EsError

#: ``strict_date_optional_time`` (the first default of ``dynamic_date_formats``), and the
#: second default ``yyyy/MM/dd HH:mm:ss Z||yyyy/MM/dd Z``: the strings dynamic mapping
#: takes for dates.
_STRICT_DATE_RE = re.compile(
    r"\d{4}-\d{2}-\d{2}(T\d{2}(:\d{2}(:\d{2}([.,]\d{1,9})?)?)?(Z|[+-]\d{2}(:?\d{2})?)?)?"
)
_SLASH_DATE_RE = re.compile(r"\d{4}/\d{2}/\d{2}( \d{2}:\d{2}:\d{2})? [+-]\d{4}")
_DEFAULT_DATE_FORMATS = ["strict_date_optional_time", "yyyy/MM/dd HH:mm:ss Z||yyyy/MM/dd Z"]


def _parse_time_value(text: str) -> float:
    """ES time units (``30s``, ``2m``, ``1h``, ``500ms``, ``1d``) in seconds."""
    m = re.fullmatch(r"(\d+)(nanos|micros|ms|s|m|h|d)", text or "")
    if not m:
        raise EsError(
            400,
            "illegal_argument_exception",
            f"failed to parse setting [keep_alive] with value [{text}] as a time value: "
            "unit is missing or unrecognized",
        )
    n = int(m.group(1))
    scale = {"nanos": 1e-9, "micros": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}
    return n * scale[m.group(2)]


def _parse_date(value: Any) -> datetime | None:
    """A date field's value as ES reads it: ISO 8601 string or epoch milliseconds."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value / 1000.0, tz=timezone.utc)
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"-?\d+", text):
            return datetime.fromtimestamp(int(text) / 1000.0, tz=timezone.utc)
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            return None
        return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)
    return None


def _dynamic_type(value: Any, formats: list[str]) -> dict[str, Any] | None:
    """The mapping ES's dynamic mapping gives a new field's first (non-null) value."""
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "long"}
    if isinstance(value, float):
        return {"type": "float"}
    if isinstance(value, str):
        if _is_dynamic_date(value, formats):
            return {"type": "date"}
        return {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}}
    return None


def _is_dynamic_date(value: str, formats: list[str]) -> bool:
    for fmt in formats:
        if fmt in ("strict_date_optional_time", "date_optional_time"):
            if _STRICT_DATE_RE.fullmatch(value) and _parse_date(value) is not None:
                return True
        elif fmt.startswith("yyyy/MM/dd") and _SLASH_DATE_RE.fullmatch(value):
            return True
    return False


def _map_object(props: dict[str, Any], obj: dict[str, Any], formats: list[str]) -> None:
    # Inlined checks: seeding a million documents must not spend its time here.
    for key, value in obj.items():
        tp = type(value)
        if tp is dict:
            _map_field(props, key, value, formats)
        elif tp is list:  # an array is mapped by its elements
            for item in value:
                if item is not None and (key not in props or type(item) in (dict, list)):
                    _map_field(props, key, item, formats)
        elif value is not None and key not in props:
            _map_field(props, key, value, formats)


def _map_field(props: dict[str, Any], key: str, value: Any, formats: list[str]) -> None:
    if "." in key and key.strip(".") and key not in props:
        head, _, rest = key.partition(".")  # ``{"a.b": 1}`` is ``{"a": {"b": 1}}`` to ES
        _map_field(props, head, {rest: value}, formats)
        return
    if isinstance(value, list):
        _map_object(props, {key: value}, formats)
        return
    spec = props.get(key)
    if isinstance(value, dict):
        if spec is None:
            spec = props[key] = {} if value else {"type": "object"}
        if spec.get("type", "object") not in ("object", "nested"):
            return  # a leaf mapped earlier: ES would reject the document
        if str(spec.get("dynamic", "true")).lower() != "true":
            return
        if value:
            if spec.get("type") == "object":
                del spec["type"]  # ES leaves the default type out once there are properties
            _map_object(spec.setdefault("properties", {}), value, formats)
        return
    if spec is None and value is not None:
        new = _dynamic_type(value, formats)
        if new is not None:
            props[key] = new


def _sorted_properties(props: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in sorted(props):
        spec = props[name]
        if isinstance(spec, dict) and isinstance(spec.get("properties"), dict):
            spec = {**spec, "properties": _sorted_properties(spec["properties"])}
        out[name] = spec
    return out


def _field_values(source: dict[str, Any], path: str) -> list[Any]:
    """All leaf values at a dotted path, through objects and arrays (like doc values)."""
    current: list[Any] = [source]
    for part in path.split("."):
        nxt: list[Any] = []
        for obj in current:
            items = obj if isinstance(obj, list) else [obj]
            for item in items:
                if isinstance(item, dict) and part in item:
                    nxt.append(item[part])
        current = nxt
    out: list[Any] = []
    for v in current:
        if isinstance(v, list):
            out.extend(x for x in v if x is not None)
        elif v is not None:
            out.append(v)
    return out
