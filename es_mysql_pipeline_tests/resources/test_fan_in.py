"""The generic thread fan-in: every item once, back-pressure, failures and stops spread."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from es_mysql_pipeline.resources.sources.fan_in import Stopped, fan_in


def counting(start: int, n: int, produced: list[int] | None = None):  # type: ignore[no-untyped-def]
    def produce(stop: threading.Event) -> Iterator[int]:
        for i in range(start, start + n):
            if produced is not None:
                produced.append(i)
            yield i

    return produce


def test_every_item_of_every_producer_once() -> None:
    items = list(
        fan_in([counting(0, 500), counting(1000, 300), counting(5000, 1)], threading.Event())
    )
    assert sorted(items) == [*range(500), *range(1000, 1300), 5000]


def test_one_producer_reads_ahead_in_its_own_thread() -> None:
    """The next page is asked for while the caller still works on the one before."""
    names: list[str] = []
    asked_for_second = threading.Event()

    def produce(stop: threading.Event) -> Iterator[int]:
        names.append(threading.current_thread().name)
        yield 1
        asked_for_second.set()
        yield 2

    it = fan_in([produce], threading.Event())
    assert next(it) == 1
    assert asked_for_second.wait(5), "the producer waited for the caller"
    assert list(it) == [2]
    assert names and names != [threading.current_thread().name]


def test_a_failure_stops_the_others_and_is_raised() -> None:
    stop = threading.Event()

    def failing(stop: threading.Event) -> Iterator[int]:
        yield 1
        raise ValueError("slice 2 broke")

    def endless(stop: threading.Event) -> Iterator[int]:
        while not stop.is_set():
            yield 0

    with pytest.raises(ValueError, match="slice 2 broke"):
        list(fan_in([endless, failing], stop))
    assert stop.is_set()


def test_back_pressure_bounds_what_is_produced_ahead() -> None:
    produced: list[int] = []
    it = fan_in(
        [counting(0, 10_000, produced), counting(20_000, 10_000, produced)], threading.Event()
    )
    next(it)
    time.sleep(0.3)
    # two producers, a queue of 4: at most a few items ahead of the consumer, not 20,000
    assert len(produced) <= 10
    it.close()


def test_closing_stops_the_threads() -> None:
    stop = threading.Event()
    before = threading.active_count()

    def endless(stop: threading.Event) -> Iterator[int]:
        while not stop.is_set():
            yield 0

    it = fan_in([endless, endless], stop, name="closing-test")
    next(it)
    it.close()
    assert stop.is_set()
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() <= before


def test_a_stopped_producer_ends_quietly() -> None:
    def stops(stop: threading.Event) -> Iterator[int]:
        yield 7
        raise Stopped()

    assert list(fan_in([stops], threading.Event())) == [7]
    assert sorted(fan_in([stops, counting(0, 2)], threading.Event())) == [0, 1, 7]
