"""Bad configuration: each wrong value gives one line naming the setting and the fix, exit 2
from the CLI, and a failed Dagster step with that message."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from es_mysql_pipeline.definitions import resources_for
from es_mysql_pipeline.resources.sinks import SqlSink
from es_mysql_pipeline.resources.sources import FileSource
from es_mysql_pipeline_tests.badinput.support import assert_clear_failure, run_materialize
from es_mysql_pipeline_tests.security.users import mysql_user

ROOT = Path(__file__).resolve().parents[2]
PYTHON = str(ROOT / ".venv" / "bin" / "python")
CSV = b"id,timestamp,v\n1,2024-01-01,a\n2,2024-01-02,b\n"


def cli(
    tmp: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    src = tmp / "in.csv"
    if not src.exists():
        src.write_bytes(CSV)
    base = ["--csv_file", str(src), "--no-progress", "--dead-letter-dir", str(tmp / "dl")]
    return subprocess.run(
        [PYTHON, "-m", "es_mysql_pipeline", *base, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp,
        env={**os.environ, "DB_PASSWORD": "", **(env or {})},
    )


def one_line_exit_2(proc: subprocess.CompletedProcess[str], *must_contain: str) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for text in must_contain:
        assert text.lower() in lines[0].lower(), (text, lines[0])
    return lines[0]


# -- CLI ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--source_type", "mongo"], ["--source_type", "choose from"]),
        (["--sink_type", "oracle"], ["--sink_type", "choose from"]),
        (["--sink_type", "sqlite"], ["--db_path", "required"]),
        (["--sink_type", "mysql", "--db_table", "t; DROP TABLE x"], ["db_table", "letters"]),
        (["--sink_type", "mysql", "--db_port", "abc"], ["--db_port", "invalid int"]),
        (
            ["--encoding", "klingon", "--sink_type", "file", "--output_file", "o.jsonl"],
            ["encoding"],
        ),
        (["--delimiter", ";;", "--sink_type", "file", "--output_file", "o.jsonl"], ["delimiter"]),
        (
            [
                "--source_type",
                "elasticsearch",
                "--es_url",
                "not a url",
                "--es_index",
                "x",
                "--sink_type",
                "file",
                "--output_file",
                "o.jsonl",
            ],
            ["es_url", "could not parse url"],
        ),
        (["--write-mode", "merge"], ["--write-mode", "choose from"]),
    ],
)
def test_cli_bad_setting_is_one_line_exit_2(
    tmp_path: Path, args: list[str], names: list[str]
) -> None:
    one_line_exit_2(cli(tmp_path, *args), *names)


def test_cli_missing_input_file(tmp_path: Path) -> None:
    proc = cli(tmp_path, "--sink_type", "file", "--output_file", "o.jsonl")
    assert proc.returncode == 0, proc.stderr  # the default CSV exists: the baseline works
    (tmp_path / "in.csv").unlink()
    one_line_exit_2(
        cli(
            tmp_path,
            "--csv_file",
            str(tmp_path / "nope.csv"),
            "--sink_type",
            "file",
            "--output_file",
            "o.jsonl",
        ),
        "csv_file",
        "does not exist",
    )


@pytest.mark.integration
def test_cli_unreachable_host_and_wrong_password(tmp_path: Path, mysql_url: str) -> None:
    line = one_line_exit_2(
        cli(tmp_path, "--sink_type", "mysql", "--db_host", "no-such-host.invalid"),
        "cannot connect",
        "no-such-host.invalid",
    )
    assert "Name or service not known" in line or "resolve" in line.lower()
    with mysql_user(mysql_url) as user:
        line = one_line_exit_2(
            cli(
                tmp_path,
                "--sink_type",
                "mysql",
                "--db_user",
                user.name,
                env={"DB_PASSWORD": "wrong-Pw"},
            ),
            "access denied",
            user.name,
        )
        assert "wrong-Pw" not in line


@pytest.mark.integration
def test_cli_connection_errors_name_the_setting_to_fix(tmp_path: Path, mysql_url: str) -> None:
    one_line_exit_2(
        cli(tmp_path, "--sink_type", "mysql", "--db_host", "no-such-host.invalid"), "--db_host"
    )
    with mysql_user(mysql_url) as user:
        one_line_exit_2(
            cli(
                tmp_path,
                "--sink_type",
                "mysql",
                "--db_user",
                user.name,
                env={"DB_PASSWORD": "wrong"},
            ),
            "DB_PASSWORD",
        )


@pytest.mark.integration
def test_cli_missing_table_permission_is_exit_2_naming_the_grant(
    tmp_path: Path, mysql_url: str, mysql_table: str
) -> None:
    with mysql_user(mysql_url, grants=("SELECT",)) as user:
        proc = cli(
            tmp_path,
            "--sink_type",
            "mysql",
            "--db_user",
            user.name,
            "--db_table",
            mysql_table,
            env={"DB_PASSWORD": user.password},
        )
    line = one_line_exit_2(proc, "GRANT", "CREATE")
    assert "CREATE command denied" in line and mysql_table in line


# -- Dagster --------------------------------------------------------------------------------------


def test_unknown_environment_names_the_variable_and_the_choices() -> None:
    with pytest.raises(ValueError, match=r"ES_MYSQL_PIPELINE_ENV='mongo': use local, mysql, file"):
        resources_for("mongo")


def _source(tmp: Path) -> FileSource:
    (tmp / "in.csv").write_bytes(CSV)
    return FileSource(path=str(tmp / "in.csv"))


def test_dagster_bad_url_fails_the_step_with_one_line(tmp_path: Path) -> None:
    out = run_materialize(_source(tmp_path), SqlSink(url="not a url"), tmp_path)
    assert_clear_failure(out.failure, "db url", "not a SQLAlchemy URL", "mysql+pymysql://")


def test_dagster_bad_table_name_fails_the_step(tmp_path: Path) -> None:
    sink = SqlSink(url=f"sqlite:///{tmp_path / 'x.db'}", table="a`b")
    out = run_materialize(_source(tmp_path), sink, tmp_path)
    assert_clear_failure(out.failure, "db_table", "not a valid SQL identifier")


def test_dagster_missing_csv_fails_the_step(tmp_path: Path) -> None:
    sink = SqlSink(url=f"sqlite:///{tmp_path / 'x.db'}")
    out = run_materialize(FileSource(path=str(tmp_path / "nope.csv")), sink, tmp_path)
    assert_clear_failure(out.failure, "csv_file", "does not exist")


@pytest.mark.parametrize(
    ("mapping", "names"),
    [
        ({"select": ["v", "vv"]}, ["select: column 'vv'", "columns: id, timestamp, v"]),
        ({"casts": {"nope": "int"}}, ["casts['nope']: column 'nope'"]),
        ({"rename": {"w": "renamed"}}, ["rename['w']: column 'renamed'"]),
        ({"casts": {"v": "decimal"}}, ["casts['v']='decimal'", "use one of"]),
        ({"select": ["bad name"]}, ["select='bad name'", "not a valid SQL identifier"]),
    ],
)
def test_dagster_unknown_column_in_the_mapping_fails_the_step(
    tmp_path: Path, mapping: dict[str, object], names: list[str]
) -> None:
    sink = SqlSink(url=f"sqlite:///{tmp_path / 'x.db'}")
    out = run_materialize(_source(tmp_path), sink, tmp_path, **mapping)
    assert_clear_failure(out.failure, *names)
    assert not (tmp_path / "x.db").exists() or "records" not in (
        tmp_path / "x.db"
    ).read_bytes().decode("latin-1")


@pytest.mark.integration
def test_dagster_wrong_password_and_missing_permission_fail_the_step(
    tmp_path: Path, mysql_url: str, mysql_table: str
) -> None:
    with mysql_user(mysql_url, grants=("SELECT",)) as user:
        wrong = SqlSink(url=user.url, password="wrong-Pw", table=mysql_table)
        out = run_materialize(_source(tmp_path), wrong, tmp_path / "a")
        assert_clear_failure(out.failure, "access denied", user.name)
        assert "wrong-Pw" not in (out.failure or "")
        denied = SqlSink(url=user.url, password=user.password, table=mysql_table)
        out = run_materialize(_source(tmp_path), denied, tmp_path / "b")
        assert_clear_failure(out.failure, "CREATE command denied", mysql_table)
