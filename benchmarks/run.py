"""``make bench``: rows/s of the pipeline against baselines measured in the same run.

Rows (each a fresh MariaDB table of the same shape):
  baseline executemany    raw PyMySQL ``executemany`` of the CSV, 1,000 rows per commit
  baseline load data      raw ``LOAD DATA LOCAL INFILE`` of the same CSV (the server's ceiling)
  cli csv→mariadb         ``es-mysql-pipeline`` as a subprocess, process start included
  cli jsonl→mariadb       the same rows as a JSON Lines file (string values), same CLI
  sling csv→mariadb       Sling (PyPI ``sling-linux-amd64``, installed on first use, telemetry
                          off), ``--mode full-refresh``: Sling creates its own table from the
                          types it infers (TEXT-like columns, no key), so it does less work
  cli + /metrics 1/s      the same with ``--metrics-port``, ``/metrics`` scraped once a second
  cli + /metrics 1/15s    and once every 15 s (Prometheus's default), the first scrape as
                          soon as the CLI listens: the gap to ``cli csv→mariadb`` is what
                          metrics (recording, the endpoint, the scrapes) cost a run
  cli es→mariadb          from the wire-level Elasticsearch test server, in a process of its
                          own seeded once (its CPU is shown apart so the pipeline's own cost
                          is visible)

Every row runs in ``--repeats`` interleaved rounds (default 3) and shows its median run and
the spread; peak RSS is the worst run's, the CLI process and its children together.
Ratios are against ``baseline executemany``. These machines are noisy: compare ratios.

    python -m benchmarks.run [--rows 1000000] [--repeats 3] [--es-rows 1000000] [--skip-es]
                             [--skip-sling] [--skip-scrapes]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gc
import http.client
import json
import multiprocessing
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pymysql

from benchmarks import runs_per_minute
from benchmarks.metrics_overhead import report as metrics_overhead
from es_mysql_pipeline.sample_data import FIELDS, SAMPLE_START, events, write_csv

DB = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": "", "database": "test"}
TABLE_DDL = (
    "CREATE TABLE {t} (id VARCHAR(255) NOT NULL PRIMARY KEY, timestamp DATETIME(6) NOT NULL, "
    "service TEXT, level TEXT, message TEXT, user_id TEXT, latency_ms TEXT, tags TEXT, "
    "KEY (timestamp)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
)


@dataclass
class Row:
    name: str
    rows: int
    seconds: float
    rss_mb: float | None = None
    note: str = ""


def connect(**kw: Any) -> pymysql.connections.Connection:
    return pymysql.connect(**DB, charset="utf8mb4", **kw)


def fresh_table(name: str) -> str:
    with connect() as conn, conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {name}")
        cur.execute(TABLE_DDL.format(t=name))
    return name


def count(table: str) -> int:
    with connect() as conn, conn.cursor() as cur:
        cur.execute(f"SELECT COUNT(*) FROM {table}")
        return int(cur.fetchone()[0])


def baseline_executemany(path: str, table: str) -> float:
    sql = f"INSERT INTO {table} ({', '.join(FIELDS)}) VALUES ({', '.join(['%s'] * len(FIELDS))})"
    t0 = time.perf_counter()
    with connect() as conn, conn.cursor() as cur, open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        next(reader)
        batch: list[tuple[Any, ...]] = []
        for row in reader:
            row[1] = row[1][:-1].replace("T", " ")  # ISO Z → DATETIME text
            batch.append(tuple(row))
            if len(batch) == 1000:
                cur.executemany(sql, batch)
                conn.commit()
                batch = []
        if batch:
            cur.executemany(sql, batch)
            conn.commit()
    return time.perf_counter() - t0


def baseline_load_data(path: str, table: str) -> float:
    t0 = time.perf_counter()
    with connect(local_infile=True) as conn, conn.cursor() as cur:
        cur.execute(
            f"LOAD DATA LOCAL INFILE %s INTO TABLE {table} CHARACTER SET utf8mb4 "
            "FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' ESCAPED BY '' "
            f"LINES TERMINATED BY '\\n' IGNORE 1 LINES ({', '.join(FIELDS)})",
            (path,),
        )
        conn.commit()
    return time.perf_counter() - t0


def sling_binary() -> str:
    """The ``sling`` binary from the PyPI package ``sling-linux-amd64``, installed into this
    interpreter's environment when missing (idempotent: pip is not run when it is present)."""
    import importlib.util

    if importlib.util.find_spec("sling_linux_amd64") is None:
        print("installing sling-linux-amd64 from PyPI ...", file=sys.stderr)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "sling-linux-amd64"], check=True
        )
    spec = importlib.util.find_spec("sling_linux_amd64")
    assert spec is not None and spec.submodule_search_locations, "sling-linux-amd64 not found"
    return os.path.join(next(iter(spec.submodule_search_locations)), "bin", "sling-linux-amd64")


