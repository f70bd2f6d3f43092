"""Worker processes: spawned clean, without the modules a pool marks unused, and shared
between the steps of a run."""

from __future__ import annotations

import importlib
import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pytest

from es_mysql_pipeline.worker_processes import (
    ordered_map,
    shared_pool,
    spawn_pool,
    stop_signals_blocked,
)


def importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def loaded(prefix: str) -> list[str]:
    return sorted(k for k in sys.modules if k.split(".")[0] == prefix and sys.modules[k])


def test_modules_marked_unused_cannot_be_imported_in_the_workers() -> None:
    pytest.importorskip("requests")
    with spawn_pool(1, unused=("requests",)) as pool, stop_signals_blocked():
        assert pool.submit(importable, "requests").result() is False
        assert pool.submit(importable, "json").result() is True
    with spawn_pool(1) as pool, stop_signals_blocked():
        assert pool.submit(importable, "requests").result() is True


def test_an_elasticsearch_client_works_without_the_unused_http_stacks() -> None:
    from es_mysql_pipeline.readers.elasticsearch import UNUSED_HTTP_STACKS as unused

    with spawn_pool(1, unused=unused) as pool, stop_signals_blocked():
        assert pool.submit(_client_and_stacks).result() == ("Urllib3HttpNode", [])


def _client_and_stacks() -> tuple[str, list[str]]:
    from elasticsearch import Elasticsearch

    client = Elasticsearch("http://127.0.0.1:9")
    node = type(next(iter(client.transport.node_pool.all()))).__name__
    return node, loaded("aiohttp") + loaded("requests")


#: What worker processes import for their jobs: the readers, the engines, the load format.
WORKER_MODULES = (
    "es_mysql_pipeline.readers.file_reading",
    "es_mysql_pipeline.readers.elasticsearch.slice_parts",
    "es_mysql_pipeline.transform_engine",
    "es_mysql_pipeline.load_encoding",
    "es_mysql_pipeline.writers.sql.bulk_load",
)


def test_worker_jobs_import_no_dagster() -> None:
    """A worker imports its job's modules only, never Dagster (the slowest import of all)."""
    with spawn_pool(1) as pool, stop_signals_blocked():
        assert pool.submit(dagster_after_import, WORKER_MODULES).result() is False
        # the control: the resources package does import it
        assert pool.submit(dagster_after_import, ("es_mysql_pipeline.resources.sources",)).result()


def dagster_after_import(names: tuple[str, ...]) -> bool:
    for name in names:
        importlib.import_module(name)
    return "dagster" in sys.modules


