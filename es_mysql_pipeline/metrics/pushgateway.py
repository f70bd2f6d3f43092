"""Pushing to a Prometheus Pushgateway, for Dagster runs that end before a scrape.

Only the metrics sensor pushes. A push never fails or stalls its caller: it runs in a
helper thread waited on for at most ``timeout_seconds``; an error or a timeout is a warning
and one more ``pipeline_pushgateway_failures_total``. A retired pipeline's groups stay in
the Pushgateway until deleted: :meth:`PushgatewayResource.retire`, or from a shell::

    python -m es_mysql_pipeline.metrics.pushgateway http://pushgateway:9091 retire OLD_ID
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import sys
import threading
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

import dagster as dg
from prometheus_client.exposition import (
    basic_auth_handler,
    default_handler,
    delete_from_gateway,
    push_to_gateway,
)
from prometheus_client.registry import Collector
from pydantic import Field, PrivateAttr

from es_mysql_pipeline.metrics.catalog import PrometheusRecorder, active_prometheus_recorder
from es_mysql_pipeline.metrics.recorder import Recorder, set_recorder

logger = logging.getLogger(__name__)

Warn = Callable[[str], Any]


class PushgatewayResource(dg.ConfigurableResource):
    """Where and how the metrics sensor pushes; whether steps record metrics at all.

    An empty ``url`` turns pushing off, and then no recorder is installed either. Set up in
    a step process (the step hooks require it), it installs a :class:`PrometheusRecorder`
    that the assets record through and the hooks read when the step ends.
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

    #: The recorder this resource replaced while its own is installed.
    _previous: Recorder | None = PrivateAttr(default=None)

    @property
    def enabled(self) -> bool:
        return bool(self.url.strip())

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Install a recorder in this (step) process unless one is already there (the CLI's)."""
        if self.enabled and active_prometheus_recorder() is None:
            recorder = PrometheusRecorder(
                self.pipeline_id, source_type=self.source_type, sink_type=self.sink_type
            )
            self._previous = set_recorder(recorder)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._previous is not None:
            set_recorder(self._previous)
            self._previous = None

    def grouping_key(self, **extra: str) -> dict[str, str]:
        """``pipeline_id`` + the configured labels + ``extra`` (e.g. ``step``); never run ids."""
        return {**self.grouping_labels, "pipeline_id": self.pipeline_id, **extra}

    def _auth(self) -> bool:
        return self.username is not None or self.password is not None

    def push(
        self,
        registry: Collector,
        grouping_key: Mapping[str, str],
        *,
        recorder: PrometheusRecorder | None = None,
        warn: Warn | None = None,
        then: str = "the run goes on",
    ) -> bool:
        """PUT ``registry`` as the group ``grouping_key``; ``False`` (and a warning) on failure.

        ``recorder`` (if given) counts a failure; ``then`` ends the warning: what happens to
        the values that were not pushed.
        """
        return self._bounded(push_to_gateway, grouping_key, warn, then, recorder, registry=registry)

    def delete(self, grouping_key: Mapping[str, str]) -> bool:
        """Remove one group (e.g. a step that no longer exists)."""
        return self._bounded(delete_from_gateway, grouping_key, None, "the group stays")

    def groups(self) -> list[dict[str, str]]:
        """The grouping labels of every group of this ``job_name`` (the Pushgateway's API)."""
        request = urllib.request.Request(self.url.rstrip("/") + "/api/v1/metrics")
        if self._auth():
            token = f"{self.username or ''}:{self.password or ''}".encode()
            request.add_header("Authorization", "Basic " + base64.b64encode(token).decode())
        with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
            data = json.load(response)["data"]
        return [
            {str(k): str(v) for k, v in group["labels"].items()}
            for group in data
            if group["labels"].get("job") == self.job_name
        ]

    def retire(self, pipeline_id: str) -> int:
        """Delete every group of ``pipeline_id`` (totals and steps); how many. Remove the
        pipeline (or its sensor) first, or its next tick pushes the groups again."""
        wanted = {**self.grouping_labels, "pipeline_id": pipeline_id}
        return sum(
            self.delete({k: v for k, v in labels.items() if k != "job"})
            for labels in self.groups()
            if all(labels.get(k) == v for k, v in wanted.items())
        )

    def _bounded(
        self,
        call: Callable[..., None],
        grouping_key: Mapping[str, str],
        warn: Warn | None,
        then: str,
        recorder: PrometheusRecorder | None = None,
        **kw: Any,
    ) -> bool:
        """``call`` (push or delete) in a daemon thread, waited on for at most the timeout
        (plus a little); ``True`` with pushing off."""
        if not self.enabled:
            return True
        handler = default_handler
        if self._auth():
            user, password = self.username or "", self.password or ""
            handler = functools.partial(basic_auth_handler, username=user, password=password)
        key, errors = dict(grouping_key), []

        def target() -> None:
            try:
                call(
                    self.url,
                    job=self.job_name,
                    grouping_key=key,
                    timeout=self.timeout_seconds,
                    handler=handler,
                    **kw,
                )
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
        what = "push" if call is push_to_gateway else "delete"
        (warn or logger.warning)(
            f"Pushgateway {self.url}: {what} of {key} failed ({problem}); {then}"
        )
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