def run_sling(sling: str, path: str, table: str, cwd: str) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one Sling load of the CSV into ``test.<table>``."""
    env = {
        "SLING_DISABLE_TELEMETRY": "true",
        "MYSQL": f"mysql://{DB['user']}@{DB['host']}:{DB['port']}/{DB['database']}",
    }
    cmd = [sling, "run", "--src-stream", f"file://{path}", "--tgt-conn", "MYSQL"]
    cmd += ["--tgt-object", f"{DB['database']}.{table}", "--mode", "full-refresh"]
    return run_cmd(cmd, cwd, env)


def run_cli(args: list[str], cwd: str, env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one CLI run: the process and its children together
    (transform workers, the load's encoder, the metrics endpoint), each at its own peak."""
    return run_cmd([sys.executable, "-m", "es_mysql_pipeline", "--no-progress", *args], cwd, env)


def run_cmd(cmd: list[str], cwd: str, env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one command, with its children (see :func:`run_cli`)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], tree_rss_bytes(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, _ = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    done.set()
    sampler.join()
    out = proc.stdout.read().decode() if proc.stdout else ""
    err = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"CLI failed ({status}): {err.strip() or out.strip()}")
    # Not wait4's ru_maxrss: it counts the child from before its exec, when it still maps
    # this process's memory (1.2 GB here while the Elasticsearch test server holds 1M docs).
    return seconds, peak[0] / 2**20


