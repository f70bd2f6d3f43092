"""The Elasticsearch source resource: settings, credentials, the client and the read.

The reading is in :mod:`es_mysql_pipeline.readers.elasticsearch`: paging in its ``pit``
(point in time + ``search_after``), what a failure means in its ``errors``; the time field
in :mod:`.time_field`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import fields, replace
from datetime import datetime, timezone
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import dagster as dg
from elasticsearch import Elasticsearch
from pydantic import PrivateAttr

from es_mysql_pipeline.errors import ConfigError
from es_mysql_pipeline.readers.elasticsearch import slice_parts
from es_mysql_pipeline.readers.elasticsearch.connection import Connection
from es_mysql_pipeline.readers.elasticsearch.errors import ErrorPolicy, check_version
from es_mysql_pipeline.readers.elasticsearch.paging import PageSettings, Paging
from es_mysql_pipeline.records import (
    Batch,
    Record,
    TimeWindow,
    rebatch,
    timestamp_setting,
    unplaced_reason,
)
from es_mysql_pipeline.resources.sources.base import RecordSource
from es_mysql_pipeline.resources.sources.elasticsearch.time_field import (
    TimeField,
    detect_time_field,
)
from es_mysql_pipeline.staging import StagedPart
from es_mysql_pipeline.worker_processes import may_spawn, process_count

log = logging.getLogger(__name__)

MAX_PAGE_SIZE = 10_000  # index.max_result_window: ES rejects larger pages
_KEEP_ALIVE_RE = re.compile(r"^\d+(nanos|micros|ms|s|m|h|d)$")


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
    #: parallel PIT slices, each read by a fetch worker process (see :meth:`read_parts`),
    #: capped at the primary shard count; 0 (the default): one per worker process. A read
    #: in one process (one worker process, or none allowed) reads one slice.
    slices: int = 0
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
    _time_field: TimeField | None = PrivateAttr(default=None)

    # -- RecordSource ----------------------------------------------------------------------

    def id_key(self) -> str:
        return "_id"

    def timestamp_key(self) -> str | None:
        """The configured time field, or the one detected from the index mapping (one
        mapping request, then cached); ``None`` when there is none."""
        return self._resolve_time_field().name

    def describe(self) -> dict[str, str]:
        """Never connects: the time field shows as configured, as detected (``event_time
        (detected)``, ``none (not detected)``) or, before the first read, as ``auto (from
        the mapping)``."""
        hosts = ",".join(self._hosts()[0])
        detect, name = timestamp_setting(self.timestamp_field)
        if not detect:
            field = name or "none"
        elif self._time_field is None:
            field = "auto (from the mapping)"
        elif self._time_field.name is None:
            field = "none (not detected)"
        else:
            field = f"{self._time_field.name} (detected)"
        return {
            "type": "elasticsearch",
            "target": f"{hosts}/{self.index}",
            "hosts": hosts,
            "index": self.index,
            "timestamp_field": field,
        }

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
        with self._connection().client() as client:
            check_version(client, self._policy())

    def read_batches(self, window: TimeWindow | None, batch_size: int) -> Iterator[Batch]:
        return self._batches(window, batch_size)

    def read_unplaced(self, batch_size: int) -> Iterator[list[tuple[Record, str]]]:
        """Only the documents without a time: asked for as such (``must_not exists``), not
        found by reading the whole index. A value the index could not parse as a date is
        not indexed either (``ignore_malformed``), so those come too."""
        ts_key = self.timestamp_key()
        if ts_key is None:
            return
        user = self._user_query()
        query: dict[str, Any] = {"bool": {"must_not": [{"exists": {"field": ts_key}}]}}
        if user is not None:
            query["bool"]["filter"] = [user]
        for batch in self._batches(None, batch_size, lambda: query):
            out = [(r, why) for r in batch if (why := unplaced_reason(r, ts_key))]
            if out:
                yield out

    def _batches(
        self,
        window: TimeWindow | None,
        batch_size: int,
        query: Callable[[], dict[str, Any]] | None = None,
    ) -> Generator[Batch, None, None]:
        """The index read as one slice in this process, the next page asked for while this
        one is worked on; leaving stops the read and closes the PIT before the client goes."""
        with (
            self._reading(window, batch_size, 1, query) as (paging, cursors, stop),
            contextlib.closing(
                slice_parts.one_slice(paging, cursors[0], stop, paging.records)
            ) as pages,
        ):
            yield from rebatch(pages, batch_size)

    def read_ids(self, window: TimeWindow | None) -> set[str]:
        """The ids of the window's documents only: pages of ``_source: false``, ten times
        the page size. Any failed shard, expired point in time or error raises."""
        with self._reading(window, 1, 1) as (paging, cursors, stop):
            size = min(MAX_PAGE_SIZE, self.page_size * 10)
            ids_paging = replace(paging, settings=replace(paging.settings, page_size=size))
            pages = cursors[0].pages(ids_paging, paging.query(), stop, ids=True)
            return {str(hit["_id"]) for page in pages for hit in page}

    def read_parts(
        self, window: TimeWindow | None, batch_size: int, processes: int
    ) -> Generator[StagedPart, None, None] | None:
        """With more than one slice (by default one per worker process, capped at the
        primary shard count), each slice is read by a worker process (see
        :mod:`~es_mysql_pipeline.readers.elasticsearch.slice_parts`): parsing and staging
        pages is one core's work per process. One slice is read in this process, as
        :meth:`read_batches` reads it: ``None`` here, or staged in parts for one shard."""
        workers = process_count(processes)
        if self.slices == 1 or workers < 2 or not may_spawn():
            return None
        return self._parts(window, batch_size, workers)

    def _parts(
        self, window: TimeWindow | None, batch_size: int, workers: int
    ) -> Generator[StagedPart, None, None]:
        ts_key = self.timestamp_key()
        with self._reading(window, batch_size, self.slices or workers) as (paging, cursors, stop):
            read = slice_parts.SliceRead(
                connection=self._connection(),
                policy=paging.policy,
                settings=self._page_settings(),
                batch_size=batch_size,
                pages_per_job=max(1, slice_parts.RECORDS_PER_JOB // self.page_size),
            )
            yield from slice_parts.pit_parts(paging, cursors, stop, read, workers, ts_key)

    @contextlib.contextmanager
    def _reading(
        self,
        window: TimeWindow | None,
        batch_size: int,
        slices: int,
        query: Callable[[], dict[str, Any]] | None = None,
    ) -> Iterator[tuple[Paging, list[slice_parts.SliceCursor], threading.Event]]:
        """A client checked against the server, the paging of this read, and a point in
        time with a cursor per slice (see :func:`~.slice_parts.point_in_time`); the client is
        closed on the way out (the client refuses servers of another major, so the server
        is 8.0 or later and has point-in-time search)."""
        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size} must be at least 1")
        self._validate()
        policy = self._policy()
        with self._connection().client() as client:
            check_version(client, policy)
            if window is not None:
                self._resolve_time_field(client)
            log.info(
                "Reading Elasticsearch %s%s with PIT + search_after, page size %d, %d slice(s)",
                policy.target,
                f" for {window.label()}" if window else "",
                self.page_size,
                slices,
            )
            paging = Paging(
                self._page_settings(),
                client,
                policy,
                slices,
                query or (lambda: self._build_query(window)),
            )
            with slice_parts.point_in_time(paging) as (cursors, stop):
                yield paging, cursors, stop

    # -- settings --------------------------------------------------------------------------

    def _page_settings(self) -> PageSettings:
        return PageSettings(**{f.name: getattr(self, f.name) for f in fields(PageSettings)})

    def _validate(self) -> None:
        self._validate_hosts()
        if not self.index.strip():
            raise ConfigError("es_index: give an index name or pattern, e.g. logs-*")
        if not 1 <= self.page_size <= MAX_PAGE_SIZE:
            raise ConfigError(
                f"page_size={self.page_size} must be between 1 and {MAX_PAGE_SIZE} "
                "(Elasticsearch's index.max_result_window)"
            )
        if self.slices < 0:
            raise ConfigError(f"slices={self.slices} must be 0 (one per worker process) or more")
        if self.max_retries < 0:
            raise ConfigError(f"max_retries={self.max_retries} must be 0 or more")
        if self.request_timeout <= 0:
            raise ConfigError(f"request_timeout={self.request_timeout} must be positive")
        if not _KEEP_ALIVE_RE.match(self.keep_alive):
            raise ConfigError(f"keep_alive={self.keep_alive!r} must be a time value like 2m or 90s")
        if self.ca_certs and not os.path.isfile(self.ca_certs):
            raise ConfigError(f"ca_certs: {self.ca_certs!r} does not exist or is not a file")
        username = _resolve(self.username) or self._hosts()[1]
        if self.api_key is None and _resolve(self.password) and not username:
            raise ConfigError("ES_PASSWORD is set but no username: set es_username as well")
        self._user_query()

    def _validate_hosts(self) -> None:
        if not self.hosts or not all(h.strip() for h in self.hosts):
            raise ConfigError("es_url: give at least one Elasticsearch URL, e.g. localhost:9200")
        redact = self._connection().redact
        for host in self.hosts:
            parts = urlsplit(_with_scheme(host))
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(
                    f"es_url: {redact(host)!r} is not an http(s) URL like "
                    "https://es.example.com:9200"
                )
            try:
                parts.port  # noqa: B018 - raises on a bad port
            except ValueError:
                raise ConfigError(f"es_url: {redact(host)!r} has an invalid port") from None

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
            bounds = {"gte": _es_time(window.start), "lt": _es_time(window.end)}
            filters.append({"range": {ts_field: {**bounds, "format": "strict_date_optional_time"}}})
        if not filters:
            return {"match_all": {}}
        return {"bool": {"filter": filters}}

    def _hosts(self) -> tuple[list[str], str | None, str | None]:
        """Host URLs with any ``user:password@`` removed, and the first such user and
        password (they go into basic auth)."""
        urls, user, password = [], None, None
        for host in self.hosts:
            parts = urlsplit(_with_scheme(host.strip()))
            if parts.username and user is None:
                user, password = parts.username, parts.password or ""
            netloc = parts.netloc.rpartition("@")[2]
            urls.append(urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", "")))
        return urls, user, password

    def _policy(self) -> ErrorPolicy:
        return ErrorPolicy(
            url=",".join(self._hosts()[0]),
            index=self.index,
            request_timeout=self.request_timeout,
            max_retries=self.max_retries,
            retry_backoff=self.retry_backoff,
            retry_backoff_max=self.retry_backoff_max,
            # plain values only: the policy goes to worker processes, the resource does not
            redact=self._connection().redact,
        )

    def _connection(self) -> Connection:
        api_key, password = _resolve(self.api_key), _resolve(self.password)
        urls, user, url_password = self._hosts()
        user = _resolve(self.username) or user
        if password is None:
            password = url_password
        return Connection(
            urls=tuple(urls),
            request_timeout=self.request_timeout,
            connections_per_node=max(10, self.slices + 2),
            ca_certs=self.ca_certs,
            verify_certs=self.verify_certs,
            api_key=api_key or None,
            basic_auth=(user, password or "") if user and not api_key else None,
            secrets=(api_key, password, url_password),
        )

    def _resolve_time_field(self, client: Elasticsearch | None = None) -> TimeField:
        """The time field, detected at most once (a missing index is asked again)."""
        if self._time_field is not None:
            return self._time_field
        detect, name = timestamp_setting(self.timestamp_field)
        if not detect:
            choice = TimeField(name, "configured")
        elif client is None:
            self._validate()
            with self._connection().client() as own:
                return self._resolve_time_field(own)
        else:
            choice = detect_time_field(client, self._policy(), self.timestamp_setting_names)
        if choice.how != "missing":
            self._time_field = choice
        return choice


def _resolve(value: str | None) -> str | None:
    """An ``EnvVar`` read outside a Dagster run is still its name; read the environment."""
    if isinstance(value, dg.EnvVar):
        return value.get_value()
    return value


def _with_scheme(host: str) -> str:
    return host if "://" in host else f"http://{host}"


def _es_time(dt: datetime) -> str:
    """``strict_date_optional_time`` in UTC, keeping sub-second bounds exact."""
    dt = dt.astimezone(timezone.utc)
    if dt.microsecond:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")
