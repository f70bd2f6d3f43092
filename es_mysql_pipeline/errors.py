"""Errors a user can act on: each carries one line that names the setting and the fix."""

from __future__ import annotations


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
