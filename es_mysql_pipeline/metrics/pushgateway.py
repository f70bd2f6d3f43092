"""Pushing to a Prometheus Pushgateway, for Dagster runs that end before a scrape.

The run-status sensor pushes (the step hooks only leave their values in the event log).
A push must never fail or stall its caller: every push runs in a helper thread that the
caller waits on for at most ``timeout_seconds``; an error or a timeout becomes a warning
and one more ``pipeline_pushgateway_failures_total``, and the caller goes on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

import dagster as dg
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import (
    basic_auth_handler,
    default_handler,
    delete_from_gateway,
    push_to_gateway,
)
from pydantic import Field, PrivateAttr

from es_mysql_pipeline.metrics.catalog import PrometheusRecorder, active_prometheus_recorder
from es_mysql_pipeline.metrics.recorder import Recorder, set_recorder

logger = logging.getLogger(__name__)

Warn = Callable[[str], Any]


class PushgatewayResource(dg.ConfigurableResource):
    """Where and how the run-status sensor pushes metrics; whether steps record them.

    An empty ``url`` turns pushing off, and then no recorder is installed either, so
    metrics cost nothing. Credentials come from ``dg.EnvVar`` so the UI never shows them.

    Initialising this resource in a step process (every step needs it because the step
    hooks require it) installs a :class:`PrometheusRecorder` there, which the assets
    reach through ``get_recorder()`` and the hooks read when the step ends.
    """

    url: str = Field(default="", description="Pushgateway base URL; empty disables pushing.")
    job_name: str = Field(
        default="es_mysql_pipeline", description="The `job` label of every pushed group."
    )
    pipeline_id: str = Field(default="default", description="The `pipeline_id` label.")
    grouping_labels: dict[str, str] = Field(
        default_factory=dict,
        description="Extra grouping labels (e.g. env); keep them few and bounded.",
    )
    username: str | None = Field(default=None, description="Basic auth user (use dg.EnvVar).")
    password: str | None = Field(default=None, description="Basic auth password (dg.EnvVar).")
    timeout_seconds: float = Field(
        default=2.0, description="Longest one push may hold up a sensor tick."
    )
    source_type: str = Field(default="unknown", description="For pipeline_info.")
    sink_type: str = Field(default="unknown", description="For pipeline_info.")

    _installed: PrometheusRecorder | None = PrivateAttr(default=None)
    _previous: Recorder | None = PrivateAttr(default=None)

    @property
    def enabled(self) -> bool:
        return bool(self.url.strip())

    # -- recorder per process ------------------------------------------------------------
    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Install a recorder in this (step) process unless one is already there (the CLI's)."""
        if self.enabled and active_prometheus_recorder() is None:
            self._installed = PrometheusRecorder(
                self.pipeline_id, source_type=self.source_type, sink_type=self.sink_type
            )
            self._previous = set_recorder(self._installed)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._installed is not None:
            set_recorder(self._previous)
            self._installed = None
            self._previous = None

    # -- pushing -------------------------------------------------------------------------
    def grouping_key(self, **extra: str) -> dict[str, str]:
        """``pipeline_id`` + the configured labels + ``extra`` (e.g. ``step``); never run ids."""
        return {**self.grouping_labels, "pipeline_id": self.pipeline_id, **extra}

    def _handler(self) -> Callable[..., Callable[[], None]]:
        if self.username is None and self.password is None:
            return default_handler
        username, password = self.username or "", self.password or ""

        def handler(
            url: str, method: str, timeout: float | None, headers: Any, data: bytes
        ) -> Callable[[], None]:
            return basic_auth_handler(url, method, timeout, headers, data, username, password)

        return handler

    def push(
        self,
        registry: CollectorRegistry,
        grouping_key: Mapping[str, str],
        *,
        recorder: PrometheusRecorder | None = None,
        warn: Warn | None = None,
    ) -> bool:
        """PUT ``registry`` as the group ``grouping_key``; ``False`` (and a warning) on failure.

        ``recorder`` (if given) counts the failure in ``pipeline_pushgateway_failures_total``.
        """
        if not self.enabled:
            return True
        key = dict(grouping_key)
        return self._bounded(
            lambda: push_to_gateway(
                self.url,
                job=self.job_name,
                registry=registry,
                grouping_key=key,
                timeout=self.timeout_seconds,
                handler=self._handler(),
            ),
            f"push of {key}",
            recorder,
            warn,
        )

    def delete(self, grouping_key: Mapping[str, str], *, warn: Warn | None = None) -> bool:
        """Remove one group (e.g. a step that no longer exists)."""
        if not self.enabled:
            return True
        key = dict(grouping_key)
        return self._bounded(
            lambda: delete_from_gateway(
                self.url,
                job=self.job_name,
                grouping_key=key,
                timeout=self.timeout_seconds,
                handler=self._handler(),
            ),
            f"delete of {key}",
            None,
            warn,
        )

    def _bounded(
        self,
        action: Callable[[], None],
        what: str,
        recorder: PrometheusRecorder | None,
        warn: Warn | None,
    ) -> bool:
        """Run ``action`` in a daemon thread; wait at most the timeout (plus a little)."""
        errors: list[BaseException] = []

        def target() -> None:
            try:
                action()
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=target, name="pushgateway-push", daemon=True)
        thread.start()
        thread.join(self.timeout_seconds + 0.5)
        if thread.is_alive():
            problem = f"no answer within {self.timeout_seconds}s"
        elif errors:
            problem = f"{type(errors[0]).__name__}: {errors[0]}"
        else:
            return True
        message = (
            f"Pushgateway {self.url}: {what} failed ({problem}); metrics of this push are "
            "lost, the run goes on"
        )
        (warn or logger.warning)(message)
        if recorder is not None:
            recorder.push_failed()
        return False
