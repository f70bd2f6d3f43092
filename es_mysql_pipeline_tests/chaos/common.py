"""Shared pieces of the chaos scenarios: source data, exact table comparison, MariaDB control,
CLI and Dagster-run subprocesses, the staged-file check and the report records."""

from __future__ import annotations

import csv
import json
import marshal
import os
import pickle
import random
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pymysql

from es_mysql_pipeline.sample_data import FIELDS, events
from es_mysql_pipeline.staging import META_SUFFIX
from es_mysql_pipeline_tests.support.failures import step_failure_message
from es_mysql_pipeline_tests.support.mysql import (
    MYSQL_DB,
    MYSQL_HOST,
    MYSQL_PORT,
    MYSQL_USER,
    mysql_url,
)
from es_mysql_pipeline_tests.support.ports import free_port

START = datetime(2024, 1, 1, tzinfo=timezone.utc)
MARIADBD_START = [
    "start-stop-daemon",
    "--start",
    "--oknodo",
    "--background",
    "--exec",
    "/usr/sbin/mariadbd",
    "--",
    "--user=mysql",
]
REPO = Path(__file__).resolve().parents[2]
#: Where tests append their report rows (set by ``benchmarks/chaos_report.py``).
REPORT_ENV = "CHAOS_REPORT_FILE"


def trials() -> int:
    """``CHAOS_TRIALS`` (default 2 in the test suite; ``make chaos`` runs 10)."""
    return max(1, int(os.environ.get("CHAOS_TRIALS", "2")))


def kill_rows() -> int:
    """Rows of the killed-mid-load source (``CHAOS_ROWS``; default 50,000 in the test suite,
    enough for a kill by rows or by time to land mid-load; ``make chaos`` runs 200,000)."""
    return max(1000, int(os.environ.get("CHAOS_ROWS", "50000")))


# -- source data ---------------------------------------------------------------------------


def write_events_csv(path: Path, n: int, days: int, shuffle_ids: bool = False) -> Path:
    """``n`` well-formed events over ``days`` days; ``shuffle_ids`` interleaves the ids of
    different days in the primary key (more lock contention between parallel runs)."""
    perm = list(range(n))
    if shuffle_ids:
        random.Random(11).shuffle(perm)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(FIELDS)
        for i, row in enumerate(events(n, START, days)):
            if shuffle_ids:
                row[0] = f"evt-{perm[i]:07d}"
            writer.writerow(row)
    return path


Row = tuple[str, ...]


def expected_rows(csv_path: Path, day: str | None = None) -> dict[str, Row]:
    """The source parsed independently of the pipeline: id -> the other fields as text."""
    out: dict[str, Row] = {}
    with open(csv_path, encoding="utf-8", newline="") as fh:
        for rec in csv.DictReader(fh):
            if day is None or rec["timestamp"].startswith(day):
                out[rec["id"]] = tuple(rec[f] for f in FIELDS[1:])
    return out


