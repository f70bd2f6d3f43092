"""`--pipeline NAME [--defs PATH]`: the CLI runs a pipeline declared in a defs.yaml."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import pytest

from es_mysql_pipeline_tests.fixtures.prometheus import free_port, http_get
from es_mysql_pipeline_tests.helpers import table_rows
from es_mysql_pipeline_tests.security.users import mysql_user

ORDERS = """\
type: es_mysql_pipeline.EsMysqlPipelines
attributes:
  connections:
    app_db: {type: sql, url: "mysql+pymysql://loader@127.0.0.1:1/app", password_env: PW_UNSET_HERE}
  pipelines:
    - name: orders
      source: {path: "in.csv"}
      sink: {connection: app_db, table: orders}
"""


def cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("ES_MYSQL_PIPELINE_DEFS",)}
    return subprocess.run(
        [sys.executable, "-m", "es_mysql_pipeline", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**clean, **env},
        cwd=cwd,
    )


def test_the_bundled_sample_pipeline_runs_by_name(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = cli("--pipeline", "sample", cwd=tmp_path, ES_MYSQL_PIPELINE_DATA=str(data))
    assert proc.returncode == 0, proc.stderr
    assert "inserted                 3001" in proc.stdout
    with sqlite3.connect(data / "es_mysql_pipeline.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM records").fetchone() == (3001,)


def test_an_unset_secret_of_the_pipeline_is_one_line_before_connecting(tmp_path: Path) -> None:
    (tmp_path / "defs.yaml").write_text(ORDERS, encoding="utf-8")
    (tmp_path / "in.csv").write_text("id,ts\n1,2024-01-01\n", encoding="utf-8")
    proc = cli("--defs", "defs.yaml", "--pipeline", "orders", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "PW_UNSET_HERE is not set (the password of the pipeline)" in lines[0]


@pytest.mark.parametrize("where", ["flag", "environment"])
def test_an_unknown_name_lists_the_declared_ones(tmp_path: Path, where: str) -> None:
    (tmp_path / "defs.yaml").write_text(ORDERS, encoding="utf-8")
    args = ["--pipeline", "invoices"]
    env = {"ES_MYSQL_PIPELINE_DEFS": "defs.yaml"} if where == "environment" else {}
    if where == "flag":
        args += ["--defs", "defs.yaml"]
    proc = cli(*args, cwd=tmp_path, **env)
    assert proc.returncode == 2, proc.stderr
    assert "no pipeline named 'invoices' (declared: orders)" in proc.stderr


def test_metrics_under_the_given_pipeline_id_served_until_a_stop(tmp_path: Path) -> None:
    """--pipeline-id names the metrics of a declared pipeline; --metrics-linger keeps them
    served after the run, until the time is up or Ctrl+C ends the wait (exit 0: it ran)."""
    port = free_port()
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "es_mysql_pipeline", "--pipeline", "sample"),
            *("--pipeline-id", "renamed", "--no-progress"),
            *("--metrics-port", str(port), "--metrics-linger", "300"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "ES_MYSQL_PIPELINE_DATA": str(tmp_path / "data")},
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline, body = time.monotonic() + 120, ""
        while 'pipeline_last_success_timestamp_seconds{pipeline_id="renamed"}' not in body:
            assert proc.poll() is None and time.monotonic() < deadline, "no run succeeded"
            time.sleep(0.2)
            try:
                body = http_get(url + "/metrics", timeout=2)[1].decode()
            except (urllib.error.URLError, ConnectionError):
                continue  # not listening yet
        assert 'pipeline_records_processed_total{pipeline_id="renamed",stage="fetch"}' in body
        assert json.loads(http_get(url + "/info")[1])["pipeline_id"] == "renamed"
        time.sleep(0.5)
        assert proc.poll() is None  # the run is over; the endpoint lingers
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)  # well before the 300 s
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert "Summary" in stdout and "Traceback" not in stderr
    with pytest.raises(urllib.error.URLError):
        http_get(url + "/health", timeout=2)  # stopped with the process


@pytest.mark.integration
def test_a_declared_password_is_read_from_its_variable(
    mysql_url: str, mysql_table: str, tmp_path: Path
) -> None:
    with mysql_user(mysql_url) as user:
        (tmp_path / "defs.yaml").write_text(
            ORDERS.replace("mysql+pymysql://loader@127.0.0.1:1/app", user.url)
            .replace("PW_UNSET_HERE", "LOADER_PASSWORD")
            .replace("table: orders", f"table: {mysql_table}"),
            encoding="utf-8",
        )
        (tmp_path / "in.csv").write_text("id,ts\n1,2024-01-01\n2,2024-01-02\n", encoding="utf-8")
        proc = cli(
            "--defs",
            "defs.yaml",
            "--pipeline",
            "orders",
            "--no-progress",
            cwd=tmp_path,
            LOADER_PASSWORD=user.password,
        )
    assert proc.returncode == 0, proc.stderr
    assert sorted(table_rows(mysql_url, mysql_table)) == ["1", "2"]
