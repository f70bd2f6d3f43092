"""Worker processes beside a step: spawned clean, deaf to Ctrl+C, gone with their parent.

Spawned, not forked: a clean interpreter (no inherited threads or locks from Dagster or
the CLI) that imports only what its job needs. Workers leave stopping to their parent (a
Ctrl+C or SIGTERM to the process group stops the run after the work in flight) and exit
when the parent is gone, so a killed run never leaves workers behind.

Starting a pool costs an interpreter per worker, then the job's imports (the Elasticsearch
client's are heavy; docs/benchmarks.md). A process that runs every step itself (the CLI)
can start one :func:`shared_pool` first, while it imports Dagster, and its steps borrow it.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import itertools
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")
J = TypeVar("J")
R = TypeVar("R")

#: How often a worker checks that its parent is still there.
_PARENT_CHECK_SECONDS = 0.5


#: Tracked containers alive beyond those at the last collection before the young generation
#: is collected (CPython's default: 700).
GC_YOUNG_THRESHOLD = 200_000


def tune_gc() -> None:
    """Collect the young generation only once 200,000 more containers are alive, not 700.

    CPython counts allocations minus frees: a page or a batch of thousands of dicts, alive
    while it is worked on, crossed any lower threshold, so every batch cost young
    collections that walked all of it, and older ones that walked the survivors again
    (a good share of a worker's CPU; docs/benchmarks.md). Records hold no cycles and are
    freed by reference counting when a batch is done, so the count falls back and the
    collector seldom runs; garbage in cycles still gets collected, so memory stays bounded."""
    young, older, oldest = gc.get_threshold()
    gc.set_threshold(max(GC_YOUNG_THRESHOLD, young), older, oldest)


def may_spawn() -> bool:
    """A daemonic process (a celery prefork worker, a multiprocessing pool child) may not
    have children: its steps do their work in-process."""
    return not multiprocessing.current_process().daemon


def process_count(setting: int) -> int:
    """Worker processes for a setting where 0 means one per core, at most 4."""
    return max(1, setting or min(os.cpu_count() or 1, 4))


def ordered_map(
    pool: Executor,
    fn: Callable[[J], R],
    jobs: Iterable[J],
    ahead: int,
    *,
    discard: Callable[[R], object] = lambda result: None,
    follow: Callable[[R], J | None] | None = None,
) -> Generator[R, None, None]:
    """``fn`` of each job in ``pool``, at most ``ahead`` jobs submitted at a time (taken
    from ``jobs`` as room frees), results yielded in the order the jobs were submitted.

    With ``follow``, a result may name the next job of its kind (a slice's next pages), which
    is submitted at once; results then come as they finish, so no worker waits for an older
    job to be taken. A worker's error is raised here. Closing the generator (a stop, a
    failure downstream) or an error cancels the jobs not started and hands the results
    finished or running, but not yet yielded, to ``discard`` (a part written is nobody's);
    a result yielded is the caller's."""
    source = iter(jobs)
    pending: dict[Future[R], None] = {}  # in submission order

    def submit(job: J) -> None:
        with stop_signals_blocked():  # a worker may start here, with this thread's mask
            pending[pool.submit(fn, job)] = None

    def fill() -> None:
        for job in itertools.islice(source, max(0, ahead - len(pending))):
            submit(job)

    try:
        fill()
        while pending:
            future = next(iter(pending))
            if follow is not None:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                future = next(f for f in pending if f in finished)
            result = future.result()
            del pending[future]
            nxt = follow(result) if follow is not None else None
            if nxt is not None:
                submit(nxt)
            fill()
            yield result
    finally:
        _cancel(pending, discard)


def _cancel(futures: Iterable[Future[R]], discard: Callable[[R], object]) -> None:
    """Cancel the jobs not started, wait for the others, and hand their results to
    ``discard``."""
    for future in futures:
        future.cancel()
    for future in futures:
        if not future.cancelled():
            with contextlib.suppress(BaseException):
                discard(future.result())


def discard_files(*paths: str | None) -> None:
    """Delete the files a result names that are still there."""
    for path in paths:
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


@contextlib.contextmanager
def spawn_pool(workers: int, unused: Sequence[str] = ()) -> Iterator[Executor]:
    """A pool of ``workers`` spawned processes; submit the first jobs under
    :func:`stop_signals_blocked` (the processes start then). Modules named in ``unused``
    cannot be imported in the workers: optional ones a library imports when installed but
    the job never uses (memory counts once per worker).

    Within :func:`shared_pool` of at least ``workers`` processes, the step borrows it: its
    jobs not started are cancelled, and those running waited for, when the block ends, as
    a pool of its own would be shut down."""
    shared = _shared
    if shared is not None and workers <= shared.workers and shared.usable():
        lease = _Lease(shared.pool)
        try:
            yield lease
        finally:
            lease.release()
        return
    pool = _new_pool(workers, unused)
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def shared_pool(
    workers: int, preload: Sequence[str] = (), unused: Sequence[str] = ()
) -> Iterator[None]:
    """Start ``workers`` processes now, importing ``preload``, for this process's steps to
    borrow (see :func:`spawn_pool`); they stop when the block ends. ``unused`` applies to
    every step: name only modules that no step of the run needs."""
    global _shared
    pool = _new_pool(workers, unused, preload)
    try:
        with stop_signals_blocked():  # the workers start here, with this thread's mask
            for _ in range(workers):  # one process per job submitted while none is idle
                pool.submit(int)
        _shared = _Shared(pool, workers, os.getpid())
        yield
    finally:
        _shared = None
        pool.shutdown(wait=True, cancel_futures=True)


@dataclass(frozen=True)
class _Shared:
    pool: ProcessPoolExecutor
    workers: int
    #: the process that started it
    pid: int

    def usable(self) -> bool:
        """In the process that started it (not a forked child), and not broken by a worker
        that died (a step retried after that gets a pool of its own)."""
        if os.getpid() != self.pid:
            return False
        try:
            self.pool.submit(int)
        except (BrokenProcessPool, RuntimeError):
            return False
        return True


_shared: _Shared | None = None


class _Lease(Executor):
    """A step's use of the shared pool: its own jobs, cancelled or waited for on release."""

    def __init__(self, pool: ProcessPoolExecutor) -> None:
        self._pool = pool
        self._futures: list[Future[Any]] = []

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future = self._pool.submit(fn, *args, **kwargs)
        self._futures = [f for f in self._futures if not f.done()]
        self._futures.append(future)
        return future

    def release(self) -> None:
        _cancel(self._futures, lambda result: None)
        self._futures = []


def _new_pool(
    workers: int, unused: Sequence[str], preload: Sequence[str] = ()
) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_worker_setup,
        initargs=(tuple(unused), tuple(preload)),
    )


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@contextlib.contextmanager
def stop_signals_blocked() -> Iterator[None]:
    """Block Ctrl+C and SIGTERM in this thread while it starts workers: a spawned worker
    inherits the mask, so a Ctrl+C that lands while it is still importing waits, pending,
    until :func:`_worker_setup` ignores it (else the worker dies with a traceback)."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _worker_setup(unused: tuple[str, ...] = (), preload: tuple[str, ...] = ()) -> None:
    """Ctrl+C reaches the whole process group: the parent stops after the run in flight and
    cancels the rest, so a worker must not die mid-run (a broken pool, a traceback). And a
    parent killed outright cannot shut the pool down, so a worker watches for that itself."""
    for name in unused:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]  # import raises ImportError
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)  # see stop_signals_blocked
    tune_gc()
    parent = os.getppid()
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    for name in preload:
        with contextlib.suppress(ImportError):  # a job that needs it reports the error
            importlib.import_module(name)


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(_PARENT_CHECK_SECONDS)
    # orphaned: nobody will read what this worker writes. The process ends before coverage
    # saves; test_workers_outlive_a_group_signal_but_not_a_killed_parent checks it.
    os._exit(1)  # pragma: no cover
