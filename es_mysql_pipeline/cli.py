"""``es-mysql-pipeline``: the seed script's command line, running the same Dagster assets.

Exit codes: 0 success; 1 the run failed or more records failed than ``--max-failed-ratio``;
2 bad usage or configuration (one line on stderr, no traceback unless ``--debug``).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from es_mysql_pipeline import __version__, lifecycle
from es_mysql_pipeline.errors import ConfigError, PipelineError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line and exit 2 like every other config error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="es-mysql-pipeline",
        description="Move records from CSV/JSONL or Elasticsearch into MySQL, SQLite or JSONL.",
    )
    a = p.add_argument
    a("--version", action="version", version=f"%(prog)s {__version__}")
    src = p.add_argument_group("source")
    src.add_argument(
        "--source_type", "--source-type", choices=["csv", "elasticsearch"], default="csv"
    )
    src.add_argument("--csv_file", "--csv-file", help="CSV or JSON Lines input file")
    src.add_argument("--delimiter", default=",")
    src.add_argument("--encoding", default="utf-8-sig")
    src.add_argument(
        "--id_column",
        "--id-column",
        default="id",
        help="source field holding the primary key (CSV; default id)",
    )
    src.add_argument(
        "--timestamp_column",
        "--timestamp-column",
        default=None,
        help="source field with the event time (default: detected from the header, e.g. "
        "@timestamp, timestamp, ts, time, event_time, created_at; none: there is none)",
    )
    src.add_argument(
        "--es_url", "--es-url", action="append", help="Elasticsearch URL; repeat for several hosts"
    )
    src.add_argument("--es_index", "--es-index", help="index name or pattern, e.g. logs-*")
    src.add_argument("--es_query", "--es-query", help="Query DSL JSON combined with the window")
    src.add_argument(
        "--es_timestamp_field",
        "--es-timestamp-field",
        default=None,
        help="source field with the event time "
        "(default: detected from the mapping; none: there is none)",
    )
    src.add_argument("--es_ca_certs", "--es-ca-certs", help="CA bundle for HTTPS")
    src.add_argument("--es_user", "--es-user", help="user name; password from ES_PASSWORD")
    src.add_argument("--es_slices", "--es-slices", type=int, default=1)
    sink = p.add_argument_group("sink")
    sink.add_argument(
        "--sink_type", "--sink-type", choices=["file", "mysql", "sqlite"], default="file"
    )
    sink.add_argument("--output_file", "--output-file", help="JSON Lines output (file sink)")
    sink.add_argument("--db_host", "--db-host", default="127.0.0.1")
    sink.add_argument("--db_port", "--db-port", type=int, default=3306)
    sink.add_argument("--db_user", "--db-user", default="root")
    sink.add_argument("--db_pass", "--db-pass", help=argparse.SUPPRESS)
    sink.add_argument("--db_name", "--db-name", default="test")
    sink.add_argument("--db_table", "--db-table", default="records")
    sink.add_argument("--db_path", "--db-path", help="SQLite database file (sqlite sink)")
    sink.add_argument("--db_ssl_ca", "--db-ssl-ca", help="CA bundle: connect to MySQL over TLS")
    sink.add_argument(
        "--write-mode", "--write_mode", choices=["skip", "upsert", "append"], default="skip"
    )
    sink.add_argument(
        "--schema-contract",
        "--schema_contract",
        choices=["evolve", "freeze", "discard"],
        default="evolve",
        help="SQL sinks, data that does not fit the table: evolve adds columns and widens "
        "text (default), freeze refuses the load, discard leaves new fields out",
    )
    run = p.add_argument_group("run")
    run.add_argument("--batch-size", "--batch_size", type=int, default=1000)
    run.add_argument("--workers", type=int, default=2, help="load threads (connections)")
    run.add_argument(
        "--transform-processes",
        type=int,
        default=0,
        help="worker processes for the transform of 50,000+ records (0: one per core, max 4)",
    )
    run.add_argument("--start", help="first day to load (YYYY-MM-DD, UTC)")
    run.add_argument("--end", help="day after the last one to load (exclusive)")
    run.add_argument("--pipeline-id", "--pipeline_id", default="default")
    run.add_argument("--dead-letter-dir", default="dead_letter")
    run.add_argument("--staging-dir", help="where staged files go (default: a temp dir)")
    run.add_argument("--analyzer", help="dotted path of a per-record analyzer callable")
    run.add_argument(
        "--max-failed-ratio",
        type=float,
        default=0.05,
        help="exit 1 when failed/processed exceeds this; stop early when more than this "
        "share of the records fail for the same reason (default 0.05)",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--debug", action="store_true", help="show tracebacks and Dagster logs")
    obs = p.add_argument_group("metrics")
    obs.add_argument(
        "--metrics-port",
        "--metrics_port",
        type=int,
        help="serve /metrics, /health and /info on this port",
    )
    obs.add_argument("--metrics-host", "--metrics_host", default="127.0.0.1")
    obs.add_argument(
        "--metrics-linger",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="keep /metrics up this long after the run so Prometheus scrapes the final counts",
    )
    return p


@dataclass
class Summary:
    """What the run did, for the table printed at the end."""

    counts: dict[str, Any] = field(default_factory=dict)
    elapsed: float = 0.0


def build_resources(args: argparse.Namespace) -> dict[str, Any]:
    """Map flags to the same resources the Dagster definitions use."""
    from es_mysql_pipeline.io_manager import StagingIOManagerResource
    from es_mysql_pipeline.resources.settings import PipelineSettings
    from es_mysql_pipeline.resources.sinks import JsonlSink, SqlSink
    from es_mysql_pipeline.resources.sources import CsvSource

    source: Any
    if args.source_type == "csv":
        if not args.csv_file:
            raise ConfigError("--csv_file is required with --source_type csv")
        source = CsvSource(
            path=args.csv_file,
            delimiter=args.delimiter,
            encoding=args.encoding,
            id_column=args.id_column,
            timestamp_column=args.timestamp_column,
        )
    else:
        source = _elasticsearch_source(args)

    sink: Any
    common = {"batch_size": args.batch_size, "workers": args.workers, "write_mode": args.write_mode}
    if args.batch_size < 1 or args.workers < 1:
        raise ConfigError("--batch-size and --workers must be at least 1")
    if args.transform_processes < 0:
        raise ConfigError("--transform-processes must be 0 (one per core) or more")
    if not 0 <= args.max_failed_ratio <= 1:
        raise ConfigError("--max-failed-ratio must be between 0 and 1")
    if args.sink_type == "file":
        if not args.output_file:
            raise ConfigError("--output_file is required with --sink_type file")
        sink = JsonlSink(path=args.output_file, **common)
    elif args.sink_type == "sqlite":
        if not args.db_path:
            raise ConfigError("--db_path is required with --sink_type sqlite")
        sink = SqlSink(
            url=f"sqlite:///{args.db_path}",
            table=args.db_table,
            schema_contract=args.schema_contract,
            **common,
        )
    else:
        password = os.environ.get("DB_PASSWORD")
        if args.db_pass:
            logging.getLogger("es_mysql_pipeline").warning(
                "--db_pass is visible to other users in the process list; "
                "set DB_PASSWORD in the environment instead"
            )
            password = args.db_pass
        from sqlalchemy.engine import URL

        url = URL.create(
            "mysql+pymysql",
            username=args.db_user,
            host=args.db_host,
            port=args.db_port,
            database=args.db_name,
        )
        sink = SqlSink(
            url=url.render_as_string(hide_password=False),
            password=password or None,
            table=args.db_table,
            ssl_ca=args.db_ssl_ca,
            schema_contract=args.schema_contract,
            **common,
        )
    settings = PipelineSettings(
        pipeline_id=args.pipeline_id,
        dead_letter_dir=args.dead_letter_dir,
        fetch_batch_size=max(args.batch_size, 1000),
        analyzer=args.analyzer,
        transform_processes=args.transform_processes,
        max_failed_ratio=args.max_failed_ratio,
    )
    staging = StagingIOManagerResource(base_path=args.staging_dir or "")
    return {"source": source, "sink": sink, "settings": settings, "io_manager": staging}


def _elasticsearch_source(args: argparse.Namespace) -> Any:
    if not args.es_url or not args.es_index:
        raise ConfigError("--es_url and --es_index are required with --source_type elasticsearch")
    try:
        from es_mysql_pipeline.resources.sources.elasticsearch import ElasticsearchSource
    except ImportError as exc:  # pragma: no cover - the module ships with the package
        raise ConfigError(f"Elasticsearch source unavailable: {exc}") from None
    return ElasticsearchSource(
        hosts=args.es_url,
        index=args.es_index,
        query=args.es_query,
        timestamp_field=args.es_timestamp_field,
        api_key=os.environ.get("ES_API_KEY") or None,
        username=args.es_user or os.environ.get("ES_USER") or None,
        password=os.environ.get("ES_PASSWORD") or None,
        ca_certs=args.es_ca_certs,
        page_size=min(max(args.batch_size, 1), 10_000),
        slices=args.es_slices,
    )


def preflight(resources: dict[str, Any]) -> None:
    """Fail fast, before any data moves, on settings that cannot work."""
    resources["source"].check()
    sink = resources["sink"]
    sink.check()
    if hasattr(sink, "engine"):
        engine = sink.engine()
        try:
            with engine.connect():
                pass
        except Exception as exc:
            from es_mysql_pipeline.resources.sinks.sql.errors import connect_hint

            raise ConfigError(
                f"cannot connect to {sink.describe()['target']}: {sink.clean_error(exc)}"
                + connect_hint(exc)
            ) from None
        finally:
            engine.dispose()


class Progress:
    """A one-line progress bar on a terminal, a log line every few seconds otherwise."""

    def __init__(self, enabled: bool, stream: Any = sys.stderr) -> None:
        self.tty = enabled and stream.isatty()
        self.enabled = enabled
        self.stream = stream
        self.started = time.monotonic()
        self.last = 0.0 if self.tty else self.started
        self.lock = threading.Lock()

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        with self.lock:
            if now - self.last < (0.2 if self.tty else 5.0):
                return
            self.last = now
            rate = done / max(now - self.started, 1e-6)
            if total:
                frac = min(done / total, 1.0)
                bar = "#" * int(frac * 30)
                text = f"{stage:9s} [{bar:30s}] {done:>10,}/{total:,} {rate:,.0f}/s"
            else:
                text = f"{stage:9s} {done:>10,} records {rate:,.0f}/s"
            if self.tty:
                self.stream.write("\r" + text + " " * 4)
            else:
                self.stream.write(text + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\r" + " " * 80 + "\r")
            self.stream.flush()


def run(args: argparse.Namespace) -> int:
    import dagster as dg

    from es_mysql_pipeline.assets import build_assets

    resources = build_resources(args)
    preflight(resources)
    staging_tmp = None
    if not args.staging_dir:
        staging_tmp = tempfile.TemporaryDirectory(prefix="es-mysql-pipeline-")
        resources["io_manager"] = type(resources["io_manager"])(base_path=staging_tmp.name)
    metrics = _start_metrics(args, resources)
    window = {"start": args.start, "end": args.end}
    if bool(args.start) != bool(args.end):
        raise ConfigError("give both --start and --end (YYYY-MM-DD), or neither")
    if args.start:
        from es_mysql_pipeline.records import TimeWindow

        try:
            resources["source"].require_timestamp(TimeWindow.from_dates(args.start, args.end))
        except ValueError as exc:
            raise ConfigError(f"--start/--end: {exc}") from None
    progress = Progress(not args.no_progress)
    lifecycle.set_progress(progress)
    started = time.perf_counter()
    run_config = {
        "ops": {
            name: {"config": window} for name in ("raw_records", "clean_records", "loaded_records")
        },
        "loggers": {"console": {"config": {"log_level": "DEBUG" if args.debug else "CRITICAL"}}},
    }
    try:
        result = _in_background(
            lambda: dg.materialize(
                build_assets(None),
                resources=resources,
                run_config=run_config,
                raise_on_error=False,
            )
        )
    finally:
        progress.close()
        lifecycle.set_progress(None)
        if staging_tmp is not None:
            staging_tmp.cleanup()
    elapsed = time.perf_counter() - started
    if not result.success:
        if metrics is not None:
            metrics.failed()
        _stop_metrics(metrics, args.metrics_linger)
        message, config_error = _failure(result)
        if lifecycle.stop_requested():
            print(f"es-mysql-pipeline: {message}", file=sys.stderr)
            return 130
        print(f"es-mysql-pipeline: error: {message}", file=sys.stderr)
        return EXIT_USAGE if config_error else EXIT_FAILED
    load = _metadata(result, "loaded_records")
    meta = {name: _metadata(result, f"{name}_records") for name in ("raw", "clean")}
    stages = {
        "raw": meta["raw"].get("duration_seconds"),
        "clean": meta["clean"].get("duration_seconds"),
        "loaded": load.get("duration_seconds"),
    }
    _print_summary(load, elapsed, stages, meta["raw"].get("timestamp_field"))
    if metrics is not None:
        metrics.succeeded()
    _stop_metrics(metrics, args.metrics_linger)
    processed = int(load.get("processed", 0))
    failed = int(load.get("failed", 0))
    if processed and failed / processed > args.max_failed_ratio:
        top = meta["clean"].get("top_reject_reason")
        print(
            f"es-mysql-pipeline: {failed} of {processed} records failed "
            f"(more than --max-failed-ratio {args.max_failed_ratio}); see the dead-letter files"
            + (f"; most often: {top}" if top else ""),
            file=sys.stderr,
        )
        return EXIT_FAILED
    return EXIT_OK


def _in_background(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` off the main thread and wait, so our SIGINT/SIGTERM handlers stay in charge.

    Dagster replaces the SIGINT handler when it runs on the main thread and interrupts the
    step mid-batch; from another thread it leaves signals alone, and the assets stop cleanly
    after the batch in flight when :func:`lifecycle.request_stop` is called.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:  # handed back to the main thread
            box["error"] = exc

    worker = threading.Thread(target=target, name="pipeline-run")
    worker.start()
    while worker.is_alive():
        worker.join(0.2)  # short joins keep the main thread responsive to signals
    if "error" in box:
        raise box["error"]
    return box["result"]


def _metadata(result: Any, asset: str) -> dict[str, Any]:
    for event in result.get_asset_materialization_events():
        if event.asset_key.path[-1] == asset:
            return {k: v.value for k, v in event.materialization.metadata.items()}
    return {}


def _failure(result: Any) -> tuple[str, bool]:
    """The failed step's one-line message, and whether it was a configuration error."""
    for event in result.get_step_failure_events():
        data = event.step_failure_data
        user = data.user_failure_data
        if user is not None and user.description:
            kind = user.metadata.get("error_kind")
            return str(user.description), getattr(kind, "value", kind) == "config"
        err = data.error
        while err is not None and err.cause is not None:  # the innermost error says why
            err = err.cause
        if err is not None:
            return err.message.strip().splitlines()[-1], False
    return "the run failed", False


