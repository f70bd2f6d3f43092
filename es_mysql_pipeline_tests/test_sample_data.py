"""The bundled sample is what `python -m es_mysql_pipeline.sample_data` writes, bad rows and all."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

from es_mysql_pipeline.sample_data import FIELDS, SAMPLE_START, write_csv

BUNDLED = Path(__file__).parents[1] / "es_mysql_pipeline" / "data" / "sample_events.csv"


def test_bad_rows_are_the_four_kinds_and_one_long_text() -> None:
    out = io.StringIO()
    written = write_csv(out, 2000, SAMPLE_START, 2, bad_rows=True)
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0] == FIELDS
    assert written == len(rows) - 1 == 2000 + 4 + 1  # a bad row after rows 250, 750, 1250, 1750
    assert any(row[0] == "" for row in rows[1:])  # no id
    assert any(row[0].startswith("bad-ts-") and row[1] == "yesterday-ish" for row in rows)
    assert any(row[0].startswith("short-") and len(row) == 3 for row in rows)
    ids = [row[0] for row in rows[1:] if row[0].startswith("evt-0")]
    assert len(ids) == len(set(ids)) + 1  # one exact duplicate
    long_rows = [row for row in rows if row[0] == "evt-long-0001"]
    assert len(long_rows) == 1 and len(long_rows[0][4]) > 65_535  # beyond MySQL's TEXT


def test_without_bad_rows_every_row_is_well_formed() -> None:
    out = io.StringIO()
    assert write_csv(out, 300, SAMPLE_START, 1) == 300
    rows = list(csv.reader(io.StringIO(out.getvalue())))[1:]
    assert [row[0] for row in rows] == [f"evt-{i:07d}" for i in range(300)]
    assert all(len(row) == len(FIELDS) for row in rows)


def test_the_module_regenerates_the_bundled_sample(tmp_path: Path) -> None:
    out = tmp_path / "sample.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "es_mysql_pipeline.sample_data", str(out)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert proc.stdout.strip() == f"{3000 + 6 + 1} rows written to {out}"
    assert out.read_bytes() == BUNDLED.read_bytes()