def tree_rss_bytes(root: int) -> int:
    """The peak resident bytes (``VmHWM``) of ``root`` and each live descendant, summed
    (Linux ``/proc``): a process's own peak is never missed between two samples, and the
    sum is at least the tree's real peak."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
                hwm = next(line for line in fh if line.startswith("VmHWM:"))
            total += int(hwm.split()[1]) * 1024
        except (OSError, IndexError, ValueError, StopIteration):
            continue
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scraper(url: str, per_second: float, stop: Any, hits: Any) -> None:
    """Scrape ``url`` as soon as it answers, then ``per_second`` times a second."""
    interval = None  # until the first answer: try every 50 ms
    while not stop.is_set():
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                resp.read()
            with hits.get_lock():
                hits.value += 1
            interval = 1.0 / per_second
        except (OSError, http.client.HTTPException):
            pass  # not listening yet, or already gone (mid-answer, as the CLI exits)
        stop.wait(max(0.0, (interval or 0.05) - (time.perf_counter() - t0)))


def scraped_run(name: str, path: str, tmp: str, rows: int, rate: float) -> Row:
    """The CLI run with ``--metrics-port`` while a process scrapes its ``/metrics`` at
    ``rate``, as a Prometheus elsewhere would."""
    port = free_port()
    stop, hits = multiprocessing.Event(), multiprocessing.Value("i", 0)
    url = f"http://127.0.0.1:{port}/metrics"
    proc = multiprocessing.Process(target=scraper, args=(url, rate, stop, hits))
    proc.start()
    table = fresh_table("bench_cli_m")
    try:
        t, rss = run_cli(cli_csv(path, table, tmp, metrics_port=port), cwd=tmp)
    finally:
        stop.set()
        proc.join()
    assert count(table) == rows
    return Row(name, rows, t, rss, f"/metrics answered {hits.value} time(s)")


def mysql_sink(table: str) -> list[str]:
    """The sink arguments every CLI row shares."""
    return ["--sink_type", "mysql", "--db_table", table, "--batch-size", "5000"]


def cli_csv(path: str, table: str, tmp: str, metrics_port: int | None = None) -> list[str]:
    args = ["--csv_file", path, *mysql_sink(table), "--dead-letter-dir", os.path.join(tmp, "dl")]
    if metrics_port:
        args += ["--metrics-port", str(metrics_port)]
    return args


def serve_es(rows: int, conn: Any) -> None:
    """The Elasticsearch test server with ``rows`` bench docs, in a process of its own as a
    cluster would be (in this one, the RSS sampler's thread took its GIL): sends its URL,
    then its CPU seconds so far and its busy seconds at each ``stats`` until ``stop``."""
    from es_mysql_pipeline_tests.es_server import EsTestServer

    with EsTestServer() as server:
        server.create_index("bench", shards=2)
        server.add_docs("bench", es_docs(rows))
        # The stored documents live as long as the server: out of the collector's reach, as
        # in a real cluster. Left in, each full collection walks millions of objects (1.5 s
        # per 1M docs, seen) while every request waits on the GIL.
        gc.collect()
        gc.freeze()
        # Nor does the collector walk what a read keeps alive while it runs: with it on,
        # each read after the first cost the server 0.6-0.7 s more of full collections
        # (1.4 s of CPU, then 2.1-2.2 s; off: 1.2 s every read, seen). A request's garbage
        # is freed by reference counting; nothing tracked stays behind.
        gc.disable()
        conn.send(server.url)
        while conn.recv() == "stats":
            usage = resource.getrusage(resource.RUSAGE_SELF)
            conn.send((usage.ru_utime + usage.ru_stime, server.stats.serving_seconds))


def es_docs(rows: int) -> Iterator[tuple[str, dict[str, Any]]]:
    for i in range(rows):
        ts = SAMPLE_START.timestamp() + i * (5 * 86400 / rows)
        yield (
            f"doc-{i:07d}",
            {
                "@timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)),
                "service": "checkout",
                "level": "INFO",
                "message": f"event {i} ✓",
                "user": {"id": i % 5000, "geo": {"country": "DE"}},
                "tags": ["a", "b"],
            },
        )


class EsServer:
    """:func:`serve_es` in a spawned process, seeded once for every round's run."""

    def __init__(self, rows: int) -> None:
        sys.path.insert(0, os.getcwd())
        self.rows = rows
        ctx = multiprocessing.get_context("spawn")
        self._conn, theirs = ctx.Pipe()
        self._process = ctx.Process(target=serve_es, args=(rows, theirs), daemon=True)
        self._process.start()
        self.url: str = self._conn.recv()

    def stats(self) -> tuple[float, float]:
        """The server process's CPU seconds so far, and its busy seconds."""
        self._conn.send("stats")
        cpu, busy = self._conn.recv()
        return float(cpu), float(busy)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.send("stop")
        self._process.join(30)


def bench_es(server: EsServer, tmp: str) -> list[Row]:
    """One CLI run from the test server into a fresh table: the row, and the row less the
    server process's CPU during the run."""
    table = "bench_es"
    with connect() as conn, conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {table}")  # the pipeline creates its own shape
    cpu_before, busy_before = server.stats()
    seconds, rss = run_cli(
        [
            "--source_type",
            "elasticsearch",
            "--es_url",
            server.url,
            "--es_index",
            "bench",
            *mysql_sink(table),
            # one slice per shard: each read by a worker process (see slice_parts)
            "--es-slices",
            "2",
        ],
        cwd=tmp,
    )
    cpu_after, busy_after = server.stats()
    served_cpu, served = cpu_after - cpu_before, busy_after - busy_before
    loaded = count(table)
    if loaded != server.rows:
        raise SystemExit(f"es bench loaded {loaded} of {server.rows}")
    return [
        Row(
            "cli es→mariadb",
            server.rows,
            seconds,
            rss,
            f"test server process CPU {served_cpu:.1f}s (busy {served:.1f}s)",
        ),
        Row(
            "  same, minus server CPU",
            server.rows,
            seconds - served_cpu,
            None,
            "pipeline's own cost",
        ),
    ]


def one_round(
    path: str,
    tmp: str,
    rows: int,
    rates: list[float],
    n: int,
    of: int,
    sling: str | None,
    scrapes: bool = True,
    es: EsServer | None = None,
) -> list[Row]:
    """One run of each row of the table, in the same order every round."""

    def say(name: str) -> None:
        print(f"[{n + 1}/{of}] {name} ...", file=sys.stderr)

    out = []
    say("baseline executemany")
    seconds = baseline_executemany(path, fresh_table("bench_base"))
    out.append(Row("baseline executemany", rows, seconds))
    say("baseline LOAD DATA")
    seconds = baseline_load_data(path, fresh_table("bench_load"))
    out.append(Row("baseline load data", rows, seconds))
    say("cli csv→mariadb")
    table = fresh_table("bench_cli")
    t, rss = run_cli(cli_csv(path, table, tmp), cwd=tmp)
    assert count(table) == rows, "CLI lost or doubled rows"
    out.append(Row("cli csv→mariadb", rows, t, rss))
    # Next to the run they are compared with.
    for rate in rates if scrapes else []:
        name = f"cli + /metrics {rate:g}/s" if rate >= 1 else f"cli + /metrics 1/{1 / rate:g}s"
        say(name)
        out.append(scraped_run(name, path, tmp, rows, rate))
    say("cli jsonl→mariadb")
    table = fresh_table("bench_cli_jsonl")
    t, rss = run_cli(cli_csv(path.removesuffix(".csv") + ".jsonl", table, tmp), cwd=tmp)
    assert count(table) == rows, "CLI lost or doubled JSON Lines rows"
    out.append(Row("cli jsonl→mariadb", rows, t, rss))
    if sling:
        say("sling csv→mariadb")
        with connect() as conn, conn.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS bench_sling")
        t, rss = run_sling(sling, path, "bench_sling", tmp)
        assert count("bench_sling") == rows, "Sling lost or doubled rows"
        out.append(Row("sling csv→mariadb", rows, t, rss))
    if es is not None:
        say("cli es→mariadb")
        out.extend(bench_es(es, tmp))
    return out


def median_row(runs: list[Row]) -> Row:
    ordered = sorted(runs, key=lambda r: r.seconds)
    mid = ordered[len(ordered) // 2]
    if len(runs) == 1:
        return mid
    spread = "runs " + "/".join(f"{r.seconds:.1f}" for r in runs) + " s"
    rss = max((r.rss_mb for r in runs if r.rss_mb), default=None)  # the worst run's
    return Row(mid.name, mid.rows, mid.seconds, rss, "; ".join(filter(None, [mid.note, spread])))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--rows", type=int, default=int(os.environ.get("BENCH_ROWS", 1_000_000)))
    ap.add_argument("--es-rows", type=int, default=int(os.environ.get("BENCH_ES_ROWS", 1_000_000)))
    ap.add_argument("--skip-es", action="store_true")
    ap.add_argument("--skip-sling", action="store_true", help="no Sling peer row")
    ap.add_argument(
        "--scrapes-per-second", type=float, nargs="+", default=[1.0, 1 / 15], help="one row each"
    )
    ap.add_argument("--skip-scrapes", action="store_true", help="no rows with /metrics scrapes")
    ap.add_argument(
        "--skip-runs", action="store_true", help="no runs/min of a small partition per executor"
    )
    ap.add_argument(
        "--repeats", type=int, default=int(os.environ.get("BENCH_REPEATS", 3)), help="rounds"
    )
    args = ap.parse_args(argv)

    sling = None if args.skip_sling else sling_binary()
    results: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        path = os.path.join(tmp, "events.csv")
        print(f"generating {args.rows:,} records ...", file=sys.stderr)
        with open(path, "w", encoding="utf-8", newline="") as fh:
            write_csv(fh, args.rows, SAMPLE_START, 5)
        with open(path.removesuffix(".csv") + ".jsonl", "w", encoding="utf-8") as fh:
            for values in events(args.rows, SAMPLE_START, 5):  # the CSV's rows, same seed
                fh.write(json.dumps(dict(zip(FIELDS, values, strict=True))) + "\n")

        es = None
        if not args.skip_es:
            print(f"seeding the Elasticsearch test server with {args.es_rows:,} docs ...",
                  file=sys.stderr)  # fmt: skip
            es = EsServer(args.es_rows)
        # Interleaved rounds, so a slow spell of the machine hits every row alike; each row
        # shows its median run (and the spread of its runs).
        rounds: dict[str, list[Row]] = {}
        try:
            for n in range(args.repeats):
                for row in one_round(
                    path,
                    tmp,
                    args.rows,
                    args.scrapes_per_second,
                    n,
                    args.repeats,
                    sling,
                    scrapes=not args.skip_scrapes,
                    es=es,
                ):
                    rounds.setdefault(row.name, []).append(row)
        finally:
            if es is not None:
                es.close()
        for runs in rounds.values():
            results.append(median_row(runs))

    base = results[0].rows / results[0].seconds
    print()
    print(
        f"{'benchmark':<28} {'rows':>10} {'seconds':>8} {'rows/s':>9} {'ratio':>6} "
        f"{'peak RSS':>9}  note"
    )
    for r in results:
        rate = r.rows / r.seconds if r.seconds > 0 else 0.0
        rss = f"{r.rss_mb:.0f} MB" if r.rss_mb else ""
        print(
            f"{r.name:<28} {r.rows:>10,} {r.seconds:>8.2f} {rate:>9,.0f} {rate / base:>6.2f} "
            f"{rss:>9}  {r.note}"
        )
    by_name = {r.name: r for r in results}
    scraped = [r for r in results if r.name.startswith("cli + /metrics")]
    print("\n" if scraped else "", end="")
    for r in scraped:
        change = r.seconds / by_name["cli csv→mariadb"].seconds - 1
        print(f"{r.name} ÷ cli csv→mariadb: {change:+.1%} time")
    if "sling csv→mariadb" in by_name:
        ours, theirs = by_name["cli csv→mariadb"], by_name["sling csv→mariadb"]
        print(f"\ncli csv→mariadb ÷ sling csv→mariadb: {theirs.seconds / ours.seconds:.2f}x")
    if scraped:  # what one scrape costs, measured apart from the noise of whole runs
        print("\n" + metrics_overhead())
    print("\nratio = rows/s ÷ baseline executemany rows/s (same machine, same run)")
    print("seconds = the median of interleaved runs; peak RSS = the worst run's, the CLI")
    print("process and its worker processes together")
    if not args.skip_runs:
        print("\n" + runs_per_minute.report())


if __name__ == "__main__":
    main()
