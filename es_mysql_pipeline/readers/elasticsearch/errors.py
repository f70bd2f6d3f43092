"""What an Elasticsearch failure means: retry it (with backoff, honouring Retry-After) or
stop with one line naming the cause and the setting to change — never a secret."""

from __future__ import annotations

import email.utils
import logging
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TypeVar

from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import ConnectionTimeout, TlsError
from elastic_transport import SerializationError as TransportSerializationError
from elasticsearch import ApiError, Elasticsearch, UnsupportedProductError
from elasticsearch import __versionstr__ as CLIENT_VERSION

from es_mysql_pipeline.errors import ConfigError, SourceError
from es_mysql_pipeline.metrics.recorder import get_recorder

log = logging.getLogger(__name__)

T = TypeVar("T")

#: HTTP statuses worth asking again: overload and gateway trouble, never a bad request.
TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})
_QUERY_ERRORS = frozenset(
    {
        "parsing_exception",
        "x_content_parse_exception",
        "query_shard_exception",
        "parse_exception",
        "illegal_argument_exception",
        "number_format_exception",
        "search_phase_execution_exception",
        "query_parsing_exception",
    }
)


class Stopped(Exception):
    """The read was left (a stop, a failure elsewhere) while a request waited to retry."""


class ContextMissing(Exception):
    """The point in time expired or vanished; reopen it and resume."""


class Transient(Exception):
    """A retryable failure the caller must handle itself (a page with failed shards)."""


@dataclass(frozen=True)
class ErrorPolicy:
    """How one source's requests are retried and how their failures are worded."""

    url: str
    index: str
    request_timeout: float
    max_retries: int
    retry_backoff: float
    retry_backoff_max: float
    #: blanks the source's secrets out of any text shown
    redact: Callable[[str], str]

    @property
    def target(self) -> str:
        return f"{self.url}/{self.index}"

    def retry(self, stop: threading.Event | None = None) -> Retry:
        return Retry(self, stop or threading.Event())

    def call(self, what: str, retry: Retry, fn: Callable[[], T], timed: bool = True) -> T:
        """Run an idempotent request with retries; PIT expiry surfaces as ContextMissing.

        ``timed`` requests count in the fetch-duration metric (pages, not metadata requests).
        """
        while True:
            started = time.perf_counter()
            try:
                result = fn()
            except (ContextMissing, Stopped):
                raise
            except ApiError as exc:
                if exc.meta.status == 404 and error_type(exc) == "search_context_missing_exception":
                    raise ContextMissing(error_reason(exc)) from None
                retry.wait_or_raise(exc, what)
                continue
            except Exception as exc:
                retry.wait_or_raise(exc, what)
                continue
            retry.failures = 0
            if timed:
                get_recorder().duration("fetch", time.perf_counter() - started)
            return result

    def transient_cause(self, exc: Exception) -> tuple[str | None, float | None]:
        """A short cause when ``exc`` is worth retrying (plus Retry-After seconds), else None."""
        if isinstance(exc, Transient):
            return str(exc), None
        if isinstance(exc, TlsError):
            return None, None
        if isinstance(exc, ConnectionTimeout):
            return f"timeout after {self.request_timeout:g}s", None
        if isinstance(exc, TransportConnectionError):
            return "connection error: " + _first_error(exc), None
        if isinstance(exc, TransportSerializationError):
            return "truncated or unreadable response", None
        if isinstance(exc, ApiError) and exc.meta.status in TRANSIENT_STATUSES:
            return f"HTTP {exc.meta.status} {error_type(exc)}", _retry_after(exc)
        return None, None

    def permanent(self, exc: Exception, what: str) -> tuple[type[Exception], str]:
        """The error class and one line naming the cause and the setting to change."""
        url = self.url
        if isinstance(exc, TlsError):
            return ConfigError, (
                f"TLS connection to {url} failed ({_first_error(exc)}); set ca_certs to the CA "
                "bundle that signed the server certificate (or verify_certs=false to skip the "
                "check, not for production)"
            )
        if isinstance(exc, UnsupportedProductError):
            return ConfigError, (
                f"the server at {url} is not Elasticsearch (no X-Elastic-Product header)"
            )
        if not isinstance(exc, ApiError):  # connection errors and timeouts are retried
            return SourceError, f"Elasticsearch {what} failed: {type(exc).__name__}: {exc}"
        status, etype, reason = exc.meta.status, error_type(exc), error_reason(exc)
        if status == 401:
            return ConfigError, (
                f"Elasticsearch at {url} rejected the credentials (401 {etype}); set "
                "ES_API_KEY, or es_username with ES_PASSWORD, to valid values"
            )
        if status == 403:
            return ConfigError, (
                f"Elasticsearch denied {what} on index {self.index!r} (403 {etype}): "
                f"{reason}; grant the user the read and view_index_metadata privileges"
            )
        if etype == "index_not_found_exception":
            return ConfigError, (
                f"Elasticsearch index not found: {reason} (es_index={self.index!r}); "
                "check the index name or pattern"
            )
        if etype == "media_type_header_exception":
            return ConfigError, (
                f"Elasticsearch at {url} refused the client's compatibility headers "
                f"({reason}): the installed elasticsearch client {CLIENT_VERSION} does not "
                "match the server's major version; run check() for the exact fix"
            )
        if status == 400 and etype in _QUERY_ERRORS:
            return ConfigError, (
                f"Elasticsearch rejected the search (es_query / settings): {etype}: {reason}"
            )
        return SourceError, f"Elasticsearch {what} failed: HTTP {status} {etype}: {reason}"


