"""Elasticsearch: every matching document exactly once, through PIT + ``search_after``.

A point in time (PIT) freezes the index for the read, and paging with ``search_after`` on
``_shard_doc`` is a full, stable scan that can resume from the last page's sort values. That
is what makes retries exact: a failed page is asked for again with the same sort values, so
nothing is read twice or skipped (Logstash's scroll-based input re-reads on retry). Servers
without PIT get a scroll fallback that restarts and skips what it already yielded.
"""

from __future__ import annotations

import email.utils
import functools
import json
import logging
import os
import queue
import random
import re
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, ClassVar, NoReturn, TypeVar
from urllib.parse import urlsplit, urlunsplit

import dagster as dg
from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import ConnectionTimeout, TlsError
from elastic_transport import SerializationError as TransportSerializationError
from elasticsearch import ApiError, Elasticsearch, UnsupportedProductError
from elasticsearch import __versionstr__ as CLIENT_VERSION
from pydantic import PrivateAttr

from es_mysql_pipeline.errors import ConfigError, SourceError
from es_mysql_pipeline.metrics.recorder import get_recorder
from es_mysql_pipeline.records import (
    TIMESTAMP_CANDIDATES,
    Batch,
    Record,
    TimeWindow,
    batched,
    detect_timestamp_field,
    redact,
    timestamp_setting,
)
from es_mysql_pipeline.resources.sources.base import RecordSource

log = logging.getLogger(__name__)

T = TypeVar("T")

#: HTTP statuses worth asking again: overload and gateway trouble, never a bad request.
TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})
MAX_PAGE_SIZE = 10_000  # index.max_result_window: ES rejects larger pages
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
_KEEP_ALIVE_RE = re.compile(r"^\d+(nanos|micros|ms|s|m|h|d)$")
#: Mapping types a range query on the time window works on.
_DATE_TYPES = frozenset({"date", "date_nanos"})
#: Statuses of a mapping request that mean "not allowed or not offered here" (a user with
#: ``read`` but no ``view_index_metadata``, a proxy that only passes searches): a full run
#: goes on without a time field.
_MAPPING_UNREADABLE = frozenset({400, 403, 404, 405, 501})


class _ContextMissing(Exception):
    """The PIT or scroll context expired or vanished; reopen it and resume."""


class _NoPit(Exception):
    """The server has no point-in-time API (before 7.10, or a proxy blocks it)."""


class _Transient(Exception):
    """A retryable failure the caller must handle itself (a non-idempotent scroll page)."""


@dataclass
class _Retry:
    """Consecutive-failure budget shared by the calls of one slice."""

    owner: ElasticsearchSource
    stop: threading.Event
    failures: int = 0

    def wait_or_raise(self, exc: Exception, what: str) -> None:
        """Sleep before the next attempt, or raise the error the user should see."""
        src = self.owner
        cause, retry_after = src._transient_cause(exc)
        if cause is None:
            src._raise_permanent(exc, what)
        if self.failures >= src.max_retries:
            raise SourceError(
                src._redact(
                    f"Elasticsearch {what} at {src._target()} still failing after "
                    f"{src.max_retries} retries ({cause}); check that the cluster is healthy "
                    "and reachable, or raise max_retries"
                )
            ) from None
        self.failures += 1
        cap = max(src.retry_backoff_max, 0.0)
        step = min(cap, src.retry_backoff * (2 ** (self.failures - 1)))
        delay = step / 2 + random.uniform(0, step / 2)  # equal jitter: never a stampede
        if retry_after is not None:
            delay = max(delay, min(retry_after, 300.0))
        get_recorder().retry("fetch")
        log.warning(
            "Elasticsearch %s failed (%s); retry %d/%d in %.2fs",
            what,
            cause,
            self.failures,
            src.max_retries,
            delay,
        )
        if self.stop.wait(delay):
            raise _Stopped()

    def ok(self) -> None:
        self.failures = 0


class _Stopped(Exception):
    """The consumer went away; a slice thread ends quietly."""


@dataclass(frozen=True)
class _TimeField:
    """The time field a source uses, and how it was chosen."""

    name: str | None
    #: ``configured`` (an explicit name or ``none``), ``detected`` (from the mapping), or
    #: ``missing`` (no such index: not cached, the read reports it)
    how: str
    #: why there is none, for the one-line error of a windowed run
    why: str = ""


