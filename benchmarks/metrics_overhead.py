"""How much do concurrent scrapes of /metrics slow the pipeline? (issue 4: a few percent at most)

Runs a CPU-bound stand-in for batch work (JSON-encoding 1,000 records per batch, pure
Python holding the GIL) that records metrics per batch like the assets do, in three
modes, interleaved round by round so drift hits them alike:

* metrics off (NullRecorder): the baseline, ratio 1.000;
* metrics on and the endpoint up (its child process started), nobody scraping;
* metrics on while scraper processes ask ``/metrics`` at a target rate (default 200/s).

"slower" is against metrics off; "vs on" against metrics on without scrapes, which
isolates what serving the scrapes costs from what recording the metrics costs; "CPU" is
the CPU seconds of the pipeline's own process against metrics off, which a busy machine
disturbs far less than wall time.

The scrapers are separate processes sending raw HTTP/1.0 GETs (no urllib), paced to the
target rate and active only during the scraped runs. On a 2-core machine they, the
endpoint process and the pipeline share the cores: the slow-down includes that CPU
contention, which a real Prometheus on another host would not add. The table shows each
mode's median seconds, its ratio to metrics off, the scrapes per second achieved, how
many renderings the pipeline process made and the CPU the endpoint process and the
scrapers used (percent of one core).

    .venv/bin/python benchmarks/metrics_overhead.py [--batches 400] [--repeats 5]
        [--scrapes-per-second 200 500] [--scrapers 2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry

from es_mysql_pipeline.metrics.catalog import PrometheusRecorder
from es_mysql_pipeline.metrics.endpoint_parent import start_metrics_server
from es_mysql_pipeline.metrics.recorder import NullRecorder, Recorder

RECORDS = [{"id": i, "message": "request served", "latency_ms": i * 0.5} for i in range(1000)]

# A scraper process: reads "go RATE" / "stop" lines on stdin; on "stop" prints
# {"ok": n, "failed": n, "seconds": active time}. Standard library only (python -I -S).
SCRAPER = r"""
import json, socket, sys, threading, time
host, port = sys.argv[1], int(sys.argv[2])
request = b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n"
state = {"rate": 0.0, "ok": 0, "failed": 0}
active = threading.Event()
def scrape():
    while True:
        active.wait()
        interval, due = 1.0 / state["rate"], time.monotonic()
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
            due += interval
            now = time.monotonic()
            if due < now - interval:
                due = now  # behind: do not burst to catch up
            time.sleep(max(0.0, due - now))
threading.Thread(target=scrape, daemon=True).start()
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "go":
        state.update(rate=float(cmd[1]), ok=0, failed=0)
        started = time.monotonic()
        active.set()
    elif cmd[0] == "stop":
        active.clear()
        time.sleep(0.05)  # let the scrape in flight finish
        out = {"ok": state["ok"], "failed": state["failed"], "seconds": time.monotonic() - started}
        print(json.dumps(out), flush=True)
