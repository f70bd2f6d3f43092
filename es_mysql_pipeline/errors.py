"""Errors a user can act on: each carries one line that names the setting and the fix."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the transform's worker processes import this module without Dagster
    from dagster import Failure


class PipelineError(Exception):
    """Base for errors shown to users as one line, without a traceback."""


class ConfigError(PipelineError):
    """A setting is wrong; the message names it and says how to fix it."""


class SourceError(PipelineError):
    """The source could not be read (permanent failure)."""


class SinkError(PipelineError):
    """The sink refused the data or the connection (permanent failure)."""


class RejectedRecordsError(PipelineError):
    """Too many records failed for one and the same reason: the run stops early."""


def step_failure(exc: PipelineError) -> Failure:
    """The Dagster step failure for ``exc``, with one line and no traceback.

    Never retried by the asset's ``RetryPolicy``: a wrong setting fails the same way again,
    and the sources and sinks have already retried transient faults with backoff before
    giving up (a step retry would repeat the whole load). The policy stays for crashes.
    The CLI exits 2 for a :class:`ConfigError` (it reads the ``error_kind`` metadata).
    """
    from dagster import Failure

    config = isinstance(exc, ConfigError)
    return Failure(
        description=str(exc),
        allow_retries=False,
        metadata={"error_kind": "config" if config else type(exc).__name__},
    )
