"""`--pipeline NAME [--defs PATH]`: the CLI runs a pipeline declared in a defs.yaml."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

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
