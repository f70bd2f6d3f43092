"""Process-wide run controls: a graceful stop request and progress reporting.

The CLI sets these from its signal handlers and progress bar; the assets only check
:func:`stop_requested` between batches and call :func:`progress` after each batch.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # Dagster is imported on first use: `--help` and `--version` must not pay for it
    import dagster as dg

ProgressFn = Callable[[str, int, "int | None"], None]

_stop = threading.Event()
_progress: ProgressFn | None = None


if TYPE_CHECKING:

    class Interrupted(dg.Failure):
        """A stop was requested (see :func:`_interrupted_class`)."""

        def __init__(self, message: str) -> None: ...


@functools.cache
def _interrupted_class() -> type[Interrupted]:
    """The ``Interrupted`` failure class, built on first use: importing this module stays cheap."""
    import dagster as dg

    class Interrupted(dg.Failure):
        """A stop was requested; the batch in flight finished and nothing partial was published.

        A :class:`dagster.Failure` without retries, so the asset's ``RetryPolicy`` does not start
        the step again while the process is shutting down.
        """

        def __init__(self, message: str) -> None:
            super().__init__(description=message, allow_retries=False)

    Interrupted.__module__ = __name__
    return Interrupted  # type: ignore[return-value]  # the same class as the TYPE_CHECKING stub


def __getattr__(name: str) -> Any:
    """``lifecycle.Interrupted`` still works: the class is built on first access."""
    if name == "Interrupted":
        return _interrupted_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
        raise _interrupted_class()(f"stopped by request during {stage}, after the batch in flight")
