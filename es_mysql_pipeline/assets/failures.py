"""How a step fails: one line for a user, and retried only when a retry can help.

A step retry repeats the whole fetch or load, so the ``RetryPolicy`` sees only connection
faults; anything else (a wrong setting, a missing index, a bug) would fail the same way again.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import dagster as dg

from es_mysql_pipeline import metadata_keys as keys
from es_mysql_pipeline.errors import ConfigError, PipelineError
from es_mysql_pipeline.lifecycle import Interrupted
from es_mysql_pipeline.metrics.recorder import Stage, get_recorder
from es_mysql_pipeline.worker_processes import tune_gc

#: The messages of sources, sinks and engines are written for the command line, whose
#: users are told flags; a Dagster run is configured by its resources (the keys of
#: ``definitions.resources_for``) and their environment variables, so those are named
#: instead. Longest phrases first: a phrase may contain a shorter one.
DAGSTER_SETTINGS: tuple[tuple[str, str], ...] = (
    # a partitioned asset always reads a window: there is no run "without a window"
    (", or run without a window to load everything", ""),
    (
        "(--timestamp_column / --es_timestamp_field) to the right field, or to none for a full run",
        "(source.timestamp_column of the file source, source.timestamp_field of "
        "Elasticsearch) to the right field",
    ),
    ("--db_host and --db_port", "the host and port of sink.url (DB_URL)"),
    ("--db_host", "the host of sink.url (DB_URL)"),
    (
        "--db_user and the password in DB_PASSWORD",
        "the user of sink.url (DB_URL) and sink.password (DB_PASSWORD)",
    ),
    ("--db_name", "the database of sink.url (DB_URL)"),
    ("--db_ssl_ca/ssl_ca", "sink.ssl_ca"),
    ("--db_ssl_ca", "sink.ssl_ca"),
    (
        "--schema-contract evolve (SCHEMA_CONTRACT)",
        "sink.schema_contract: evolve (SCHEMA_CONTRACT)",
    ),
    ("--schema-contract evolve", "sink.schema_contract: evolve"),
    ("--schema-contract", "sink.schema_contract (SCHEMA_CONTRACT)"),
    ("--timestamp_column (CSV_TIMESTAMP_COLUMN)", "source.timestamp_column (CSV_TIMESTAMP_COLUMN)"),
    ("--es_timestamp_field / ES_TIMESTAMP_FIELD", "source.timestamp_field (ES_TIMESTAMP_FIELD)"),
    ("--id_column", "source.id_column"),
    ("--staging-dir / STAGING_PATH", "io_manager.base_path (STAGING_PATH)"),
    ("--max-failed-ratio", "settings.max_failed_ratio"),
    ("--write-mode refresh", "sink.write_mode: refresh"),
)


def for_dagster(message: str) -> str:
    """``message`` with the command line's flags replaced by the Dagster settings they set."""
    for cli, dagster in DAGSTER_SETTINGS:
        message = message.replace(cli, dagster)
    return message


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


def step(stage: Stage) -> Callable[[F], F]:
    """Wrap an asset body (run with the collector tuned for batches, see :func:`tune_gc`): a
    :class:`PipelineError` becomes its one line, counted in ``pipeline_errors_total`` and
    retried only for a connection fault; a bare connection fault goes to the
    ``RetryPolicy``; anything else fails at once. The ``error_kind`` metadata is ``config``
    for a wrong setting (the CLI exits 2), else the class name."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def body(*args: Any, **kwargs: Any) -> Any:
            tune_gc()
            try:
                return fn(*args, **kwargs)
            except Interrupted as exc:  # the process is shutting down
                raise dg.Failure(description=str(exc), allow_retries=False) from None
            except PipelineError as exc:
                get_recorder().error(type(exc).__name__, stage)
                config = isinstance(exc, ConfigError)
                kind = keys.CONFIG_ERROR_KIND if config else type(exc).__name__
                context = args[0] if args else None
                # the CLI runs the assets unpartitioned with its flags; a partitioned run
                # was configured in Dagster, so its message names Dagster's settings
                dagster = isinstance(context, dg.AssetExecutionContext) and (
                    context.has_partition_key or context.has_partition_key_range
                )
                raise dg.Failure(
                    description=for_dagster(str(exc)) if dagster else str(exc),
                    allow_retries=not config and is_transient(exc),
                    metadata={keys.ERROR_KIND: kind},
                ) from None
            except Exception as exc:
                if is_transient(exc):
                    raise  # the RetryPolicy tries again with backoff
                raise dg.Failure(
                    description=f"{type(exc).__name__}: {exc} "
                    "(not retried: it would fail the same way again)",
                    allow_retries=False,
                    metadata={keys.ERROR_KIND: type(exc).__name__},
                ) from exc

        return body  # type: ignore[return-value]

    return wrap
