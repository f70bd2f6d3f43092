"""How much do concurrent scrapes of /metrics slow the pipeline? (issue: a few percent at most)

Runs a CPU-bound stand-in for batch work (JSON-encoding 1,000 records per batch) that
records metrics per batch like the assets do, three ways: metrics off (NullRecorder),
metrics on without scrapes, and metrics on while scrapers hit ``/metrics`` at a target
rate (default 200/s). Prints the slow-down of each against metrics off.

    .venv/bin/python benchmarks/metrics_overhead.py [--batches 400] [--scrapes-per-second 200]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import time
import urllib.request
from typing import Any

from prometheus_client import CollectorRegistry

from es_mysql_pipeline.metrics.definitions import PrometheusRecorder
from es_mysql_pipeline.metrics.recorder import NullRecorder
from es_mysql_pipeline.metrics.server import start_metrics_server

RECORDS = [{"id": i, "message": "request served", "latency_ms": i * 0.5} for i in range(1000)]


def work(recorder: NullRecorder, batches: int) -> float:
    """Seconds to handle ``batches`` batches, recording per batch."""
    t0 = time.perf_counter()
    for _ in range(batches):
        b0 = time.perf_counter()
        json.dumps(RECORDS)
        recorder.records("processed", len(RECORDS), "fetch")
        recorder.records("inserted", len(RECORDS), "load")
        recorder.duration("insert", time.perf_counter() - b0)
        recorder.duration("batch", time.perf_counter() - b0)
        recorder.queue_depth(1)
    return time.perf_counter() - t0


def scrape_loop(url: str, per_second: float, stop: Any, count: Any) -> None:
    interval = 1.0 / per_second
    while not stop.is_set():
        t0 = time.perf_counter()
        with urllib.request.urlopen(url, timeout=5) as resp:
            resp.read()
        with count.get_lock():
            count.value += 1
        time.sleep(max(0.0, interval - (time.perf_counter() - t0)))


def measure(batches: int, scrapes_per_second: float, repeats: int = 5) -> dict[str, float]:
    """Median seconds for each mode, and the achieved scrape rate."""
    rec = PrometheusRecorder("bench", CollectorRegistry())
    server = start_metrics_server("127.0.0.1", 0, rec.registry, {}, recorder=rec)
    try:
        work(rec, batches // 4)  # warm up
        off = statistics.median(work(NullRecorder(), batches) for _ in range(repeats))
        on = statistics.median(work(rec, batches) for _ in range(repeats))
        # Scrapers live in another process, as Prometheus does: only serving costs here.
        stop = multiprocessing.Event()
        count = multiprocessing.Value("i", 0)
        procs = [
            multiprocessing.Process(
                target=scrape_loop,
                args=(server.url + "/metrics", scrapes_per_second / 4, stop, count),
                daemon=True,
            )
            for _ in range(4)
        ]
        for proc in procs:
            proc.start()
        time.sleep(0.5)
        with count.get_lock():
            count.value = 0
        t0 = time.perf_counter()
        scraped = statistics.median(work(rec, batches) for _ in range(repeats))
        elapsed = time.perf_counter() - t0
        stop.set()
        for proc in procs:
            proc.join(10)
    finally:
        server.stop()
    return {"off": off, "on": on, "scraped": scraped, "scrape_rate": count.value / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=400)
    parser.add_argument("--scrapes-per-second", type=float, default=200)
    args = parser.parse_args()
    r = measure(args.batches, args.scrapes_per_second)
    print(f"metrics off:                 {r['off']:.3f} s")
    print(f"metrics on:                  {r['on']:.3f} s ({100 * (r['on'] / r['off'] - 1):+.1f} %)")
    print(
        f"metrics on + {r['scrape_rate']:.0f} scrapes/s: {r['scraped']:.3f} s "
        f"({100 * (r['scraped'] / r['off'] - 1):+.1f} %)"
    )


if __name__ == "__main__":
    main()
