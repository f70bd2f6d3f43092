"""Move records from Elasticsearch or CSV into MySQL or JSONL with Dagster."""

from __future__ import annotations

__version__ = "0.1.0"
