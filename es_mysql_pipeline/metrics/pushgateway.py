"""Pushing to a Prometheus Pushgateway, for Dagster runs that end before a scrape.

The run-status sensor pushes (the step hooks only leave their values in the event log).
A push must never fail or stall its caller: every push runs in a helper thread that the
caller waits on for at most ``timeout_seconds``; an error or a timeout becomes a warning
and one more ``pipeline_pushgateway_failures_total``, and the caller goes on.

A pipeline that no longer exists keeps its last groups in the Pushgateway (they never
expire); :meth:`PushgatewayResource.retire` deletes them, or from a shell::

    python -m es_mysql_pipeline.metrics.pushgateway http://pushgateway:9091 retire OLD_ID
"""

from __future__ import annotations

import base64
import json
import logging
import sys
import threading
import urllib.request
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
        then: str = "the run goes on",
    ) -> bool:
        """PUT ``registry`` as the group ``grouping_key``; ``False`` (and a warning) on failure.

        ``recorder`` (if given) counts the failure in ``pipeline_pushgateway_failures_total``;
        ``then`` ends the warning: what happens to the values that were not pushed.
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
            then,
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
            "the group stays",
        )

    def groups(self) -> list[dict[str, str]]:
        """The grouping labels of every group of this ``job_name`` (the Pushgateway's API)."""
        request = urllib.request.Request(self.url.rstrip("/") + "/api/v1/metrics")
        if self.username is not None or self.password is not None:
            token = f"{self.username or ''}:{self.password or ''}".encode()
            request.add_header("Authorization", "Basic " + base64.b64encode(token).decode())
        with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
            data = json.load(response)["data"]
        return [
            {str(k): str(v) for k, v in group["labels"].items()}
            for group in data
            if group["labels"].get("job") == self.job_name
        ]

    def retire(self, pipeline_id: str, *, warn: Warn | None = None) -> int:
        """Delete every group of ``pipeline_id`` (its totals and its steps); how many.

        For a pipeline that no longer exists: remove it (or its sensor) first, or the
        sensor pushes its groups again on its next tick.
        """
        wanted = {**self.grouping_labels, "pipeline_id": pipeline_id}
        deleted = 0
        for labels in self.groups():
            if all(labels.get(k) == v for k, v in wanted.items()):
                key = {k: v for k, v in labels.items() if k != "job"}
                deleted += self.delete(key, warn=warn)
        return deleted

    def _bounded(
        self,
        action: Callable[[], None],
        what: str,
        recorder: PrometheusRecorder | None,
        warn: Warn | None,
        then: str,
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
        message = f"Pushgateway {self.url}: {what} failed ({problem}); {then}"
        (warn or logger.warning)(message)
        if recorder is not None:
            recorder.push_failed()
        return False


def main(argv: list[str] | None = None) -> int:
    """``python -m es_mysql_pipeline.metrics.pushgateway URL retire PIPELINE_ID [JOB]``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (3, 4) or args[1] != "retire":
        print(main.__doc__, file=sys.stderr)
        return 2
    job = args[3] if len(args) == 4 else "es_mysql_pipeline"
    deleted = PushgatewayResource(url=args[0], job_name=job, timeout_seconds=10).retire(args[2])
    print(f"deleted {deleted} group(s) of pipeline {args[2]} from {args[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