@dataclass(frozen=True)
class _Unreadable:
    """A mapping request refused for a reason a full run can live with."""

    exc: ApiError


@dataclass
class _PitState:
    """The PIT shared by all slices: reopened once per expiry, newest id kept for closing."""

    pit_id: str
    generation: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class ElasticsearchSource(RecordSource):
    """Reads an index (or pattern) of an Elasticsearch 8/9 cluster, optionally one time window.

    Credentials come from ``dg.EnvVar("ES_API_KEY")`` / ``dg.EnvVar("ES_PASSWORD")`` and never
    appear in logs, metadata or error messages.
    """

    #: ``http(s)://host:port`` URLs; ``localhost:9200`` means ``http://localhost:9200``.
    hosts: list[str]
    #: an index name, alias, comma-separated list or ``*`` pattern
    index: str
    #: Query DSL as JSON (``{"term": {...}}`` or ``{"query": {...}}``), ANDed with the window
    query: str | None = None
    #: the event-time field (a ``date`` in the mapping); unset: detected from the mapping
    #: among :data:`~es_mysql_pipeline.records.TIMESTAMP_CANDIDATES` (else the only date
    #: field); ``none``: the index has none. Only windowed and partitioned runs need one.
    timestamp_field: str | None = None
    api_key: str | None = None
    username: str | None = None
    password: str | None = None
    ca_certs: str | None = None
    verify_certs: bool = True
    source_includes: list[str] | None = None
    source_excludes: list[str] | None = None
    page_size: int = 1000
    request_timeout: float = 30
    #: parallel PIT slices, capped at the primary shard count
    slices: int = 1
    include_index: bool = False
    #: consecutive transient failures tolerated per request before giving up
    max_retries: int = 5
    keep_alive: str = "2m"
    #: first backoff step in seconds (doubles per retry, with jitter) and its cap
    retry_backoff: float = 0.5
    retry_backoff_max: float = 30.0

    timestamp_setting_names: ClassVar[str] = "--es_timestamp_field / ES_TIMESTAMP_FIELD"

    #: the resolved time field, detected at most once per resource instance (Dagster builds
    #: a fresh instance per run, so a changed mapping is seen by the next run)
    _time_field: _TimeField | None = PrivateAttr(default=None)

    # -- RecordSource ----------------------------------------------------------------------

    def id_key(self) -> str:
        return "_id"

    def timestamp_key(self) -> str | None:
        """The configured time field, or the one detected from the index mapping (one
        mapping request, then cached); ``None`` when there is none."""
        return self._resolve_time_field().name

    def describe(self) -> dict[str, str]:
        """Never connects: a time field still to be detected shows as such."""
        hosts = ",".join(self._urls())
        return {
            "type": "elasticsearch",
            "target": f"{hosts}/{self.index}",
            "hosts": hosts,
            "index": self.index,
            "timestamp_field": self.timestamp_field_description(),
        }

    def timestamp_field_description(self) -> str:
        """``event_time (detected)``, ``none (not detected)``, a configured name as is,
        ``none`` when configured so, or ``auto (from the mapping)`` before the first read."""
        detect, name = timestamp_setting(self.timestamp_field)
        if not detect:
            return name or "none"
        if self._time_field is None:
            return "auto (from the mapping)"
        if self._time_field.name is None:
            return "none (not detected)"
        return f"{self._time_field.name} (detected)"

    def no_time_field(self, window: TimeWindow) -> ConfigError:
        """The one line a windowed run on data without a time field fails with."""
        choice = self._resolve_time_field()
        if choice.how == "missing":
            return ConfigError(
                f"Elasticsearch index not found: no such index [{self.index}] "
                f"(es_index={self.index!r}); check the index name or pattern"
            )
        if choice.how == "configured":
            why = f"es_timestamp_field is {self.timestamp_field!r} (no time field)"
        else:
            why = choice.why
        return ConfigError(
            f"{why}; the run for {window.label()} is windowed or partitioned and needs "
            f"one: set {self.timestamp_setting_names} to the index's date field, or run "
            "without a window to read everything"
        )

    def check(self) -> None:
        """Validate settings, connect (``GET /``) and insist on a matching client major."""
        self._validate()
        client = self._client()
        try:
            self._server_version(client)
        finally:
            client.close()

    def read_batches(self, window: TimeWindow | None, batch_size: int) -> Iterator[Batch]:
        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size} must be at least 1")
        self._validate()
        client = self._client()
        try:
            version = self._server_version(client)
            if window is not None:
                self._resolve_time_field(client)
            pit_ok = version >= (7, 10)
            log.info(
                "Reading Elasticsearch %s%s with %s, page size %d, %d slice(s)",
                self._target(),
                f" for {window.label()}" if window else "",
                "PIT + search_after" if pit_ok else "scroll",
                self.page_size,
                self.slices,
            )
            # The query (and with a window, the refusal when there is no time field) comes
            # after the PIT opened: errors of the index itself are the read's to report.
            pages = (
                self._pit_pages(client, window) if pit_ok else self._scroll_pages(client, window)
            )
            try:
                yield from batched((rec for page in pages for rec in page), batch_size)
            finally:
                pages.close()  # stops the slices and closes the PIT before the client goes
        finally:
            client.close()

    # -- settings --------------------------------------------------------------------------

    def _validate(self) -> None:
        if not self.hosts or not all(h.strip() for h in self.hosts):
            raise ConfigError("es_url: give at least one Elasticsearch URL, e.g. localhost:9200")
        for host in self.hosts:
            parts = urlsplit(_with_scheme(host))
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(
                    f"es_url: {self._redact(host)!r} is not an http(s) URL like "
                    "https://es.example.com:9200"
                )
            try:
                parts.port  # noqa: B018 - raises on a bad port
            except ValueError:
                raise ConfigError(f"es_url: {self._redact(host)!r} has an invalid port") from None
        if not self.index.strip():
            raise ConfigError("es_index: give an index name or pattern, e.g. logs-*")
        if not 1 <= self.page_size <= MAX_PAGE_SIZE:
            raise ConfigError(
                f"page_size={self.page_size} must be between 1 and {MAX_PAGE_SIZE} "
                "(Elasticsearch's index.max_result_window)"
            )
        if self.slices < 1:
            raise ConfigError(f"slices={self.slices} must be at least 1")
        if self.max_retries < 0:
            raise ConfigError(f"max_retries={self.max_retries} must be 0 or more")
        if self.request_timeout <= 0:
            raise ConfigError(f"request_timeout={self.request_timeout} must be positive")
        if not _KEEP_ALIVE_RE.match(self.keep_alive):
            raise ConfigError(f"keep_alive={self.keep_alive!r} must be a time value like 2m or 90s")
        if self.ca_certs and not os.path.isfile(self.ca_certs):
            raise ConfigError(f"ca_certs: {self.ca_certs!r} does not exist or is not a file")
        if self.api_key is None and _resolve(self.password) and not self._username():
            raise ConfigError("ES_PASSWORD is set but no username: set es_username as well")
        self._user_query()

    def _user_query(self) -> dict[str, Any] | None:
        if not self.query or not self.query.strip():
            return None
        try:
            parsed = json.loads(self.query)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"es_query is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
            ) from None
        if isinstance(parsed, dict) and set(parsed) == {"query"}:
            parsed = parsed["query"]
        if not isinstance(parsed, dict) or not parsed:
            raise ConfigError(
                'es_query must be a Query DSL object, e.g. {"term": {"service": "api"}}'
            )
        return parsed

    def _build_query(self, window: TimeWindow | None) -> dict[str, Any]:
        """The user's query ANDed (in filter context: no scoring) with ``[start, end)``."""
        filters: list[dict[str, Any]] = []
        user = self._user_query()
        if user is not None:
            filters.append(user)
        if window is not None:
            ts_field = self.timestamp_key()
            if ts_field is None:
                raise self.no_time_field(window)
            filters.append(
                {
                    "range": {
                        ts_field: {
                            "gte": _es_time(window.start),
                            "lt": _es_time(window.end),
                            "format": "strict_date_optional_time",
                        }
                    }
                }
            )
        if not filters:
            return {"match_all": {}}
        return {"bool": {"filter": filters}}

    def _urls(self) -> list[str]:
        """Host URLs with any ``user:password@`` removed (that goes into basic auth)."""
        out = []
        for host in self.hosts:
            parts = urlsplit(_with_scheme(host.strip()))
            netloc = parts.netloc.rpartition("@")[2]
            out.append(urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", "")))
        return out

    def _url_credentials(self) -> tuple[str, str] | None:
        for host in self.hosts:
            parts = urlsplit(_with_scheme(host.strip()))
            if parts.username:
                return parts.username, parts.password or ""
        return None

    def _username(self) -> str | None:
        user = _resolve(self.username)
        if user:
            return user
        creds = self._url_credentials()
        return creds[0] if creds else None

    def _secrets(self) -> list[str | None]:
        creds = self._url_credentials()
        return [_resolve(self.api_key), _resolve(self.password), creds[1] if creds else None]

    def _redact(self, text: str) -> str:
        return redact(text, self._secrets())

    def _target(self) -> str:
        return f"{','.join(self._urls())}/{self.index}"

    def _client(self) -> Elasticsearch:
        kwargs: dict[str, Any] = {}
        api_key = _resolve(self.api_key)
        user = self._username()
        password = _resolve(self.password)
        if password is None and (creds := self._url_credentials()):
            password = creds[1]
        if api_key:
            kwargs["api_key"] = api_key
        elif user:
            kwargs["basic_auth"] = (user, password or "")
        if self.ca_certs:
            kwargs["ca_certs"] = self.ca_certs
        if not self.verify_certs:
            kwargs["verify_certs"] = False
            kwargs["ssl_show_warn"] = False
            log.warning("verify_certs=false: the Elasticsearch server certificate is not checked")
        try:
            return Elasticsearch(
                self._urls(),
                request_timeout=self.request_timeout,
                # Retries are ours: they honour Retry-After, count in metrics and resume paging.
                max_retries=0,
                retry_on_status=(),
                retry_on_timeout=False,
                connections_per_node=max(10, self.slices + 2),
                **kwargs,
            )
        except ValueError as exc:
            raise ConfigError(self._redact(f"es_url / TLS settings rejected: {exc}")) from None

    # -- errors ----------------------------------------------------------------------------

    def _transient_cause(self, exc: Exception) -> tuple[str | None, float | None]:
        """A short cause when ``exc`` is worth retrying (plus Retry-After seconds), else None."""
        if isinstance(exc, _Transient):
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
            return f"HTTP {exc.meta.status} {_error_type(exc)}", _retry_after(exc)
        return None, None

    def _raise_permanent(self, exc: Exception, what: str) -> NoReturn:
        """One line naming the cause and the setting to change; never a secret."""
        url = ",".join(self._urls())
        msg: str
        error: type[Exception] = SourceError
        if isinstance(exc, TlsError):
            error = ConfigError
            msg = (
                f"TLS connection to {url} failed ({_first_error(exc)}); set ca_certs to the CA "
                "bundle that signed the server certificate (or verify_certs=false to skip the "
                "check, not for production)"
            )
        elif isinstance(exc, UnsupportedProductError):
            error = ConfigError
            msg = f"the server at {url} is not Elasticsearch (no X-Elastic-Product header)"
        elif isinstance(exc, ApiError):
            status, etype, reason = exc.meta.status, _error_type(exc), _error_reason(exc)
            if status == 401:
                error = ConfigError
                msg = (
                    f"Elasticsearch at {url} rejected the credentials (401 {etype}); set "
                    "ES_API_KEY, or es_username with ES_PASSWORD, to valid values"
                )
            elif status == 403:
                error = ConfigError
                msg = (
                    f"Elasticsearch denied {what} on index {self.index!r} (403 {etype}): "
                    f"{reason}; grant the user the read and view_index_metadata privileges"
                )
            elif etype == "index_not_found_exception":
                error = ConfigError
                msg = (
                    f"Elasticsearch index not found: {reason} (es_index={self.index!r}); "
                    "check the index name or pattern"
                )
            elif etype == "media_type_header_exception":
                error = ConfigError
                msg = (
                    f"Elasticsearch at {url} refused the client's compatibility headers "
                    f"({reason}): the installed elasticsearch client {CLIENT_VERSION} does not "
                    "match the server's major version; run check() for the exact fix"
                )
            elif status == 400 and etype in _QUERY_ERRORS:
                error = ConfigError
                msg = f"Elasticsearch rejected the search (es_query / settings): {etype}: {reason}"
            else:
                msg = f"Elasticsearch {what} failed: HTTP {status} {etype}: {reason}"
        elif isinstance(exc, (TransportConnectionError, ConnectionTimeout)):
            msg = f"Elasticsearch {what} at {url} failed: {_first_error(exc)}; check es_url"
        else:
            msg = f"Elasticsearch {what} failed: {type(exc).__name__}: {exc}"
        raise error(self._redact(msg)) from None

    def _call(self, what: str, retry: _Retry, fn: Callable[[], T], timed: bool = True) -> T:
        """Run an idempotent request with retries; PIT/scroll expiry surfaces as _ContextMissing.

        ``timed`` requests count in the fetch-duration metric (pages, not metadata requests).
        """
        while True:
            started = time.perf_counter()
            try:
                result = fn()
            except (_NoPit, _ContextMissing, _Stopped):
                raise
            except ApiError as exc:
                if (
                    exc.meta.status == 404
                    and _error_type(exc) == "search_context_missing_exception"
                ):
                    raise _ContextMissing(_error_reason(exc)) from None
                retry.wait_or_raise(exc, what)
                continue
            except Exception as exc:
                retry.wait_or_raise(exc, what)
                continue
            retry.ok()
            if timed:
                get_recorder().duration("fetch", time.perf_counter() - started)
            return result

    # -- connection ------------------------------------------------------------------------

    def _server_version(self, client: Elasticsearch) -> tuple[int, int]:
        """``GET /`` without compatibility headers, so any major answers and can be compared."""
        info = self._call(
            "connect",
            _Retry(self, threading.Event()),
            lambda: client.perform_request("GET", "/", headers={"accept": "*/*"}).body,
        )
        number = str(((info or {}).get("version") or {}).get("number", ""))
        m = re.match(r"(\d+)\.(\d+)", number)
        if not m:
            raise ConfigError(f"the server at {','.join(self._urls())} did not report a version")
        major, minor = int(m.group(1)), int(m.group(2))
        client_major = int(CLIENT_VERSION.split(".")[0])
        if major != client_major:
            raise ConfigError(_mismatch_message(number, major, ",".join(self._urls())))
        return major, minor

    # -- time field ------------------------------------------------------------------------

    def _resolve_time_field(self, client: Elasticsearch | None = None) -> _TimeField:
        """The time field, detected at most once (a missing index is asked again)."""
        if self._time_field is not None:
            return self._time_field
        detect, name = timestamp_setting(self.timestamp_field)
        if not detect:
            choice = _TimeField(name, "configured")
        elif client is not None:
            choice = self._detect_time_field(client)
        else:
            self._validate()
            own = self._client()
            try:
                choice = self._detect_time_field(own)
            finally:
                own.close()
        if choice.how != "missing":
            self._time_field = choice
        return choice

    def _detect_time_field(self, client: Elasticsearch) -> _TimeField:
        """The time field from ``GET /<index>/_mapping``: the first common name among the
        ``date`` fields (of every index a pattern matches), else the only date field."""

        def get_mapping() -> Any:
            try:
                return client.indices.get_mapping(index=self.index).body
            except ApiError as exc:
                if (
                    exc.meta.status in _MAPPING_UNREADABLE
                    and _error_type(exc) != "media_type_header_exception"
                ):
                    return _Unreadable(exc)
                raise  # bad credentials, a server of another major: the read fails alike

        resp = self._call(
            "mapping request", _Retry(self, threading.Event()), get_mapping, timed=False
        )
        if (
            isinstance(resp, _Unreadable)
            and _error_type(resp.exc) == "index_not_found_exception"
            and ":" not in self.index  # a remote (cross-cluster) index has no local mapping
        ):
            # Not a time-field question: the read reports a missing index in its own words.
            return _TimeField(None, "missing", f"Elasticsearch index not found ({self.index!r})")
        if isinstance(resp, _Unreadable):
            status, etype = resp.exc.meta.status, _error_type(resp.exc)
            log.warning(
                "Elasticsearch refused the mapping of %s (%s %s), so no time field is "
                "detected; a full read goes on, a windowed one needs %s",
                self.index,
                status,
                self._redact(_error_reason(resp.exc)),
                self.timestamp_setting_names,
            )
            return _TimeField(
                None,
                "detected",
                f"the mapping of index {self.index!r} could not be read ({status} {etype}; "
                "the view_index_metadata privilege allows it), so no time field was detected",
            )
        dates = date_fields(resp if isinstance(resp, Mapping) else {})
        name = detect_timestamp_field(dates)
        if name is None and len(dates) == 1:
            name = dates[0]
        if name is not None:
            log.info(
                "Elasticsearch time field of %s: %s (detected from the mapping)", self.index, name
            )
            return _TimeField(name, "detected")
        common = ", ".join(TIMESTAMP_CANDIDATES[:6])
        if not resp:
            why = f"index pattern {self.index!r} matches no index, so no time field was detected"
        elif not dates:
            why = f"index {self.index!r} has no time field (no {common}, ... of type date)"
        else:
            shown = ", ".join(dates[:10]) + (", ..." if len(dates) > 10 else "")
            why = (
                f"index {self.index!r} has several date fields ({shown}) and none has a "
                f"common time-field name ({common}, ...)"
            )
        log.info("Elasticsearch %s: %s; a full read needs none", self.index, why)
        return _TimeField(None, "detected", why)

    # -- PIT + search_after ----------------------------------------------------------------

    def _search_body(self, query: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "size": self.page_size,
            "query": query,
            "track_total_hits": False,
        }
        if self.source_includes or self.source_excludes:
            src: dict[str, list[str]] = {}
            if self.source_includes:
                src["includes"] = list(self.source_includes)
            if self.source_excludes:
                src["excludes"] = list(self.source_excludes)
            body["_source"] = src
        return body

    def _open_pit(self, client: Elasticsearch, retry: _Retry) -> tuple[str, int]:
        def open_pit() -> Any:
            try:
                return client.open_point_in_time(index=self.index, keep_alive=self.keep_alive)
            except ApiError as exc:
                text = str(exc.body)
                if exc.meta.status in (400, 404, 405) and (
                    "no handler found" in text or "Incorrect HTTP method" in text
                ):
                    raise _NoPit() from None
                raise

        resp = self._call("open point in time", retry, open_pit)
        shards = int(((resp.get("_shards") or {}).get("total")) or 0)
        return str(resp["id"]), shards

    def _pit_pages(
        self, client: Elasticsearch, window: TimeWindow | None
    ) -> Generator[list[Record], None, None]:
        stop = threading.Event()
        try:
            pit_id, shards = self._open_pit(client, _Retry(self, stop))
        except _NoPit:
            log.warning("Elasticsearch has no point-in-time API here; falling back to scroll")
            yield from self._scroll_pages(client, window)
            return
        state = _PitState(pit_id)
        n = self.slices
        if shards and n > shards:
            log.info("slices=%d capped at the %d primary shard(s) of %s", n, shards, self.index)
            n = shards
        try:
            query = self._build_query(window)
            producers = [
                functools.partial(self._pit_slice, client, state, query, i, n) for i in range(n)
            ]
            yield from _merge(producers, stop)
        finally:
            stop.set()
            try:
                client.close_point_in_time(id=state.pit_id)
            except Exception as exc:  # expired already, or the cluster went away: it times out
                log.info(
                    "closing the point in time failed (%s); it expires on its own",
                    type(exc).__name__,
                )

    def _reopen(
        self, client: Elasticsearch, state: _PitState, seen_gen: int, stop: threading.Event
    ) -> tuple[str, int]:
        with state.lock:
            if state.generation == seen_gen:
                log.warning("Elasticsearch point in time expired; reopening and resuming")
                get_recorder().retry("fetch")
                state.pit_id, _ = self._open_pit(client, _Retry(self, stop))
                state.generation += 1
            return state.pit_id, state.generation

    def _pit_slice(
        self,
        client: Elasticsearch,
        state: _PitState,
        query: dict[str, Any],
        slice_id: int,
        nslices: int,
        stop: threading.Event,
    ) -> Iterator[list[Record]]:
        retry = _Retry(self, stop)
        with state.lock:
            pit_id, gen = state.pit_id, state.generation
        search_after: list[Any] | None = None
        expiries = 0
        base = self._search_body(query)
        base["sort"] = [{"_shard_doc": "asc"}]
        if nslices > 1:
            base["slice"] = {"id": slice_id, "max": nslices}
        while not stop.is_set():
            body = {**base, "pit": {"id": pit_id, "keep_alive": self.keep_alive}}
            if search_after is not None:
                body["search_after"] = search_after
            try:
                resp = self._call(
                    "search",
                    retry,
                    functools.partial(client.search, body=body, allow_partial_search_results=False),
                )
            except _ContextMissing:
                expiries += 1
                if expiries > self.max_retries:
                    raise SourceError(
                        f"Elasticsearch point in time keeps expiring on {self._target()}; "
                        f"raise keep_alive (now {self.keep_alive})"
                    ) from None
                pit_id, gen = self._reopen(client, state, gen, stop)
                continue
            pit_id = str(resp.get("pit_id") or pit_id)  # the newest id for the next request
            with state.lock:
                if state.generation == gen:
                    state.pit_id = pit_id
            shards = resp.get("_shards") or {}
            if shards.get("failed"):
                self._shard_failure(shards, retry)
                continue
            hits = resp["hits"]["hits"]
            if not hits:
                return
            yield [self._record(h) for h in hits]
            search_after = hits[-1]["sort"]
            if len(hits) < self.page_size:
                return

    def _shard_failure(self, shards: dict[str, Any], retry: _Retry) -> None:
        """A page with failed shards is incomplete: ask for it again rather than skip data."""
        reason = ""
        failures = shards.get("failures") or []
        if failures:
            reason = str((failures[0].get("reason") or {}).get("type", ""))
        retry.wait_or_raise(
            _Transient(f"{shards.get('failed')} shard(s) failed {reason}".strip()), "search"
        )

    def _record(self, hit: dict[str, Any]) -> Record:
        rec: Record = {"_id": hit["_id"], **(hit.get("_source") or {})}
        if self.include_index:
            rec["_index"] = hit.get("_index")
        return rec

    # -- scroll fallback -------------------------------------------------------------------

    def _scroll_pages(
        self, client: Elasticsearch, window: TimeWindow | None
    ) -> Generator[list[Record], None, None]:
        stop = threading.Event()
        query = self._build_query(window)
        n = self.slices
        if n > 1:
            count = self._call(
                "count", _Retry(self, stop), lambda: client.count(index=self.index, query=query)
            )
            shards = int((count.get("_shards") or {}).get("total") or 0)
            n = max(1, min(n, shards)) if shards else n
        producers = [functools.partial(self._scroll_slice, client, query, i, n) for i in range(n)]
        try:
            yield from _merge(producers, stop)
        finally:
            stop.set()

    def _scroll_slice(
        self,
        client: Elasticsearch,
        query: dict[str, Any],
        slice_id: int,
        nslices: int,
        stop: threading.Event,
    ) -> Iterator[list[Record]]:
        """A scroll page cannot be asked for twice, so a failure restarts the scroll and the
        documents already yielded (by index and id) are skipped."""
        retry = _Retry(self, stop)
        seen: set[tuple[str, str]] = set()
        body = self._search_body(query)
        body["sort"] = ["_doc"]
        body.pop("track_total_hits")
        if nslices > 1:
            body["slice"] = {"id": slice_id, "max": nslices}
        restarts = 0
        while not stop.is_set():
            scroll_id: str | None = None
            if restarts > self.max_retries:
                raise SourceError(
                    f"Elasticsearch scroll on {self._target()} keeps failing after "
                    f"{self.max_retries} restarts; check the cluster's health or raise keep_alive"
                )
            restarts += 1
            try:
                resp = self._call(
                    "scroll search",
                    retry,
                    lambda: client.search(index=self.index, scroll=self.keep_alive, body=body),
                )
                while not stop.is_set():
                    scroll_id = resp.get("_scroll_id") or scroll_id
                    hits = resp["hits"]["hits"]
                    if not hits:
                        return
                    fresh = [h for h in hits if (h.get("_index", ""), h["_id"]) not in seen]
                    seen.update((h.get("_index", ""), h["_id"]) for h in fresh)
                    if fresh:
                        yield [self._record(h) for h in fresh]
                    resp = self._scroll_next(client, scroll_id, retry)
            except (_ContextMissing, _Transient) as exc:
                log.warning("Elasticsearch scroll interrupted (%s); restarting it", exc)
            finally:
                if scroll_id:
                    try:
                        client.clear_scroll(scroll_id=scroll_id)
                    except Exception as exc:
                        log.info("clearing the scroll failed (%s)", type(exc).__name__)

    def _scroll_next(self, client: Elasticsearch, scroll_id: str | None, retry: _Retry) -> Any:
        started = time.perf_counter()
        try:
            resp = client.scroll(scroll_id=scroll_id, scroll=self.keep_alive)
        except ApiError as exc:
            if exc.meta.status == 404 and _error_type(exc) == "search_context_missing_exception":
                get_recorder().retry("fetch")
                raise _ContextMissing(_error_reason(exc)) from None
            retry.wait_or_raise(exc, "scroll")
            raise _Transient(_error_type(exc)) from None
        except Exception as exc:
            retry.wait_or_raise(exc, "scroll")
            raise _Transient(type(exc).__name__) from None
        retry.ok()
        get_recorder().duration("fetch", time.perf_counter() - started)
        return resp


# -- helpers -------------------------------------------------------------------------------


def _resolve(value: str | None) -> str | None:
    """An ``EnvVar`` read outside a Dagster run is still its name; read the environment."""
    if isinstance(value, dg.EnvVar):
        return value.get_value()
    return value


def date_fields(mapping_response: Mapping[str, Any]) -> list[str]:
    """The ``date``/``date_nanos`` fields of a get-mapping response, dotted (``event.created``),
    in the order of the response, over all its indices. Objects are entered; ``nested``
    fields (a window cannot be a plain range on them), multi-fields and runtime fields not."""
    found: dict[str, None] = {}

    def walk(props: Any, prefix: str) -> None:
        if not isinstance(props, Mapping):
            return
        for name, spec in props.items():
            if not isinstance(spec, Mapping):
                continue
            path = f"{prefix}{name}"
            ftype = spec.get("type")
            if ftype in _DATE_TYPES:
                found.setdefault(path, None)
            elif ftype in (None, "object"):
                walk(spec.get("properties"), path + ".")

    for body in mapping_response.values():
        if isinstance(body, Mapping):
            mappings = body.get("mappings")
            if isinstance(mappings, Mapping):
                walk(mappings.get("properties"), "")
    return list(found)


def _with_scheme(host: str) -> str:
    return host if "://" in host else f"http://{host}"


def _es_time(dt: datetime) -> str:
    """``strict_date_optional_time`` in UTC, keeping sub-second bounds exact."""
    dt = dt.astimezone(timezone.utc)
    if dt.microsecond:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def _error_type(exc: ApiError) -> str:
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            return str(err.get("type", "error"))
        if isinstance(err, str):
            return err[:200]
    return str(exc.message)[:200]


def _error_reason(exc: ApiError) -> str:
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


def _mismatch_message(number: str, major: int, url: str) -> str:
    if major < 8:
        return (
            f"Elasticsearch {number} at {url} is too old: this pipeline supports 8.x and 9.x "
            "clusters; upgrade the cluster"
        )
    return (
        f"Elasticsearch {number} at {url} needs a {major}.x client but elasticsearch "
        f'{CLIENT_VERSION} is installed: pip install "elasticsearch>={major},<{major + 1}"'
    )


_DONE = object()


@dataclass
class _Failed:
    exc: BaseException


def _merge(
    producers: Sequence[Callable[[threading.Event], Iterator[list[Record]]]], stop: threading.Event
) -> Iterator[list[Record]]:
    """Run each slice in its own thread and yield their pages as they come.

    A bounded queue gives back-pressure; the first failure stops the others and is raised.
    """
    if len(producers) == 1:
        try:
            yield from producers[0](stop)
        except _Stopped:
            return
        return
    pages: queue.Queue[Any] = queue.Queue(maxsize=2 * len(producers))

    def put(item: Any) -> None:
        while not stop.is_set():
            try:
                pages.put(item, timeout=0.05)
                return
            except queue.Full:
                continue

    def run(produce: Callable[[threading.Event], Iterator[list[Record]]]) -> None:
        try:
            for page in produce(stop):
                put(page)
                if stop.is_set():
                    return
        except _Stopped:
            pass
        except BaseException as exc:
            put(_Failed(exc))
        finally:
            put(_DONE)

    threads = [
        threading.Thread(target=run, args=(p,), name=f"es-slice-{i}", daemon=True)
        for i, p in enumerate(producers)
    ]
    for t in threads:
        t.start()
    try:
        done = 0
        while done < len(threads):
            item = pages.get()
            if item is _DONE:
                done += 1
            elif isinstance(item, _Failed):
                raise item.exc
            else:
                yield item
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
