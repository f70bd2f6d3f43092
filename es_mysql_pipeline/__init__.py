"""Move records from Elasticsearch or CSV into MySQL or JSONL with Dagster."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["EsMysqlPipelines", "__version__"]

if TYPE_CHECKING:
    from es_mysql_pipeline.component import EsMysqlPipelines


def __getattr__(name: str) -> Any:
    """``es_mysql_pipeline.EsMysqlPipelines`` (a defs.yaml's ``type:``), imported on first
    use: worker processes and the CLI import this package without paying for Dagster."""
    if name == "EsMysqlPipelines":
        from es_mysql_pipeline.component import EsMysqlPipelines

        return EsMysqlPipelines
    raise AttributeError(f"module 'es_mysql_pipeline' has no attribute {name!r}")
