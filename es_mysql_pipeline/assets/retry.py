"""Which step failures the assets' ``RetryPolicy`` may retry: only the connection class.

A step retry repeats the whole fetch or load, so it is worth it only when the next attempt
can go differently: a dropped connection, a timeout, a server that was restarting. Anything
else (a wrong setting, a schema-contract refusal, a missing index or file, a bug such as
``AssertionError``) fails the same way again and fails at once, with its own message.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import dagster as dg

from es_mysql_pipeline.errors import PipelineError

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
                metadata={"error_kind": type(exc).__name__},
            ) from exc

    return body  # type: ignore[return-value]
