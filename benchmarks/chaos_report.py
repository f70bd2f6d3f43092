"""Run the chaos scenarios and print the summary table.

``python -m benchmarks.chaos_report [pytest args]`` runs ``pytest -m chaos`` on
``es_mysql_pipeline_tests/chaos`` with ``CHAOS_REPORT_FILE`` set; each scenario appends one
row (scenario, trials, rows expected, rows found, duplicates, lost, retries, result), and the
table is printed at the end. ``CHAOS_TRIALS`` (default 3) sets the kill trials, ``CHAOS_ROWS``
(default 200,000 here; the test suite alone uses 50,000) the rows of the killed loads. The
exit code is pytest's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

COLUMNS = [
    ("scenario", "scenario"),
    ("trials", "trials"),
    ("expected", "rows expected"),
    ("found", "rows found"),
    ("duplicates", "duplicates"),
    ("lost", "lost"),
    ("retries", "retries"),
    ("result", "result"),
]
#: Covered by tests outside the chaos folder; listed so the table is complete.
REFERENCED = [
    {
        "scenario": "Pushgateway down / slow (resource, no stall)",
        "trials": "-",
        "expected": "-",
        "found": "-",
        "duplicates": "-",
        "lost": "-",
        "retries": "-",
        "result": "see metrics/test_pushgateway.py",
    }
]


def table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of the report rows."""
    head = [title for _, title in COLUMNS]
    body = [[str(row.get(key, "")) for key, _ in COLUMNS] for row in rows]
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in body
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    repo = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="chaos-report-") as tmp:
        report = Path(tmp) / "rows.jsonl"
        env = {"CHAOS_ROWS": "200000", **os.environ, "CHAOS_REPORT_FILE": str(report)}
        started = time.monotonic()
        code = subprocess.call(
            [
                sys.executable,
                "-m",
                "pytest",
                "-m",
                "chaos",
                "-q",
                "-p",
                "no:randomly",
                "es_mysql_pipeline_tests/chaos",
                *argv,
            ],
            cwd=repo,
            env=env,
        )
        seconds = time.monotonic() - started
        rows = []
        if report.exists():
            rows = [json.loads(line) for line in report.read_text().splitlines() if line]
    print()
    print(f"Chaos summary (CHAOS_TRIALS={os.environ.get('CHAOS_TRIALS', '3')}, {seconds:.0f} s)")
    print(table(rows + REFERENCED))
    notes = [f"- {r['scenario']}: {r['note']}" for r in rows if r.get("note")]
    if notes:
        print("\nNotes:")
        print("\n".join(notes))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
