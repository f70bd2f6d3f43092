"""The CLI end to end, as a user runs it: a subprocess."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from es_mysql_pipeline_tests.fixtures.prometheus import free_port
from es_mysql_pipeline_tests.helpers import (
    SAMPLE,
    event_rows,
    sample_rows,
    table_rows,
    write_csv,
)

SECRET = "Sentinel-Pw-9f3a"
TO_FILE = ["--csv_file", SAMPLE, "--sink_type", "file", "--output_file", "o"]


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    return subprocess.run(
        [sys.executable, "-m", "es_mysql_pipeline", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert proc.returncode == code, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert text in lines[0]
    assert "Traceback" not in proc.stderr


def test_csv_to_jsonl_file(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    proc = cli(
        "--source_type",
        "csv",
        "--csv_file",
        SAMPLE,
        "--sink_type",
        "file",
        "--output_file",
        str(out),
        "--dead-letter-dir",
        str(tmp_path / "dl"),
    )
    assert proc.returncode == 0, proc.stderr
    assert "Summary" in proc.stdout and "processed" in proc.stdout
    ids = [json.loads(line)["id"] for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(ids) == len(sample_rows()) - 5
    assert (tmp_path / "dl" / "transform" / "all.jsonl").exists()


def test_csv_to_sqlite_with_window(tmp_path: Path) -> None:
    db = tmp_path / "x.sqlite"
    proc = cli(
        "--csv_file",
        SAMPLE,
        "--sink_type",
        "sqlite",
        "--db_path",
        str(db),
        "--start",
        "2024-01-02",
        "--end",
        "2024-01-03",
        "--workers",
        "3",
        "--batch-size",
        "100",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    rows = table_rows(f"sqlite:///{db}", "records")
    assert rows and all(r["timestamp"].date().isoformat() == "2024-01-02" for r in rows.values())


@pytest.mark.integration
def test_csv_to_mysql(mysql_url: str, mysql_table: str, tmp_path: Path) -> None:
    proc = cli(
        "--csv_file",
        SAMPLE,
        "--sink_type",
        "mysql",
        "--db_host",
        "127.0.0.1",
        "--db_user",
        "root",
        "--db_name",
        "test",
        "--db_table",
        mysql_table,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(table_rows(mysql_url, mysql_table)) == len(sample_rows()) - 6


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["--source_type", "kafka"], "invalid choice: 'kafka'"),
        (["--bogus-flag"], "unrecognized arguments"),
        (
            ["--csv_file", "/nonexistent/x.csv", "--sink_type", "file", "--output_file", "o"],
            "does not exist",
        ),
        (
            [
                "--csv_file",
                SAMPLE,
                "--sink_type",
                "sqlite",
                "--db_path",
                "x.db",
                "--db_table",
                "records; DROP TABLE x",
            ],
            "not a valid SQL identifier",
        ),
        (["--csv_file", SAMPLE, "--sink_type", "sqlite"], "--db_path is required"),
        (
            [
                "--csv_file",
                SAMPLE,
                "--sink_type",
                "file",
                "--output_file",
                "o",
                "--start",
                "2024-01-01",
            ],
            "give both --start and --end",
        ),
        (
            [*TO_FILE, "--start", "2024-01-05", "--end", "2024-01-02"],
            "--start/--end: empty time window",
        ),
        (
            [*TO_FILE, "--start", "2024-02-30", "--end", "2024-03-02"],
            "--start/--end: day is out of range for month",
        ),
    ],
)
def test_bad_usage_is_exit_2_and_one_line(args: list[str], text: str, tmp_path: Path) -> None:
    assert_one_line_error(cli(*args, cwd=tmp_path), 2, text)


@pytest.mark.integration
def test_wrong_database_password(mysql_url: str, tmp_path: Path) -> None:
    proc = cli(
        "--csv_file",
        SAMPLE,
        "--sink_type",
        "mysql",
        "--db_user",
        "no_such_user",
        env={"DB_PASSWORD": SECRET},
        cwd=tmp_path,
    )
    assert_one_line_error(proc, 2, "Access denied")
    assert SECRET not in proc.stderr + proc.stdout


def test_failed_ratio_threshold_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("id,timestamp\n1,2024-01-01\n,2024-01-01\n3,never\n")
    proc = cli(
        "--csv_file",
        str(bad),
        "--sink_type",
        "file",
        "--output_file",
        str(tmp_path / "o.jsonl"),
        cwd=tmp_path,
    )
    assert proc.returncode == 1
    assert "2 of 3 records failed" in proc.stderr


@pytest.mark.integration
def test_sink_refusals_over_the_ratio_exit_1_naming_the_top_reason(
    mysql_url: str, mysql_table: str, tmp_path: Path
) -> None:
    """Each step under --max-failed-ratio, the run over it: 1 of 20 rejected in transform
    (exactly 0.05), 1 refused by the table (a message too long for its TEXT column)."""
    mysql = ["--sink_type", "mysql", "--db_table", mysql_table, "--no-progress"]
    day1 = write_csv(tmp_path / "day1.csv", event_rows(20))
    assert cli("--csv_file", day1, *mysql, cwd=tmp_path).returncode == 0  # message: TEXT
    rows = event_rows(20, day="2024-03-02", start=20)
    rows[3]["id"] = ""
    rows[7]["message"] = "é" * 40_000  # 80,000 bytes
    day2 = write_csv(tmp_path / "day2.csv", rows)
    proc = cli("--csv_file", day2, *mysql, "--schema-contract", "discard", cwd=tmp_path)
    assert_one_line_error(
        proc,
        1,
        "2 of 20 records failed (more than --max-failed-ratio 0.05); see the dead-letter "
        "files; most often: 1 records: missing or empty id field 'id'",
    )
    assert "Summary" in proc.stdout  # the counts are still shown
    assert len(table_rows(mysql_url, mysql_table)) == 20 + 18


ANALYZER = """
import pathlib, threading, time