"""


# A decoy endpoint: serves the bytes of a file to every GET, prints its port when listening.
DECOY = r"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
body = open(sys.argv[1], "rb").read()
class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


@contextlib.contextmanager
def decoy(body: bytes) -> Iterator[tuple[int, int]]:
    """A decoy endpoint serving ``body``: yields its (port, pid)."""
    with tempfile.NamedTemporaryFile(suffix=".prom") as fh:
        fh.write(body)
        fh.flush()
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", DECOY, fh.name], stdout=subprocess.PIPE, text=True
        )
        try:
            assert proc.stdout is not None
            yield int(proc.stdout.readline()), proc.pid
        finally:
            proc.terminate()
            proc.wait(10)


def work(recorder: Recorder, batches: int) -> tuple[float, float]:
    """Wall and CPU seconds of this process to handle ``batches`` batches, recording per
    batch. CPU seconds are what the pipeline's process itself spends (recording, rendering
    for the endpoint): a noisy neighbour stretches wall time but much less CPU time."""
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Scrapers:
    """``n`` scraper processes sharing a target rate, idle until :meth:`go`."""

    def __init__(self, port: int, n: int) -> None:
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", SCRAPER, "127.0.0.1", str(port)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(n)
        ]

    def _tell(self, line: str) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(line + "\n")
            proc.stdin.flush()

    def go(self, rate: float) -> None:
        self._tell(f"go {rate / len(self.procs)}")

    def stop(self) -> dict[str, float]:
        self._tell("stop")
        results = []
        for proc in self.procs:
            assert proc.stdout is not None
            results.append(json.loads(proc.stdout.readline()))
        return {
            "ok": sum(r["ok"] for r in results),
            "failed": sum(r["failed"] for r in results),
            "seconds": max(r["seconds"] for r in results),
        }

    def cpu(self) -> float:
        return sum(cpu_seconds(p.pid) for p in self.procs)

    def close(self) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(10)


def _add(row: dict[str, Any], timing: tuple[float, float]) -> None:
    row["runs"].append(timing[0])
    row.setdefault("cpu", []).append(timing[1])


def measure(batches: int, repeats: int, rates: list[float], scrapers: int) -> list[dict[str, Any]]:
    """One row per mode: median seconds over ``repeats`` interleaved rounds, and more."""
    prometheus_recorder = PrometheusRecorder("bench", CollectorRegistry())
    null = NullRecorder()
    modes: list[dict[str, Any]] = [
        {"mode": "metrics off", "runs": []},
        {"mode": "metrics on, endpoint up, no scrapes", "runs": []},
    ]
    for rate in rates:
        for target in ("decoy", "/metrics"):
            modes.append(
                {
                    "mode": f"metrics on + {rate:g} scrapes/s of {target}",
                    "rate": rate,
                    "target": target,
                    "runs": [],
                    "ok": 0.0,
                    "secs": 0.0,
                    "failed": 0,
                    "renders": 0,
                    "child_cpu": 0.0,
                    "scraper_cpu": 0.0,
                }
            )
    with start_metrics_server(
        "127.0.0.1", 0, prometheus_recorder.registry, {}, recorder=prometheus_recorder
    ) as server:
        work(prometheus_recorder, batches // 4)  # warm up, and metrics to render
        work(null, batches // 4)
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics") as resp:
            body = resp.read()
        with decoy(body) as (decoy_port, decoy_pid):
            pools = {
                "/metrics": (Scrapers(server.port, scrapers), server.pid),
                "decoy": (Scrapers(decoy_port, scrapers), decoy_pid),
            }
            try:
                for _ in range(repeats):
                    _add(modes[0], work(null, batches))
                    _add(modes[1], work(prometheus_recorder, batches))
                    for row in modes[2:]:
                        pool, serving = pools[row["target"]]
                        renders, child0, scr0 = server.renders, cpu_seconds(serving), pool.cpu()
                        pool.go(row["rate"])
                        time.sleep(0.2)  # scrapers up to speed before the clock starts
                        _add(row, work(prometheus_recorder, batches))
                        got = pool.stop()
                        row["ok"] += got["ok"]
                        row["failed"] += got["failed"]
                        row["secs"] += got["seconds"]
                        row["renders"] += server.renders - renders
                        row["child_cpu"] += cpu_seconds(serving) - child0
                        row["scraper_cpu"] += pool.cpu() - scr0
            finally:
                for pool, _ in pools.values():
                    pool.close()
    return modes


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--batches", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--scrapes-per-second", type=float, nargs="+", default=[200.0])
    parser.add_argument("--scrapers", type=int, default=2, help="scraper processes")
    args = parser.parse_args()
    modes = measure(args.batches, args.repeats, args.scrapes_per_second, args.scrapers)
    base = statistics.median(modes[0]["runs"])
    on = statistics.median(modes[1]["runs"])
    cpu_base = statistics.median(modes[0]["cpu"])
    decoys = {r["rate"]: statistics.median(r["runs"]) for r in modes if r.get("target") == "decoy"}
    print(
        f"{args.batches} batches x 1,000 records, median of {args.repeats} interleaved rounds, "
        f"{os.cpu_count()} CPUs, {args.scrapers} scraper processes"
    )
    head = f"{'mode':<44} {'median s':>9} {'ratio':>6} {'slower':>7} {'vs on':>7} {'CPU':>7}"
    print(
        f"{head} {'scrapes/s':>10} {'failed':>6} {'renders/s':>9} {'endpoint CPU':>12} "
        f"{'scraper CPU':>11} {'vs decoy':>9}"
    )
    for row in modes:
        median = statistics.median(row["runs"])
        line = f"{row['mode']:<44} {median:>9.3f} {median / base:>6.3f} "
        line += f"{100 * (median / base - 1):>+6.1f}%"
        line += f" {100 * (median / on - 1):>+6.1f}%" if row is not modes[0] else " " * 8
        line += f" {100 * (statistics.median(row['cpu']) / cpu_base - 1):>+6.1f}%"
        if "rate" in row:
            secs = row["secs"]
            line += f" {row['ok'] / secs:>10.0f} {row['failed']:>6} "
            line += f"{row['renders'] / secs:>9.1f} {100 * row['child_cpu'] / secs:>11.0f}% "
            line += f"{100 * row['scraper_cpu'] / secs:>10.0f}%"
            if row.get("target") == "/metrics":
                line += f" {100 * (median / decoys[row['rate']] - 1):>+8.1f}%"
        print(line)


if __name__ == "__main__":
    main()
