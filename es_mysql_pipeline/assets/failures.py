"""How a step fails on an error a user can act on: counted, one line, never retried."""

from __future__ import annotations

import dagster as dg

from es_mysql_pipeline import metadata_keys as keys
from es_mysql_pipeline.errors import ConfigError, PipelineError
from es_mysql_pipeline.metrics.recorder import Stage, get_recorder


def step_failed(exc: PipelineError, step: Stage) -> dg.Failure:
    """Count ``exc`` in ``pipeline_errors_total`` and return the step failure to raise.

    Never retried by the asset's ``RetryPolicy``: a wrong setting fails the same way again,
    and the sources and sinks have already retried transient faults with backoff before
    giving up (a step retry would repeat the whole load). The policy stays for crashes.
    The CLI exits 2 for a :class:`ConfigError` (it reads the ``error_kind`` metadata).
    """
    get_recorder().error(type(exc).__name__, step)
    kind = keys.CONFIG_ERROR_KIND if isinstance(exc, ConfigError) else type(exc).__name__
    return dg.Failure(description=str(exc), allow_retries=False, metadata={keys.ERROR_KIND: kind})
