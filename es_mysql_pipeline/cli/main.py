"""``es-mysql-pipeline``: the seed script's command line, running the same Dagster assets.

Exit codes: 0 success; 1 the run failed or more records failed than ``--max-failed-ratio``;
2 bad usage or configuration (one line on stderr, no traceback unless ``--debug``); 130
stopped by Ctrl+C or SIGTERM. Nothing here imports Dagster before a run needs it.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import logging
import os
import signal
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent import futures
from typing import Any, NoReturn

from es_mysql_pipeline import lifecycle
from es_mysql_pipeline import metadata_keys as keys
from es_mysql_pipeline.cli.parser import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_STOPPED,
    EXIT_USAGE,
    build_parser,
)
from es_mysql_pipeline.cli.progress import Progress
from es_mysql_pipeline.cli.report import failure_message, print_summary, step_metadata
from es_mysql_pipeline.cli.resources import build_resources, declared_resources, preflight
from es_mysql_pipeline.cli.workers import run_workers
from es_mysql_pipeline.errors import ConfigError, PipelineError
from es_mysql_pipeline.worker_processes import tune_gc


def run(args: argparse.Namespace) -> int:
    # Before the imports: Dagster's and its instance's allocate hundreds of thousands of
    # containers, and CPython's default threshold collects the young generation every 700
    # of them, a noticeable share of a run's start-up (docs/benchmarks.md).
    tune_gc()
    with run_workers(args):  # first: they start while Dagster is imported
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    import dagster as dg

    from es_mysql_pipeline.assets import build_assets
    from es_mysql_pipeline.io_manager import StagingIOManagerResource

    resources = declared_resources(args) if args.pipeline else build_resources(args)
    preflight(resources)
    staging_tmp = None
    if not args.staging_dir:
        staging_tmp = tempfile.TemporaryDirectory(prefix="es-mysql-pipeline-")
    staging = args.staging_dir or staging_tmp.name  # type: ignore[union-attr]
    resources["io_manager"] = StagingIOManagerResource(base_path=staging)
    metrics = None
    if args.metrics_port is not None:  # nothing listens otherwise
        from es_mysql_pipeline.metrics.endpoint import start_cli_metrics

        metrics = start_cli_metrics(args, resources)
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
        _stop_metrics(metrics, args.metrics_linger, succeeded=False)
        message, config_error = failure_message(result)
        if lifecycle.stop_requested():
            print(f"es-mysql-pipeline: {message}", file=sys.stderr)
            return EXIT_STOPPED
        print(f"es-mysql-pipeline: error: {message}", file=sys.stderr)
        return EXIT_USAGE if config_error else EXIT_FAILED
    raw, clean, load = (step_metadata(result, f"{n}_records") for n in ("raw", "clean", "loaded"))
    print_summary(raw, clean, load, elapsed)
    _stop_metrics(metrics, args.metrics_linger, succeeded=True)
    processed = int(load.get(keys.PROCESSED, 0))
    failed = int(load.get(keys.FAILED, 0))
    if processed and failed / processed > args.max_failed_ratio:
        top = clean.get(keys.TOP_REJECT_REASON)
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
    with futures.ThreadPoolExecutor(1, thread_name_prefix="pipeline-run") as pool:
        future = pool.submit(fn)
        while not future.done():
            futures.wait([future], timeout=0.2)  # short waits keep the main thread responsive
        return future.result()


def _stop_metrics(metrics: Any, linger: float, succeeded: bool) -> None:
    if metrics is None:
        return
    metrics.succeeded() if succeeded else metrics.failed()
    if linger > 0 and not lifecycle.stop_requested():
        lifecycle.wait_for_stop(linger)
    metrics.stop()


def _install_signal_handlers() -> None:
    def handler(signum: int, _frame: Any) -> None:
        if lifecycle.stop_requested():
            # second signal: stop now. Ends the process before coverage can save its data;
            # test_a_second_ctrl_c_aborts_at_once checks it.
            os._exit(130)  # pragma: no cover
        print("\nstopping after the batch in flight (again to abort)...", file=sys.stderr)
        lifecycle.request_stop()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def console() -> None:
    """The installed command: :func:`main`, then an exit that skips tearing the interpreter
    down, which is slow after a run (every module and object of Dagster freed one by one,
    for a process about to end); what exit must still do (atexit handlers, flushing output,
    threads still running) is done here first."""
    code = main()
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    _exit_now(code)


def _exit_now(code: int) -> NoReturn:  # pragma: no cover (every CLI test runs it)
    """Exit handlers, output flushed, then the exit; unmeasured, as coverage saves its data
    in the first of the exit handlers."""
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe: nothing more to say
            stream.flush()
    os._exit(code)


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