def pid_after(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def two_at_once(pool: Executor, meeting: Path) -> set[int]:
    """The pids of two jobs that must run at the same time (each waits for the other)."""
    meeting.mkdir()
    return {f.result() for f in [pool.submit(meet, str(meeting), 2) for _ in range(2)]}


def meet(meeting: str, n: int) -> int:
    with open(os.path.join(meeting, str(os.getpid())), "w"):
        pass
    deadline = time.monotonic() + 30
    while len(os.listdir(meeting)) < n:
        if time.monotonic() > deadline:
            raise TimeoutError("the other job never ran beside this one")
        time.sleep(0.01)
    return os.getpid()


def test_steps_borrow_the_shared_pool_and_its_preloaded_workers(tmp_path: Path) -> None:
    preload = ("es_mysql_pipeline.transform_engine",)
    with shared_pool(2, preload=preload):
        with spawn_pool(2) as first, stop_signals_blocked():
            first_pids = two_at_once(first, tmp_path / "first")
            assert first.submit(loaded_module, preload[0]).result() is True
        with spawn_pool(1) as second, stop_signals_blocked():
            second_pid = second.submit(pid_after, 0).result()
    assert len(first_pids) == 2
    assert second_pid in first_pids
    with spawn_pool(1) as own, stop_signals_blocked():  # no shared pool any more
        assert own.submit(pid_after, 0).result() not in first_pids


def test_a_step_asking_for_more_workers_than_shared_gets_its_own_pool(tmp_path: Path) -> None:
    with shared_pool(1):
        with spawn_pool(1) as borrowed, stop_signals_blocked():
            shared_pid = borrowed.submit(pid_after, 0).result()
        with spawn_pool(2) as own, stop_signals_blocked():
            pids = two_at_once(own, tmp_path / "own")
    assert shared_pid not in pids and len(pids) == 2


def test_leaving_a_borrowed_pool_cancels_queued_jobs_and_waits_for_running_ones(
    tmp_path: Path,
) -> None:
    marks = [str(tmp_path / f"job{i}") for i in range(8)]
    with shared_pool(1):
        with spawn_pool(1) as pool, stop_signals_blocked():
            futures = [pool.submit(touch_after, 0.3, mark) for mark in marks]
            deadline = time.monotonic() + 30
            while not os.path.exists(marks[0] + ".started"):  # the first job runs
                assert time.monotonic() < deadline
                time.sleep(0.01)
        # The block has ended: each job ran to its end (the one running, and the few the
        # executor had already handed to the worker) or was cancelled before it started.
        assert all(f.done() for f in futures)
        ran = [not f.cancelled() for f in futures]
        assert ran[0] and not ran[-1]
        assert [os.path.exists(m) for m in marks] == ran
        time.sleep(0.8)
        assert [os.path.exists(m + ".started") for m in marks] == ran  # none started later


def test_a_broken_shared_pool_is_not_lent_again() -> None:
    with shared_pool(1):
        with spawn_pool(1) as pool, stop_signals_blocked(), pytest.raises(BrokenProcessPool):
            pool.submit(os._exit, 3).result()
        with spawn_pool(1) as pool, stop_signals_blocked():
            assert pool.submit(pid_after, 0).result() > 0


def test_a_forked_child_starts_its_own_pool_not_its_parents() -> None:
    """A process forked from one holding the shared pool (Dagster's multiprocess executor
    with ``start_method: fork``) cannot use that pool: its steps start their own."""
    ctx = multiprocessing.get_context("fork")
    with shared_pool(1):
        with spawn_pool(1) as pool, stop_signals_blocked():
            shared_pid = pool.submit(pid_after, 0).result()
        out = ctx.SimpleQueue()
        child = ctx.Process(target=_pool_worker_pid, args=(out,))
        child.start()
        child.join(30)
        if child.is_alive():  # it hangs on the parent's pool: SIGKILL, its signals are blocked
            child.kill()
        assert child.exitcode == 0, "the forked child's step did not finish"
    assert out.get() not in (shared_pid, child.pid)


def _pool_worker_pid(out: Any) -> None:
    with spawn_pool(1) as pool, stop_signals_blocked():
        out.put(pool.submit(pid_after, 0).result())


def loaded_module(name: str) -> bool:
    return name in sys.modules


def touch_after(seconds: float, path: str) -> None:
    with open(path + ".started", "w"):
        pass
    time.sleep(seconds)
    with open(path, "w"):
        pass


# -- ordered_map: submit ahead, join in order, leave nothing behind --------------------------


class Recording(ThreadPoolExecutor):
    """A thread pool that notes how many jobs were submitted and not yet taken back."""

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        self.submitted: list[int] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.submitted.append(args[0])
        return super().submit(fn, *args, **kwargs)


def slow_square(n: int) -> int:
    time.sleep(0.02 * (5 - n % 5))  # later jobs finish first
    return n * n


def test_ordered_map_keeps_order_and_submits_only_ahead() -> None:
    with Recording(4) as pool:
        results = ordered_map(pool, slow_square, range(10), 3)
        assert next(results) == 0
        assert pool.submitted == [0, 1, 2, 3]  # one more once the first was taken
        assert [0, *results] == [n * n for n in range(10)]


def test_ordered_map_raises_a_job_error_and_discards_the_rest(tmp_path: Path) -> None:
    def write(n: int) -> str:
        if n == 2:
            while not (tmp_path / "part3").exists():  # fails once the job after it ran
                time.sleep(0.001)
            raise ValueError("job 2 failed")
        path = tmp_path / f"part{n}"
        path.write_text("x")
        return str(path)

    discarded: list[str] = []
    with ThreadPoolExecutor(4) as pool:
        results = ordered_map(pool, write, range(4), 4, discard=discarded.append)
        assert [next(results), next(results)] == [str(tmp_path / f"part{n}") for n in (0, 1)]
        with pytest.raises(ValueError, match="job 2 failed"):
            next(results)
    assert discarded == [str(tmp_path / "part3")]  # parts yielded are the caller's


def test_closing_ordered_map_cancels_jobs_not_started_and_discards_those_done() -> None:
    started: list[int] = []

    def job(n: int) -> int:
        started.append(n)
        time.sleep(0.05)
        return n

    discarded: list[int] = []
    with ThreadPoolExecutor(1) as pool:
        results = ordered_map(pool, job, range(100), 5, discard=discarded.append)
        assert next(results) == 0
        results.close()
    assert started == [0, 1] or started == [0, 1, 2]  # the one running when closed ran on
    assert discarded == started[1:]


def test_ordered_map_follow_submits_the_next_job_and_yields_as_jobs_finish() -> None:
    def step(job: tuple[str, int]) -> tuple[str, int]:
        name, left = job
        time.sleep(0.05 if name == "slow" else 0.001)
        return name, left - 1

    def follow(done: tuple[str, int]) -> tuple[str, int] | None:
        return done if done[1] > 0 else None

    with ThreadPoolExecutor(2) as pool:
        got = list(ordered_map(pool, step, [("slow", 1), ("fast", 3)], 2, follow=follow))
    assert got[:3] == [("fast", 2), ("fast", 1), ("fast", 0)]  # not held behind "slow"
    assert got[3:] == [("slow", 0)]
