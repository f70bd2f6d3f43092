"""Settings shared by the three assets: pipeline id, mapping and dead letters."""

from __future__ import annotations

from typing import Literal

import dagster as dg
from pydantic import Field

from es_mysql_pipeline.mapping import FieldMapping


class PipelineSettings(dg.ConfigurableResource):
    """What the transform does and where failures go; identical for every source and sink."""

    pipeline_id: str = "default"
    dead_letter_dir: str = "dead_letter"
    #: Records per batch read from the source and written to the staged file.
    fetch_batch_size: int = 5000
    #: Column of the id field; unset: the field's own name (``_id`` for Elasticsearch).
    #: Tables made by 0.1 keep it in ``id``: set ``id``.
    id_column: str | None = None
    #: Column of the time field; unset: the field's own name (``@timestamp`` → ``timestamp``).
    #: Tables made by 0.1 keep it in ``timestamp``: set ``timestamp``.
    timestamp_column: str | None = None
    #: Output columns to keep (after flattening and renaming); empty keeps all.
    select: list[str] = []
    #: ``{"source_field": "column"}``; nested fields use their flattened ``parent_child`` name.
    rename: dict[str, str] = {}
    #: ``{"column": "int" | "float" | "bool" | "datetime" | "string" | "json"}``.
    casts: dict[str, str] = {}
    flatten: bool = True
    #: Dotted paths of objects with dynamic keys (``labels``, ``kubernetes.labels``) stored
    #: whole in the ``_overflow`` JSON column instead of a column per key.
    keep_whole: list[str] = []
    #: Dotted path of an optional per-record analyzer: ``f(record) -> dict | None``.
    analyzer: str | None = None
    #: Worker processes reading a big CSV or JSON Lines file (16 MiB or more), a part of
    #: the file each (0: one per core, at most 4; 1: in the step's own process).
    fetch_processes: int = 0
    #: Worker processes for the transform of a big partition (0: one per core, at most 4;
    #: 1: in the step's own process). Staged files under 50,000 records always map in-process.
    transform_processes: int = 0
    #: Stop the transform once more than this share of the records seen (1,000 at least)
    #: failed for one and the same reason; ``None`` never stops (every reject is written).
    max_failed_ratio: float | None = Field(default=None, ge=0, le=1)
    #: After a window loads, rows of that window whose id the source no longer has are
    #: kept (``ignore``), deleted (``hard``) or stamped in ``_deleted_at`` (``soft``).
    #: See docs/updates-and-deletes.md.
    deletes: Literal["ignore", "hard", "soft"] = "ignore"
    #: ``field`` or ``field=value`` (e.g. ``deleted`` or ``status=deleted``): a record
    #: carrying it deletes its row (``soft``: stamps it) instead of being loaded.
    delete_marker: str | None = None

    def mapping(self, id_key: str, timestamp_key: str | None) -> FieldMapping:
        return FieldMapping(
            id_key=id_key,
            timestamp_key=timestamp_key,
            id_column=self.id_column,
            timestamp_column=self.timestamp_column,
            select=tuple(self.select),
            rename=dict(self.rename),
            casts=dict(self.casts),
            flatten=self.flatten,
            keep_whole=tuple(self.keep_whole),
        )
