"""How a step fails: one line for a user, and retried only when a retry can help.

A step retry repeats the whole fetch or load, so the assets' ``RetryPolicy`` sees only
connection-class faults (a dropped connection, a timeout, a server that was restarting).
Anything else (a wrong setting, a schema-contract refusal, a missing index or file, a bug
such as ``AssertionError``) fails the same way again, so it fails at once with its message.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import dagster as dg

from es_mysql_pipeline import metadata_keys as keys
from es_mysql_pipeline.errors import ConfigError, PipelineError
from es_mysql_pipeline.metrics.recorder import Stage, get_recorder


def step_failed(exc: PipelineError, step: Stage) -> dg.Failure:
    """Count ``exc`` in ``pipeline_errors_total`` and return the step failure to raise.

    Never retried: the sources and sinks have already retried transient faults with
    backoff before giving up. The CLI exits 2 for a :class:`ConfigError` (it reads the
    ``error_kind`` metadata).
    """
    get_recorder().error(type(exc).__name__, step)
    return dg.Failure(
        description=str(exc), allow_retries=False, metadata={keys.ERROR_KIND: error_kind(exc)}
    )


def error_kind(exc: BaseException) -> str:
    """``config`` for a wrong setting (the CLI exits 2), else the exception's class name."""
    return keys.CONFIG_ERROR_KIND if isinstance(exc, ConfigError) else type(exc).__name__


RETRY = dg.RetryPolicy(
    max_retries=2, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)

#: Exception class names (anywhere in the class's MRO) of connection-class faults; by name
#: so that this module imports none of the drivers (SQLAlchemy, elasticsearch, botocore).
TRANSIENT_NAMES = frozenset(
    {
        "ConnectionError",  # builtins, requests, elasticsearch, redis
        "TimeoutError",  # builtins (socket.timeout), sqlalchemy's pool timeout
        "OperationalError",  # sqlalchemy/DBAPI: lost connection, server gone away
        "DisconnectionError",  # sqlalchemy
        "ConnectionTimeout",  # elasticsearch / elastic_transport
        "NewConnectionError",  # urllib3
        "ProtocolError",  # urllib3: connection aborted mid-response
        "EndpointConnectionError",  # botocore
        "ConnectTimeoutError",  # botocore
        "ReadTimeoutError",  # botocore, urllib3
    }
)

F = TypeVar("F", bound=Callable[..., Any])


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` (or an exception it was raised from) is a connection-class fault."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if any(cls.__name__ in TRANSIENT_NAMES for cls in type(current).__mro__):
            return True
        current = current.__cause__ or current.__context__
    return False


def fail_fast_unless_transient(fn: F) -> F:
    """Wrap an asset body: deterministic errors become a ``Failure`` the policy won't retry."""

    @functools.wraps(fn)
    def body(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except dg.Failure:
            raise  # already says whether it may be retried
        except Exception as exc:
            if is_transient(exc) and not isinstance(exc, PipelineError):
                raise  # the RetryPolicy tries again with backoff
            if isinstance(exc, PipelineError):  # already one line for users
                description = str(exc)
            else:
                description = (
                    f"{type(exc).__name__}: {exc} (not retried: it would fail the same way again)"
                )
            raise dg.Failure(
                description=description,
                allow_retries=False,
                metadata={keys.ERROR_KIND: error_kind(exc)},
            ) from exc

    return body  # type: ignore[return-value]
