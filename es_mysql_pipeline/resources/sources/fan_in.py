"""Several producer threads feeding one consumer, with back-pressure and failure spreading.

Elasticsearch reads its slices this way; nothing here knows what the items are.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

#: A producer gets the shared stop event and yields items until done or stopped.
Producer = Callable[[threading.Event], Iterator[T]]


class Stopped(Exception):
    """Raised inside a producer when the consumer went away; the producer ends quietly."""


_DONE = object()


@dataclass
class _Failed:
    exc: BaseException


def fan_in(
    producers: Sequence[Producer[T]], stop: threading.Event, *, name: str = "producer"
) -> Iterator[T]:
    """Run each producer in its own thread and yield their items as they come.

    A bounded queue gives back-pressure; the first failure stops the others and is raised
    here; closing the iterator (or any exit) sets ``stop`` and joins the threads. A single
    producer gets a thread too: its next request waits on the server (without the GIL) while
    the caller stages the page before.
    """
    items: queue.Queue[Any] = queue.Queue(maxsize=2 * len(producers))

    def put(item: Any) -> None:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.05)
                return
            except queue.Full:
                continue

    def run(produce: Producer[T]) -> None:
        try:
            for item in produce(stop):
                put(item)
                if stop.is_set():
                    return
        except Stopped:
            pass
        except BaseException as exc:
            put(_Failed(exc))
        finally:
            put(_DONE)

    threads = [
        threading.Thread(target=run, args=(p,), name=f"{name}-{i}", daemon=True)
        for i, p in enumerate(producers)
    ]
    for t in threads:
        t.start()
    try:
        done = 0
        while done < len(threads):
            item = items.get()
            if item is _DONE:
                done += 1
            elif isinstance(item, _Failed):
                raise item.exc
            else:
                yield item
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
