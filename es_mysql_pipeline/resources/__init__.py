"""Dagster resources: where records come from (sources) and where they go (sinks)."""