def es_docs(csv_path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """The same events as Elasticsearch documents (``@timestamp``, ``_id``)."""
    with open(csv_path, encoding="utf-8", newline="") as fh:
        for rec in csv.DictReader(fh):
            src: dict[str, Any] = {k: v for k, v in rec.items() if k not in ("id", "timestamp")}
            src["@timestamp"] = rec["timestamp"]
            yield rec["id"], src


# -- MariaDB -------------------------------------------------------------------------------


def connect(timeout: float = 5, port: int = MYSQL_PORT) -> pymysql.connections.Connection:
    return pymysql.connect(
        host=MYSQL_HOST,
        port=port,
        user=MYSQL_USER,
        database=MYSQL_DB,
        connect_timeout=max(1, int(timeout)),
        charset="utf8mb4",
        autocommit=True,
    )


def mariadb_alive() -> bool:
    try:
        conn = connect(2)
    except pymysql.err.MySQLError:
        return False
    try:
        conn.ping()
        return True
    except pymysql.err.MySQLError:
        return False
    finally:
        conn.close()


def wait_mariadb(up: bool, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while mariadb_alive() != up:
        if time.monotonic() > deadline:
            raise TimeoutError(f"MariaDB did not become {'reachable' if up else 'unreachable'}")
        time.sleep(0.2)


def stop_mariadb() -> None:
    """A clean shutdown, as an operator or a package upgrade does it."""
    subprocess.run(["mariadb-admin", "-uroot", "shutdown"], check=False, capture_output=True)
    wait_mariadb(False, timeout=60)


def start_mariadb() -> None:
    subprocess.run(MARIADBD_START, check=False, capture_output=True)
    wait_mariadb(True, timeout=90)


def ensure_mariadb() -> None:
    """Start MariaDB when it is not answering; every other test needs it."""
    if not mariadb_alive():
        start_mariadb()


def row_count(table: str, port: int = MYSQL_PORT) -> int:
    """Rows in ``table`` (0 when it does not exist yet or the server is away)."""
    try:
        conn = connect(2, port)
    except pymysql.err.MySQLError:
        return 0
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT COUNT(*) FROM `{table}`")
            return int(cur.fetchone()[0])
    except pymysql.err.MySQLError:
        return 0
    finally:
        conn.close()


def drop_table(table: str) -> None:
    conn = connect()
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS `{table}`")
    finally:
        conn.close()


class PrivateMariaDB:
    """A throw-away MariaDB server (own datadir and port) that a test may stop, kill and
    start again without disturbing the shared test server other tests use meanwhile."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.datadir = root / "data"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    @property
    def url(self) -> str:
        return mysql_url(self.port)

    def install(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={self.datadir}",
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "/usr/sbin/mariadbd",
                "--no-defaults",
                f"--datadir={self.datadir}",
                f"--socket={self.root / 'mysqld.sock'}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                "--user=root",
                f"--pid-file={self.root / 'mysqld.pid'}",
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=128M",
                f"--log-error={self.root / 'error.log'}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.wait(True)
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("CREATE DATABASE IF NOT EXISTS test")
        finally:
            conn.close()

    def connect(self, timeout: float = 2) -> pymysql.connections.Connection:
        return pymysql.connect(
            host="127.0.0.1",
            port=self.port,
            user="root",
            connect_timeout=max(1, int(timeout)),
            autocommit=True,
        )

    def alive(self) -> bool:
        try:
            self.connect().close()
            return True
        except pymysql.err.MySQLError:
            return False

    def wait(self, up: bool, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while self.alive() != up:
            if self.proc is not None and up and self.proc.poll() is not None:
                log = (self.root / "error.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"mariadbd exited with {self.proc.returncode}:\n{log}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"MariaDB on {self.port} did not become up={up}")
            time.sleep(0.1)

    def shutdown(self) -> None:
        """Clean shutdown (``mariadb-admin shutdown``): connections see 1053/2013."""
        subprocess.run(
            [
                "mariadb-admin",
                "--no-defaults",
                "-h127.0.0.1",
                f"-P{self.port}",
                "-uroot",
                "shutdown",
            ],
            check=False,
            capture_output=True,
            timeout=120,
        )
        if self.proc is not None:
            self.proc.wait(120)
        self.restarts += 1

    def kill(self) -> None:
        """``kill -9`` of mariadbd: a crash, InnoDB recovers on the next start."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(60)
        self.restarts += 1

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.shutdown()
        shutil.rmtree(self.root, ignore_errors=True)


# -- exact comparison ----------------------------------------------------------------------


@dataclass
class Comparison:
    """What the table holds compared with the source."""

    expected: int
    found: int
    duplicates: int
    lost: int
    extra: int
    changed: int

    @property
    def exact(self) -> bool:
        return (
            self.found == self.expected
            and not self.duplicates
            and not self.lost
            and not self.extra
            and not self.changed
        )

    def __str__(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self).items())


def compare_table(
    table: str, expected: dict[str, Row], day: str | None = None, port: int = MYSQL_PORT
) -> Comparison:
    """Every expected id exactly once with every field byte-equal, and nothing else."""
    fields = ", ".join(f"`{f}`" for f in FIELDS[2:])
    args: tuple[str, ...] = ()
    conn = connect(port=port)
    try:
        with conn.cursor() as cur:
            cur.execute(f"SHOW COLUMNS FROM `{table}` LIKE '\\_id'")
            key = "_id" if cur.fetchall() else "id"  # an Elasticsearch document's id
            sql = (
                f"SELECT `{key}`, DATE_FORMAT(`timestamp`, '%%Y-%%m-%%dT%%H:%%i:%%s.%%fZ'), "
                f"{fields} FROM `{table}`"
            )
            if day is not None:
                sql += " WHERE `timestamp` >= %s AND `timestamp` < %s + INTERVAL 1 DAY"
                args = (day, day)
            cur.execute(sql, args)
            rows = cur.fetchall()
    finally:
        conn.close()
    ids = Counter(r[0] for r in rows)
    duplicates = sum(n - 1 for n in ids.values() if n > 1)
    lost = sum(1 for i in expected if i not in ids)
    extra = sum(1 for i in ids if i not in expected)
    changed = sum(1 for r in rows if r[0] in expected and tuple(r[1:]) != expected[r[0]])
    return Comparison(len(expected), len(rows), duplicates, lost, extra, changed)


# -- staged files --------------------------------------------------------------------------


def _count_stage_records(data: Path) -> int:
    """Records in a stage file, read frame by frame (8-byte little-endian length, a codec
    byte: 1 marshal, 2 pickle, then the batch: a list of records, or a dict of columns of
    equal length) without the pipeline's reader, so a short or torn frame is an error."""
    n = 0
    with open(data, "rb") as fh:
        while header := fh.read(9):
            if len(header) < 9:
                raise ValueError(f"torn frame header at byte {fh.tell() - len(header)}")
            size = int.from_bytes(header[:8], "little")
            payload = fh.read(size)
            if len(payload) < size:
                raise ValueError(f"frame of {size} bytes cut at {len(payload)}")
            decode = {1: marshal.loads, 2: pickle.loads}[header[8]]
            frame = decode(payload)
            if isinstance(frame, dict):
                lengths = set(map(len, frame.values()))
                if len(lengths) != 1:
                    raise ValueError(f"columns of different lengths: {sorted(lengths)}")
                n += lengths.pop()
            else:
                n += len(frame)
    return n


def check_stages(staging_dir: Path) -> list[str]:
    """Problems with stages a re-run could take as complete: a sidecar whose data file is
    missing or holds a different number of records. Returns ``[]`` when all is well."""
    problems: list[str] = []
    if not staging_dir.exists():
        return problems
    for meta in staging_dir.rglob("*" + META_SUFFIX):
        data = meta.with_name(meta.name[: -len(META_SUFFIX)])
        try:
            info = json.loads(meta.read_text(encoding="utf-8"))
        except ValueError as exc:
            problems.append(f"{meta}: unreadable sidecar ({exc})")
            continue
        if not data.exists():
            problems.append(f"{meta}: data file missing")
            continue
        try:
            n = _count_stage_records(data)
        except (ValueError, EOFError, pickle.UnpicklingError) as exc:
            problems.append(f"{data}: truncated ({exc})")
            continue
        if n != info.get("rows"):
            problems.append(f"{data}: {n} records but the sidecar says {info.get('rows')}")
    return problems


# -- subprocesses --------------------------------------------------------------------------


def cli_command(
    csv_path: Path,
    table: str,
    work: Path,
    *extra: str,
    port: int = MYSQL_PORT,
    mode: str = "skip",
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "es_mysql_pipeline",
        "--source_type",
        "csv",
        "--csv_file",
        str(csv_path),
        "--sink_type",
        "mysql",
        "--db_host",
        MYSQL_HOST,
        "--db_port",
        str(port),
        "--db_table",
        table,
        "--write-mode",
        mode,
        "--staging-dir",
        str(work / "staging"),
        "--dead-letter-dir",
        str(work / "dead_letter"),
        "--no-progress",
        *extra,
    ]


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str
    seconds: float


def popen(cmd: Sequence[str], log: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start ``cmd`` with stdout/stderr to ``log``.out/.err (no pipes to fill up)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        list(cmd),
        stdout=open(str(log) + ".out", "wb"),
        stderr=open(str(log) + ".err", "wb"),
        cwd=str(REPO),
        **kwargs,
    )


def finish(proc: subprocess.Popen[bytes], log: Path, started: float, timeout: float) -> Finished:
    try:
        proc.wait(timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = Path(str(log) + ".out").read_text(encoding="utf-8", errors="replace")
    err = Path(str(log) + ".err").read_text(encoding="utf-8", errors="replace")
    return Finished(int(proc.returncode), out, err, time.monotonic() - started)


def run(cmd: Sequence[str], log: Path, timeout: float = 600, **kwargs: Any) -> Finished:
    started = time.monotonic()
    return finish(popen(cmd, log, **kwargs), log, started, timeout)


def summary_value(stdout: str, key: str) -> int:
    """A count from the CLI's summary (``  inserted   123``)."""
    for line in stdout.splitlines():
        parts = line.split()
        if line.startswith("  ") and " ".join(parts[:-1]) == key:
            return int(parts[-1])
    raise AssertionError(f"no {key!r} in the summary:\n{stdout}")


def partition_command(spec: dict[str, Any]) -> list[str]:
    """A Dagster run of the partitioned job in its own process (see ``run_partition.py``)."""
    return [sys.executable, "-m", "es_mysql_pipeline_tests.chaos.run_partition", json.dumps(spec)]


def last_json(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            return dict(json.loads(line))
    raise AssertionError(f"no JSON result in:\n{stdout}")


def clean_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


# -- report --------------------------------------------------------------------------------


def report(
    scenario: str,
    trials: int,
    comparison: Comparison | None,
    retries: int | str,
    ok: bool,
    note: str = "",
) -> None:
    """Append one row of the chaos summary (when ``CHAOS_REPORT_FILE`` is set)."""
    path = os.environ.get(REPORT_ENV)
    if not path:
        return
    row = {
        "scenario": scenario,
        "trials": trials,
        "expected": comparison.expected if comparison else "-",
        "found": comparison.found if comparison else "-",
        "duplicates": comparison.duplicates if comparison else "-",
        "lost": comparison.lost if comparison else "-",
        "retries": retries,
        "result": "pass" if ok else "FAIL",
        "note": note,
    }
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")


def failure_message(result: Any) -> str:
    """The failed step's message as Dagster shows it (the ``dg.Failure`` description, else
    the innermost error's last line)."""
    return step_failure_message(
        result, last_line=True, default="the run failed" if not result.success else ""
    )
