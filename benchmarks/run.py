"""``make bench``: rows/s of the pipeline against baselines measured in the same run.

Rows (each a fresh MariaDB table of the same shape):
  baseline executemany    raw PyMySQL ``executemany`` of the CSV, 1,000 rows per commit
  baseline load data      raw ``LOAD DATA LOCAL INFILE`` of the same CSV (the server's ceiling)
  cli csv→mariadb         ``es-mysql-pipeline`` as a subprocess, process start included
  cli + 200 scrapes/s     the same, while another process scrapes ``/metrics`` 200 times/s
  cli es→mariadb          from the wire-level Elasticsearch test server (its serving time
                          is shown apart so the pipeline's own cost is visible)

Ratios are against ``baseline executemany``. These machines are noisy: compare ratios.

    python -m benchmarks.run [--rows 1000000] [--es-rows 100000] [--skip-es]
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

import pymysql

from es_mysql_pipeline.sample_data import FIELDS, SAMPLE_START, write_csv

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


def run_cli(args: list[str], cwd: str, env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one CLI process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "es_mysql_pipeline", "--no-progress", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    out = proc.stdout.read().decode() if proc.stdout else ""
    err = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"CLI failed ({status}): {err.strip() or out.strip()}")
    return seconds, usage.ru_maxrss / 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scraper(url: str, per_second: float, stop: Any, hits: Any) -> None:
    interval = 1.0 / per_second
    while not stop.is_set():
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                resp.read()
            with hits.get_lock():
                hits.value += 1
        except OSError:
            pass  # not listening yet, or already gone
        time.sleep(max(0.0, interval - (time.perf_counter() - t0)))


def cli_csv(path: str, table: str, tmp: str, metrics_port: int | None = None) -> list[str]:
    args = [
        "--csv_file",
        path,
        "--sink_type",
        "mysql",
        "--db_table",
        table,
        "--batch-size",
        "5000",
        "--dead-letter-dir",
        os.path.join(tmp, "dl"),
    ]
    if metrics_port:
        args += ["--metrics-port", str(metrics_port)]
    return args


def bench_es(rows: int, tmp: str) -> list[Row]:
    sys.path.insert(0, os.getcwd())
    from es_mysql_pipeline_tests.es_server import EsTestServer

    table = "bench_es"
    with connect() as conn, conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {table}")  # the pipeline creates its own shape
    with EsTestServer() as server:
        server.create_index("bench", shards=2)
        docs = []
        for i in range(rows):
            ts = SAMPLE_START.timestamp() + i * (5 * 86400 / rows)
            docs.append(
                (
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
            )
        server.add_docs("bench", docs)
        served_before = server.stats.serving_seconds
        seconds, rss = run_cli(
            [
                "--source_type",
                "elasticsearch",
                "--es_url",
                server.url,
                "--es_index",
                "bench",
                "--sink_type",
                "mysql",
                "--db_table",
                table,
                "--batch-size",
                "5000",
            ],
            cwd=tmp,
        )
        served = server.stats.serving_seconds - served_before
    loaded = count(table)
    if loaded != rows:
        raise SystemExit(f"es bench loaded {loaded} of {rows}")
    return [
        Row("cli es→mariadb", rows, seconds, rss, f"test server busy {served:.1f}s"),
        Row("  same, minus server time", rows, seconds - served, None, "pipeline's own cost"),
    ]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--rows", type=int, default=int(os.environ.get("BENCH_ROWS", 1_000_000)))
    ap.add_argument("--es-rows", type=int, default=int(os.environ.get("BENCH_ES_ROWS", 100_000)))
    ap.add_argument("--skip-es", action="store_true")
    ap.add_argument("--scrapes-per-second", type=float, default=200.0)
    args = ap.parse_args(argv)

    results: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        path = os.path.join(tmp, "events.csv")
        print(f"generating {args.rows:,} records ...", file=sys.stderr)
        with open(path, "w", encoding="utf-8", newline="") as fh:
            write_csv(fh, args.rows, SAMPLE_START, 5)

        print("baseline executemany ...", file=sys.stderr)
        t = baseline_executemany(path, fresh_table("bench_base"))
        results.append(Row("baseline executemany", args.rows, t))
        print("baseline LOAD DATA ...", file=sys.stderr)
        t = baseline_load_data(path, fresh_table("bench_load"))
        results.append(Row("baseline load data", args.rows, t))

        print("cli csv→mariadb ...", file=sys.stderr)
        table = fresh_table("bench_cli")
        t, rss = run_cli(cli_csv(path, table, tmp), cwd=tmp)
        assert count(table) == args.rows, "CLI lost or doubled rows"
        results.append(Row("cli csv→mariadb", args.rows, t, rss))

        print("cli csv→mariadb with scrapes ...", file=sys.stderr)
        port = free_port()
        stop, hits = multiprocessing.Event(), multiprocessing.Value("i", 0)
        scrapers = [
            multiprocessing.Process(
                target=scraper,
                args=(f"http://127.0.0.1:{port}/metrics", args.scrapes_per_second / 2, stop, hits),
            )
            for _ in range(2)
        ]
        for p in scrapers:
            p.start()
        table = fresh_table("bench_cli_m")
        t, rss = run_cli(cli_csv(path, table, tmp, metrics_port=port), cwd=tmp)
        stop.set()
        for p in scrapers:
            p.join()
        assert count(table) == args.rows
        results.append(
            Row(
                "cli + /metrics scrapes",
                args.rows,
                t,
                rss,
                f"{hits.value / t:.0f} scrapes/s served",
            )
        )
        if not args.skip_es:
            print("cli es→mariadb ...", file=sys.stderr)
            results.extend(bench_es(args.es_rows, tmp))

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
    print("\nratio = rows/s ÷ baseline executemany rows/s (same machine, same run)")


if __name__ == "__main__":
    main()
