"""Secrets: a sentinel database password and Elasticsearch API key never appear in stdout,
stderr, log files, Dagster's event log, the run config stored by the instance, staged files
or dead-letter files - in successful runs and in failing ones (``--debug`` included)."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from es_mysql_pipeline.assets import build_assets
from es_mysql_pipeline.definitions import resources_for
from es_mysql_pipeline_tests.es_server import EsTestServer
from es_mysql_pipeline_tests.helpers import table_rows
from es_mysql_pipeline_tests.security.users import DbUser, mysql_user

ROOT = Path(__file__).resolve().parents[2]
PYTHON = str(ROOT / ".venv" / "bin" / "python")
DB_SECRET = f"DbSentinel-{uuid.uuid4().hex[:16]}"
ES_SECRET = f"EsSentinel-{uuid.uuid4().hex[:16]}"
SECRETS = (DB_SECRET, ES_SECRET)
DOCS: list[tuple[str, dict[str, Any]]] = [
    ("a1", {"@timestamp": "2024-01-01T01:00:00Z", "msg": "hello", "user": {"name": "ann"}}),
    ("a2", {"@timestamp": "2024-01-01T02:00:00Z", "msg": "world"}),
    ("bad", {"@timestamp": "not a time", "msg": "goes to the dead letter"}),
]


def assert_no_secret(where: str, text: str | bytes) -> None:
    data = text.encode("utf-8", "replace") if isinstance(text, str) else text
    for secret in SECRETS:
        assert secret.encode() not in data, f"secret leaked into {where}"


def assert_tree_clean(root: Path) -> int:
    """Every file under ``root`` (logs, sqlite storage, stages, dead letters): no secret."""
    n = 0
    for path in root.rglob("*"):
        if path.is_file():
            assert_no_secret(str(path), path.read_bytes())
            n += 1
    return n


@pytest.fixture
def es() -> Iterator[EsTestServer]:
    with EsTestServer(api_key=ES_SECRET) as server:
        server.add_docs("events", DOCS)
        yield server


@pytest.fixture
def loader(mysql_url: str) -> Iterator[DbUser]:
    with mysql_user(mysql_url, password=DB_SECRET) as user:
        yield user


def cli(tmp: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [PYTHON, "-m", "es_mysql_pipeline", "--no-progress", "--debug", *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp,
        env={**os.environ, **env},
    )
    assert_no_secret("stdout", proc.stdout)
    assert_no_secret("stderr", proc.stderr)
    return proc


def es_to_mysql_args(tmp: Path, es: EsTestServer, user: DbUser, table: str) -> list[str]:
    return [
        "--source_type", "elasticsearch", "--es_url", es.url, "--es_index", "events",
        "--sink_type", "mysql", "--db_user", user.name, "--db_table", table,
        "--staging-dir", str(tmp / "staging"), "--dead-letter-dir", str(tmp / "dl"),
        "--max-failed-ratio", "1",
    ]  # fmt: skip


@pytest.mark.integration
@pytest.mark.slow
def test_cli_success_and_failures_never_show_secrets(
    tmp_path: Path, es: EsTestServer, loader: DbUser, mysql_url: str, mysql_table: str
) -> None:
    env = {"DB_PASSWORD": DB_SECRET, "ES_API_KEY": ES_SECRET}
    ok = cli(tmp_path, *es_to_mysql_args(tmp_path, es, loader, mysql_table), env=env)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert set(table_rows(mysql_url, mysql_table)) == {"a1", "a2"}
    assert (tmp_path / "dl" / "transform" / "all.jsonl").exists()  # a dead letter was written
    # Failures echo URLs and driver errors: the wrong password and the wrong key are secrets too.
    other = {"DB_PASSWORD": DB_SECRET + "x", "ES_API_KEY": ES_SECRET}
    bad_db = cli(tmp_path, *es_to_mysql_args(tmp_path, es, loader, mysql_table), env=other)
    assert bad_db.returncode != 0 and "Access denied" in bad_db.stderr  # --debug: traceback
    es.api_key = "the-real-key"  # the server now refuses ES_SECRET
    bad_es = cli(tmp_path, *es_to_mysql_args(tmp_path, es, loader, mysql_table), env=env)
    assert bad_es.returncode != 0
    # The deprecated --db_pass flag: warned about, still never printed.
    args = es_to_mysql_args(tmp_path, es, loader, mysql_table)
    flag = cli(tmp_path, *args, "--db_pass", DB_SECRET, env={"ES_API_KEY": "the-real-key"})
    assert flag.returncode == 0 and "DB_PASSWORD" in flag.stderr
    assert assert_tree_clean(tmp_path) >= 1


def _instance_run(
    tmp: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> tuple[dg.DagsterInstance, dg.ExecuteInProcessResult, Path]:
    home = tmp / "dagster_home"
    home.mkdir()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    instance = dg.DagsterInstance.local_temp(str(home))
    resources = resources_for("elasticsearch")
    result = dg.materialize(
        build_assets(None), resources=resources, instance=instance, raise_on_error=False
    )
    return instance, result, home


def _assert_instance_clean(instance: dg.DagsterInstance, run_id: str) -> None:
    run = instance.get_run_by_id(run_id)
    assert run is not None
    assert_no_secret("stored run config", repr(run.run_config))
    assert_no_secret("stored run tags", repr(run.tags))
    logs = instance.all_logs(run_id)
    assert logs
    for record in logs:
        assert_no_secret("event log", repr(record))


@pytest.mark.integration
def test_dagster_instance_stores_no_secret(
    tmp_path: Path,
    es: EsTestServer,
    loader: DbUser,
    mysql_url: str,
    mysql_table: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {
        "DB_PASSWORD": DB_SECRET,
        "ES_API_KEY": ES_SECRET,
        "DB_URL": loader.url,
        "DB_TABLE": mysql_table,
        "ES_URL": es.url,
        "ES_INDEX": "events",
        "ES_MYSQL_PIPELINE_DATA": str(tmp_path / "data"),
        "MAX_FAILED_RATIO": "0.5",  # one of the three records is bad: dead-lettered, not a stop
    }
    instance, result, home = _instance_run(tmp_path, env, monkeypatch)
    assert result.success
    assert set(table_rows(mysql_url, mysql_table)) == {"a1", "a2"}
    _assert_instance_clean(instance, result.run_id)
    assert (tmp_path / "data" / "dead_letter" / "transform" / "all.jsonl").exists()
    assert assert_tree_clean(tmp_path) >= 3  # instance storage, stages, dead letters

    # A failing run (the database refuses the password) leaks nothing either.
    monkeypatch.setenv("DB_PASSWORD", DB_SECRET + "-wrong")
    failed = dg.materialize(
        build_assets(None),
        resources=resources_for("elasticsearch"),
        instance=instance,
        raise_on_error=False,
    )
    assert not failed.success
    _assert_instance_clean(instance, failed.run_id)
    assert assert_tree_clean(tmp_path) >= 3
    instance.dispose()
    del home
