"""Glue for the CLI: turn metrics on for the whole process and serve them while it runs."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from typing import Any

from es_mysql_pipeline import __version__
from es_mysql_pipeline.metrics.catalog import PrometheusRecorder
from es_mysql_pipeline.metrics.endpoint import MetricsServer, start_metrics_server
from es_mysql_pipeline.metrics.recorder import set_recorder


def _describe(resource: Any) -> dict[str, str]:
    describe = getattr(resource, "describe", None)
    return dict(describe()) if callable(describe) else {"type": type(resource).__name__}


@dataclass
class CliMetrics:
    """The CLI's recorder and endpoint: it calls succeeded() or failed(), then stop()."""

    recorder: PrometheusRecorder
    server: MetricsServer
    _started: float = field(default_factory=time.perf_counter)

    def succeeded(self) -> None:
        self.recorder.duration("run", time.perf_counter() - self._started)
        self.recorder.success()
        self.recorder.state("stopped")

    def failed(self) -> None:
        self.recorder.duration("run", time.perf_counter() - self._started)
        self.recorder.state("error")

    def stop(self) -> None:
        """Stop the endpoint (port closed, thread joined) and turn metrics off again."""
        self.server.stop()
        set_recorder(None)


def start_cli_metrics(args: argparse.Namespace, resources: dict[str, Any]) -> CliMetrics:
    """Install the process recorder and start ``/metrics`` on ``--metrics-host:--metrics-port``
    (a port in use raises a one-line :class:`PipelineError` naming ``--metrics-port``)."""
    info = {
        "version": __version__,
        "pipeline_id": args.pipeline_id,
        "source": _describe(resources.get("source")),
        "sink": _describe(resources.get("sink")),
    }
    types = {f"{kind}_type": info[kind].get("type", "unknown") for kind in ("source", "sink")}
    recorder = PrometheusRecorder(args.pipeline_id, **types)
    set_recorder(recorder)
    try:
        server = start_metrics_server(
            args.metrics_host, args.metrics_port, recorder.registry, info, recorder=recorder
        )
    except Exception:
        set_recorder(None)
        raise
    recorder.state("running")
    return CliMetrics(recorder, server)