started = []

def analyze(record):
    if not started:  # once: a thread that is no daemon, which a Python program waits for
        started.append(threading.Thread(target=finish))
        started[0].start()
    return {}

def finish():
    time.sleep(1.5)
    pathlib.Path("finished").write_text("done")
"""


def test_the_command_waits_for_threads_the_analyzer_started(tmp_path: Path) -> None:
    (tmp_path / "late_analyzer.py").write_text(ANALYZER, encoding="utf-8")
    proc = cli(
        *TO_FILE,
        *("--analyzer", "late_analyzer.analyze", "--transform-processes", "1", "--no-progress"),
        cwd=tmp_path,  # python -m: the analyzer is imported from here
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "finished").read_text() == "done"


@pytest.fixture(scope="module")
def big_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """400,000 rows, long enough to be stopped mid-run; written once for both signals."""
    from es_mysql_pipeline.sample_data import SAMPLE_START, write_csv

    big = tmp_path_factory.mktemp("signal") / "big.csv"
    with big.open("w", encoding="utf-8", newline="") as fh:
        write_csv(fh, 400_000, SAMPLE_START, 5)
    return big


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_cleanly_and_publishes_nothing(
    sig: int, big_csv: Path, tmp_path: Path
) -> None:
    big = big_csv
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "es_mysql_pipeline",
            "--csv_file",
            str(big),
            "--sink_type",
            "file",
            "--output_file",
            str(out),
            "--batch-size",
            "500",
            "--staging-dir",
            str(tmp_path / "staging"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    # Into the run (imports done, a stage being written), however loaded the machine is.
    deadline = time.monotonic() + 120
    while not any(p.is_file() for p in (tmp_path / "staging").rglob("*")):
        assert proc.poll() is None and time.monotonic() < deadline, "the run never started"
        time.sleep(0.05)
    time.sleep(0.5)
    os.killpg(proc.pid, sig)  # as Ctrl+C does: to every process of the group
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "stopped by request" in stderr
    assert "Traceback" not in stderr
    assert not out.exists()  # nothing half-written published
    assert not list(tmp_path.glob("out.jsonl.tmp*"))


SLOW_ANALYZER = """
import pathlib, time

def analyze(record):
    pathlib.Path("analyzing").touch()
    time.sleep(0.002)  # a transform batch in flight lasts seconds: the first stop must wait
    return {}
"""


@pytest.mark.slow
def test_a_second_ctrl_c_aborts_at_once(big_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    (tmp_path / "slow_analyzer.py").write_text(SLOW_ANALYZER, encoding="utf-8")
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "es_mysql_pipeline", "--csv_file", str(big_csv)),
            *("--sink_type", "file", "--output_file", str(out), "--batch-size", "500"),
            *("--staging-dir", str(tmp_path / "staging")),
            *("--analyzer", "slow_analyzer.analyze"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "analyzing").exists():  # the transform's batches are in flight
            assert proc.poll() is None and time.monotonic() < deadline, "no transform started"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGINT)  # again: no waiting for the batch in flight
        _, stderr = proc.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # any worker left of the group we started
    assert proc.returncode == 130, stderr
    assert "again to abort" in stderr
    assert "stopped by request" not in stderr  # not the graceful stop's message
    assert "Traceback" not in stderr
    assert not out.exists()


def test_without_linger_the_endpoint_ends_with_the_run(tmp_path: Path) -> None:
    """--metrics-port alone: the command returns when the run is done, the port freed."""
    port = free_port()
    proc = cli(
        *TO_FILE,
        *("--metrics-port", str(port), "--no-progress"),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Summary" in proc.stdout and "Traceback" not in proc.stderr
    with socket.socket() as again:
        again.bind(("127.0.0.1", port))  # free: nothing serves it any more


def test_metrics_port_in_use_is_a_clear_error(tmp_path: Path) -> None:

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = cli(
            "--csv_file",
            SAMPLE,
            "--sink_type",
            "file",
            "--output_file",
            str(tmp_path / "o.jsonl"),
            "--metrics-port",
            str(port),
            cwd=tmp_path,
        )
    assert_one_line_error(proc, 2, str(port))
    assert not (tmp_path / "o.jsonl").exists()
