"""Realistic synthetic event records, for the bundled sample, tests and benchmarks."""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from importlib import resources
from typing import IO, Any

FIELDS = ["id", "timestamp", "service", "level", "message", "user_id", "latency_ms", "tags"]
_SERVICES = ["checkout", "search", "auth", "inventory", "billing", "gateway"]
_LEVELS = ["INFO"] * 8 + ["WARN", "ERROR"]
_MESSAGES = [
    "request served",
    "cache miss, fetching from origin",
    'user said "hello, world"',
    "payment authorised for order",
    "line one\nline two",
    "Zürich café — naïve façade ✓",
    "数据管道 正在 运行",
    "emoji 🚀 ok",
    "NULL",
    "  padded value  ",
]


def events(n: int, start: datetime, days: int, seed: int = 7) -> Iterator[list[str]]:
    """``n`` well-formed rows spread evenly over ``days`` days from ``start``."""
    rng = random.Random(seed)
    span = days * 86400
    for i in range(n):
        ts = start + timedelta(seconds=(i * span) // max(n, 1) + rng.random())
        yield [
            f"evt-{i:07d}",
            ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            rng.choice(_SERVICES),
            rng.choice(_LEVELS),
            rng.choice(_MESSAGES),
            str(rng.randint(1, 50_000)),
            f"{rng.expovariate(1 / 80):.3f}",
            ",".join(rng.sample(["web", "mobile", "eu", "us", "beta"], k=2)),
        ]


def write_csv(fh: IO[str], n: int, start: datetime, days: int, bad_rows: bool = False) -> int:
    """Write a header and ``n`` rows (plus a few deliberately bad ones); returns rows written."""
    writer = csv.writer(fh, lineterminator="\n")
    writer.writerow(FIELDS)
    written = 0
    for i, row in enumerate(events(n, start, days)):
        writer.writerow(row)
        written += 1
        if bad_rows and i % 500 == 250:
            written += _write_bad(writer, i, row)
    if bad_rows:
        long_text = "long text " * 8000  # 80 kB: needs MEDIUMTEXT in MySQL
        row = ["evt-long-0001", "2024-01-02T12:00:00Z", "search", "INFO", long_text, "1", "1.0"]
        writer.writerow([*row, "web"])
        written += 1
    return written


def _write_bad(writer: Any, i: int, row: list[str]) -> int:
    """One bad row of four kinds: no id, bad timestamp, too few fields, exact duplicate."""
    kind = (i // 500) % 4
    if kind == 0:
        writer.writerow(["", "2024-01-01T10:00:00Z", "auth", "ERROR", "no id", "1", "1", ""])
    elif kind == 1:
        writer.writerow([f"bad-ts-{i}", "yesterday-ish", "auth", "WARN", "bad time", "1", "1", ""])
    elif kind == 2:
        writer.writerow([f"short-{i}", "2024-01-03T10:00:00Z", "auth"])
    else:
        writer.writerow(row)
    return 1


SAMPLE_START = datetime(2024, 1, 1, tzinfo=timezone.utc)


def sample_csv_path() -> str:
    """The bundled sample CSV (what ``__main__`` below writes)."""
    return str(resources.files("es_mysql_pipeline") / "data" / "sample_events.csv")


if __name__ == "__main__":
    import sys

    out = sys.argv[1] if len(sys.argv) > 1 else "es_mysql_pipeline/data/sample_events.csv"
    with open(out, "w", encoding="utf-8", newline="") as fh:
        print(write_csv(fh, 3000, SAMPLE_START, 5, bad_rows=True), "rows written to", out)
