"""Process-wide run controls: a graceful stop request and progress reporting.

The CLI sets these from its signal handlers and progress bar; the assets only check
:func:`stop_requested` between batches and call :func:`progress` after each batch.
No Dagster here: `--help`, `--version` and worker processes import this module.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

ProgressFn = Callable[[str, int, "int | None"], None]

_stop = threading.Event()
_progress: ProgressFn | None = None


class Interrupted(Exception):
    """A stop was requested; the batch in flight finished and nothing partial was published.
    The step fails without retries (``assets/failures.py``): the process is shutting down."""


def request_stop() -> None:
    _stop.set()


def stop_requested() -> bool:
    return _stop.is_set()


def wait_for_stop(seconds: float) -> bool:
    """Sleep up to ``seconds``, waking early on a stop request; True if one came."""
    return _stop.wait(seconds)


def reset() -> None:
    _stop.clear()


def set_progress(fn: ProgressFn | None) -> None:
    global _progress
    _progress = fn


def progress(stage: str, done: int, total: int | None = None) -> None:
    if _progress is not None:
        _progress(stage, done, total)


def raise_if_stopped(stage: str) -> None:
    if _stop.is_set():
        raise Interrupted(f"stopped by request during {stage}, after the batch in flight")