@dataclass
class Retry:
    """Consecutive-failure budget shared by the calls of one slice."""

    policy: ErrorPolicy
    stop: threading.Event
    failures: int = 0

    def wait_or_raise(self, exc: Exception, what: str) -> None:
        """Sleep before the next attempt, or raise the error the user should see."""
        policy = self.policy
        cause, retry_after = policy.transient_cause(exc)
        if cause is None:
            error, msg = policy.permanent(exc, what)
            raise error(policy.redact(msg)) from None  # never a secret
        if self.failures >= policy.max_retries:
            raise SourceError(
                policy.redact(
                    f"Elasticsearch {what} at {policy.target} still failing after "
                    f"{policy.max_retries} retries ({cause}); check that the cluster is healthy "
                    "and reachable, or raise max_retries"
                )
            ) from None
        self.failures += 1
        cap = max(policy.retry_backoff_max, 0.0)
        step = min(cap, policy.retry_backoff * (2 ** (self.failures - 1)))
        delay = step / 2 + random.uniform(0, step / 2)  # equal jitter: never a stampede
        if retry_after is not None:
            delay = max(delay, min(retry_after, 300.0))
        get_recorder().retry("fetch")
        log.warning(
            "Elasticsearch %s failed (%s); retry %d/%d in %.2fs",
            what,
            cause,
            self.failures,
            policy.max_retries,
            delay,
        )
        if self.stop.wait(delay):
            raise Stopped()


def error_type(exc: ApiError) -> str:
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            return str(err.get("type", "error"))
        if isinstance(err, str):
            return err[:200]
    return str(exc.message)[:200]


def error_reason(exc: ApiError) -> str:
    """The most specific reason: root cause, or the caused_by of a phase failure."""
    body = exc.body
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        return str(body)[:300] if body else str(exc.message)[:300]
    err = body["error"]
    parts = []
    for cause in err.get("root_cause") or []:
        if isinstance(cause, dict) and cause.get("reason"):
            parts.append(f"{cause.get('type')}: {cause['reason']}")
    caused = err.get("caused_by")
    if isinstance(caused, dict) and caused.get("reason") and not parts:
        parts.append(f"{caused.get('type')}: {caused['reason']}")
    if not parts:
        parts.append(str(err.get("reason", "")))
    text = "; ".join(dict.fromkeys(parts))
    return " ".join(text.split())[:300]


def check_version(client: Elasticsearch, policy: ErrorPolicy) -> None:
    """``GET /`` without compatibility headers, so any major answers and can be compared."""
    info = policy.call(
        "connect",
        policy.retry(),
        lambda: client.perform_request("GET", "/", headers={"accept": "*/*"}).body,
    )
    number = str(((info or {}).get("version") or {}).get("number", ""))
    m = re.match(r"(\d+)\.\d+", number)
    if not m:
        raise ConfigError(f"the server at {policy.url} did not report a version")
    major = int(m.group(1))
    if major < 8:
        raise ConfigError(
            f"Elasticsearch {number} at {policy.url} is too old: this pipeline supports 8.x "
            "and 9.x clusters; upgrade the cluster"
        )
    if major != int(CLIENT_VERSION.split(".")[0]):
        raise ConfigError(
            f"Elasticsearch {number} at {policy.url} needs a {major}.x client but "
            f'elasticsearch {CLIENT_VERSION} is installed: pip install "elasticsearch>={major},'
            f'<{major + 1}"'
        )


def _retry_after(exc: ApiError) -> float | None:
    value = exc.meta.headers.get("retry-after") if exc.meta.headers else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _first_error(exc: Exception) -> str:
    errors = getattr(exc, "errors", ()) or ()
    # the transport replaces ``errors`` by earlier attempts; the cause is the real failure
    inner = errors[0] if errors else (exc.__cause__ or exc)
    text = str(inner) or type(inner).__name__
    return f"{type(inner).__name__}: {' '.join(text.split())[:200]}"