def _print_summary(
    load: dict[str, Any], elapsed: float, stages: dict[str, Any], time_field: str | None
) -> None:
    processed = int(load.get("processed", 0))
    rows: list[tuple[str, Any]] = [
        ("time field", time_field or "none"),
        ("processed", processed),
        ("inserted", load.get("inserted", 0)),
        ("updated", load.get("updated", 0)),
        ("skipped (duplicates)", load.get("skipped", 0)),
        ("failed", load.get("failed", 0)),
        ("duration", f"{elapsed:.2f} s"),
        (
            "  fetch/transform/load",
            " / ".join(f"{stages.get(k) or 0:.2f} s" for k in ("raw", "clean", "loaded")),
        ),
        ("throughput", f"{processed / elapsed:,.0f} records/s" if elapsed > 0 else "-"),
    ]
    if load.get("columns_added") or load.get("columns_widened"):
        rows.append(
            (
                "schema changes",
                f"{load.get('columns_added', 0)} columns added, "
                f"{load.get('columns_widened', 0)} widened",
            )
        )
    if load.get("fields_discarded"):
        rows.append(
            ("fields discarded", f"{load['fields_discarded']}: {load.get('discarded_fields', '')}")
        )
    for label, key in (
        ("dead letter (transform)", "transform_dead_letter_path"),
        ("dead letter (load)", "dead_letter_path"),
    ):
        path = load.get(key)
        if path and path != "(none)":
            rows.append((label, path))
    width = max(len(k) for k, _ in rows)
    print("Summary")
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")


def _start_metrics(args: argparse.Namespace, resources: dict[str, Any]) -> Any:
    """The metrics endpoint, only when ``--metrics-port`` is given (nothing listens otherwise)."""
    if args.metrics_port is None:
        return None
    from es_mysql_pipeline.metrics.cli_support import start_cli_metrics

    return start_cli_metrics(args, resources)


def _stop_metrics(metrics: Any, linger: float = 0.0) -> None:
    if metrics is not None:
        if linger > 0 and not lifecycle.stop_requested():
            lifecycle.wait_for_stop(linger)
        metrics.stop()


def _install_signal_handlers() -> None:
    def handler(signum: int, _frame: Any) -> None:
        if lifecycle.stop_requested():
            os._exit(130)  # second signal: stop now
        print("\nstopping after the batch in flight (again to abort)...", file=sys.stderr)
        lifecycle.request_stop()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.debug:
        warnings.filterwarnings("ignore")
    _install_signal_handlers()
    try:
        return run(args)
    except (PipelineError, ValueError, OSError) as exc:
        if args.debug:
            raise
        print(f"es-mysql-pipeline: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
