"""The time field of an index, detected from its mapping when not configured."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from elasticsearch import ApiError, Elasticsearch

from es_mysql_pipeline.readers.elasticsearch.errors import (
    ErrorPolicy,
    error_reason,
    error_type,
)
from es_mysql_pipeline.records import TIMESTAMP_CANDIDATES, detect_timestamp_field

log = logging.getLogger(__name__)

#: Mapping types a range query on the time window works on.
_DATE_TYPES = frozenset({"date", "date_nanos"})
#: Statuses of a mapping request that mean "not allowed or not offered here" (a user with
#: ``read`` but no ``view_index_metadata``, a proxy that only passes searches): a full run
#: goes on without a time field.
_MAPPING_UNREADABLE = frozenset({400, 403, 404, 405, 501})


@dataclass(frozen=True)
class TimeField:
    """The time field a source uses, and how it was chosen."""

    name: str | None
    #: ``configured`` (an explicit name or ``none``), ``detected`` (from the mapping), or
    #: ``missing`` (no such index: not cached, the read reports it)
    how: str
    #: why there is none, for the one-line error of a windowed run
    why: str = ""


def detect_time_field(client: Elasticsearch, policy: ErrorPolicy, setting_names: str) -> TimeField:
    """The time field from ``GET /<index>/_mapping``: the first common name among the
    ``date`` fields (of every index a pattern matches), else the only date field."""
    index = policy.index

    def get_mapping() -> Any:
        try:
            return client.indices.get_mapping(index=index).body
        except ApiError as exc:
            if (
                exc.meta.status in _MAPPING_UNREADABLE
                and error_type(exc) != "media_type_header_exception"
            ):
                return exc  # refused for a reason a full run can live with
            raise  # bad credentials, a server of another major: the read fails alike

    resp = policy.call("mapping request", policy.retry(), get_mapping, timed=False)
    if (
        isinstance(resp, ApiError)
        and error_type(resp) == "index_not_found_exception"
        and ":" not in index  # a remote (cross-cluster) index has no local mapping
    ):
        # Not a time-field question: the read reports a missing index in its own words.
        return TimeField(None, "missing", f"Elasticsearch index not found ({index!r})")
    if isinstance(resp, ApiError):
        status, etype = resp.meta.status, error_type(resp)
        log.warning(
            "Elasticsearch refused the mapping of %s (%s %s), so no time field is "
            "detected; a full read goes on, a windowed one needs %s",
            index,
            status,
            policy.redact(error_reason(resp)),
            setting_names,
        )
        return TimeField(
            None,
            "detected",
            f"the mapping of index {index!r} could not be read ({status} {etype}; "
            "the view_index_metadata privilege allows it), so no time field was detected",
        )
    dates = date_fields(resp if isinstance(resp, Mapping) else {})
    name = detect_timestamp_field(dates)
    if name is None and len(dates) == 1:
        name = dates[0]
    if name is not None:
        log.info("Elasticsearch time field of %s: %s (detected from the mapping)", index, name)
        return TimeField(name, "detected")
    common = ", ".join(TIMESTAMP_CANDIDATES[:6])
    if not resp:
        why = f"index pattern {index!r} matches no index, so no time field was detected"
    elif not dates:
        why = f"index {index!r} has no time field (no {common}, ... of type date)"
    else:
        shown = ", ".join(dates[:10]) + (", ..." if len(dates) > 10 else "")
        why = (
            f"index {index!r} has several date fields ({shown}) and none has a "
            f"common time-field name ({common}, ...)"
        )
    log.info("Elasticsearch %s: %s; a full read needs none", index, why)
    return TimeField(None, "detected", why)


def date_fields(mapping_response: Mapping[str, Any]) -> list[str]:
    """The ``date``/``date_nanos`` fields of a get-mapping response, dotted (``event.created``),
    in the order of the response, over all its indices. Objects are entered; ``nested``
    fields (a window cannot be a plain range on them), multi-fields and runtime fields not."""
    found: dict[str, None] = {}

    def walk(props: Any, prefix: str) -> None:
        if not isinstance(props, Mapping):
            return
        for name, spec in props.items():
            if not isinstance(spec, Mapping):
                continue
            path = f"{prefix}{name}"
            ftype = spec.get("type")
            if ftype in _DATE_TYPES:
                found.setdefault(path, None)
            elif ftype in (None, "object"):
                walk(spec.get("properties"), path + ".")

    for body in mapping_response.values():
        if isinstance(body, Mapping):
            mappings = body.get("mappings")
            if isinstance(mappings, Mapping):
                walk(mappings.get("properties"), "")
    return list(found)
