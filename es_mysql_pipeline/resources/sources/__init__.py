"""Record sources.

Names are imported on first use: a worker process that only reads a file's part
(``file_parts``) must not pay for importing Dagster."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from es_mysql_pipeline.resources.sources.base import RecordSource
    from es_mysql_pipeline.resources.sources.files import FileSource

_HOMES = {
    "RecordSource": "es_mysql_pipeline.resources.sources.base",
    "FileSource": "es_mysql_pipeline.resources.sources.files",
}

__all__ = ["FileSource", "RecordSource"]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
