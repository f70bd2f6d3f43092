"""What do /metrics scrapes cost the pipeline at the rates Prometheus uses (1 per 1-60 s)?

A CPU-bound stand-in for batch work (JSON-encoding 1,000 records per batch, pure Python
holding the GIL) records metrics per batch like the assets do, in four modes interleaved
round by round so that drift hits them alike:

* metrics off (NullRecorder): the baseline;
* metrics on and the endpoint up, nobody scraping;
* metrics on, scraped once a second (the first scrape as the run starts);
* metrics on, scraped ``--probe-rate`` times a second (default 20): no Prometheus does
  that, but a short run then holds enough scrapes to tell what one of them costs.

One scrape's cost to the pipeline process (wall and CPU) is the probe row's time above the
endpoint-up row, divided by its scrapes. The overhead at a rate is the endpoint-up row's
plus that cost times the rate: at 1 per 15 s this is the only way to see it (a run would
have to last minutes to hold a few scrapes); at 1 per second it is also measured directly,
which checks the sum. The scrapers are separate processes sending raw HTTP/1.0 GETs.

    .venv/bin/python benchmarks/metrics_overhead.py [--batches 400] [--repeats 5]
        [--probe-rate 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from prometheus_client import CollectorRegistry

from es_mysql_pipeline.metrics.catalog import PrometheusRecorder
from es_mysql_pipeline.metrics.endpoint import start_metrics_server
from es_mysql_pipeline.metrics.recorder import NullRecorder, Recorder

RECORDS = [{"id": i, "message": "request served", "latency_ms": i * 0.5} for i in range(1000)]
#: The scrape rates shown: Prometheus's common intervals are 1 s to 60 s, 15 s by default.
RATES = (1.0, 1 / 15)

# A scraper process: reads "go RATE" / "stop" lines on stdin; on "stop" prints
# {"ok": n, "failed": n}. Its first scrape is at "go". Standard library only (python -I -S).
SCRAPER = r"""
import json, socket, sys, threading, time
host, port = sys.argv[1], int(sys.argv[2])
request = b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n"
state = {"rate": 1.0, "ok": 0, "failed": 0}
active, wake, idle = threading.Event(), threading.Event(), threading.Event()
idle.set()
def scrape():
    while True:
        active.wait()
        idle.clear()
        due = time.monotonic()
        while active.is_set():
            try:
                with socket.create_connection((host, port), timeout=10) as s:
                    s.sendall(request)
                    head = s.recv(65536)
                    while s.recv(65536):
                        pass
                state["ok" if head[9:12] == b"200" else "failed"] += 1
            except OSError:
                state["failed"] += 1
            due = max(due + 1.0 / state["rate"], time.monotonic())
            wake.wait(due - time.monotonic())
        wake.clear()
        idle.set()
threading.Thread(target=scrape, daemon=True).start()
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "go":
        state.update(rate=float(cmd[1]), ok=0, failed=0)
        active.set()
    elif cmd[0] == "stop":
        active.clear()
        wake.set()
        idle.wait()  # the scrape in flight counts
        print(json.dumps({"ok": state["ok"], "failed": state["failed"]}), flush=True)
"""


def work(recorder: Recorder, batches: int) -> tuple[float, float]:
    """Wall and CPU seconds of this process (every thread, the endpoint's included) to
    handle ``batches`` batches, recording per batch as the assets do."""
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(batches):
        b0 = time.perf_counter()
        json.dumps(RECORDS)
        recorder.records("processed", len(RECORDS), "fetch")
        recorder.records("inserted", len(RECORDS), "load")
        recorder.duration("insert", time.perf_counter() - b0)
        recorder.duration("batch", time.perf_counter() - b0)
        recorder.queue_depth(1)
    return time.perf_counter() - t0, time.process_time() - c0


class Scraper:
    """One scraper process, idle until :meth:`go`."""

    def __init__(self, port: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", SCRAPER, "127.0.0.1", str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def _tell(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def go(self, rate: float) -> None:
        self._tell(f"go {rate}")

    def stop(self) -> dict[str, int]:
        self._tell("stop")
        assert self.proc.stdout is not None
        return dict(json.loads(self.proc.stdout.readline()))

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)


def measure(batches: int, repeats: int, probe_rate: float) -> dict[str, dict[str, Any]]:
    """Per mode: wall and CPU seconds of each round, scrapes answered and failed."""
    recorder = PrometheusRecorder("bench", CollectorRegistry())
    modes: dict[str, dict[str, Any]] = {
        name: {"wall": [], "cpu": [], "ok": 0, "failed": 0}
        for name in ("off", "on", "1/s", "probe")
    }
    with start_metrics_server(recorder=recorder) as server:
        work(recorder, batches // 4)  # warm up, and metrics to render
        work(NullRecorder(), batches // 4)
        scraper = Scraper(server.port)
        try:
            for _ in range(repeats):
                for name, row in modes.items():
                    rate = {"1/s": 1.0, "probe": probe_rate}.get(name)
                    if rate:
                        scraper.go(rate)
                    wall, cpu = work(NullRecorder() if name == "off" else recorder, batches)
                    row["wall"].append(wall)
                    row["cpu"].append(cpu)
                    if rate:
                        got = scraper.stop()
                        row["ok"] += got["ok"]
                        row["failed"] += got["failed"]
        finally:
            scraper.close()
    return modes


def report(batches: int = 400, repeats: int = 5, probe_rate: float = 20.0) -> str:
    """Measure, and say what scrapes at :data:`RATES` cost (``make bench`` prints this)."""
    modes = measure(batches, repeats, probe_rate)
    wall = {name: statistics.median(row["wall"]) for name, row in modes.items()}
    cpu = {name: statistics.median(row["cpu"]) for name, row in modes.items()}
    lines = [
        f"metrics overhead: {batches} batches x 1,000 records of CPU-bound work, median of "
        f"{repeats} interleaved rounds, {os.cpu_count()} CPUs"
    ]
    for name, label in (
        ("off", "metrics off"),
        ("on", "metrics on, endpoint up, no scrapes"),
        ("1/s", "metrics on, 1 scrape/s"),
        ("probe", f"metrics on, {probe_rate:g} scrapes/s (probe)"),
    ):
        line = f"  {label:<38} {wall[name]:>7.3f} s {100 * (wall[name] / wall['off'] - 1):>+6.1f} %"
        line += f"   CPU {100 * (cpu[name] / cpu['off'] - 1):>+6.1f} %"
        if name in ("1/s", "probe"):
            line += f"   {modes[name]['ok']} scrapes answered, {modes[name]['failed']} failed"
        lines.append(line)
    per_round = max(1, modes["probe"]["ok"]) / repeats
    wall_per_scrape = (wall["probe"] - wall["on"]) / per_round
    cpu_per_scrape = (cpu["probe"] - cpu["on"]) / per_round
    lines.append(
        f"one scrape costs the pipeline {1000 * wall_per_scrape:.2f} ms of its time "
        f"({1000 * cpu_per_scrape:.2f} ms CPU), so scrapes cost it:"
    )
    for rate in RATES:
        label = "1 scrape/s" if rate == 1 else f"1 scrape/{1 / rate:g} s"
        line = f"  at {label:<13} {100 * rate * wall_per_scrape:+.3f} % of its time"
        if rate == 1:
            direct = wall["1/s"] / wall["on"] - 1
            line += f" (measured directly against endpoint up: {100 * direct:+.2f} %)"
        lines.append(line)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--batches", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--probe-rate", type=float, default=20.0)
    args = parser.parse_args()
    print(report(args.batches, args.repeats, args.probe_rate))


if __name__ == "__main__":
    main()
