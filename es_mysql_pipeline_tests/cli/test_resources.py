"""Flags to resources, directly: what each sink type builds and which flag a bad value names."""

from __future__ import annotations

import pytest

from es_mysql_pipeline.cli.parser import build_parser
from es_mysql_pipeline.cli.resources import build_resources
from es_mysql_pipeline.errors import ConfigError


def resources_for(*argv: str) -> dict:  # type: ignore[type-arg]
    return build_resources(build_parser().parse_args(list(argv)))


def test_csv_to_sqlite() -> None:
    built = resources_for(
        "--csv_file", "in.csv", "--sink_type", "sqlite", "--db_path", "out/x.db",
        "--db_table", "events", "--schema-contract", "freeze", "--batch-size", "7",
    )  # fmt: skip
    sink = built["sink"]
    assert sink.url == "sqlite:///out/x.db" and sink.table == "events"
    assert sink.schema_contract == "freeze" and sink.batch_size == 7
    assert built["source"].path == "in.csv"
    assert built["settings"].fetch_batch_size == 1000  # never below 1,000 a fetch batch


def test_mysql_password_comes_from_the_environment_never_the_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DB_PASSWORD", "s3cret-from-env")
    sink = resources_for(
        "--csv_file", "in.csv", "--sink_type", "mysql", "--db_host", "db.example",
        "--db_port", "3307", "--db_user", "loader", "--db_name", "app",
    )["sink"]  # fmt: skip
    assert sink.password == "s3cret-from-env"
    assert "s3cret" not in sink.url and "s3cret" not in str(sink.describe())
    assert sink.url == "mysql+pymysql://loader@db.example:3307/app"


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["--sink_type", "file"], "--csv_file"),
        (["--csv_file", "x.csv", "--sink_type", "file"], "--output_file"),
        (["--csv_file", "x.csv", "--sink_type", "sqlite"], "--db_path"),
        (["--csv_file", "x.csv", "--max-failed-ratio", "2"], "--max-failed-ratio"),
        (["--source_type", "elasticsearch"], "--es_url"),
    ],
)
def test_a_bad_combination_names_the_flag(argv: list[str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        resources_for(*argv)


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--sink_type", "postgres"], "--sink_type"),
        (["--workers", "0"], "--workers"),
        (["--batch-size", "-5"], "--batch-size"),
        (["--fetch-processes", "-1"], "--fetch-processes"),
        (["--transform-processes", "-1"], "--transform-processes"),
        (["--es_slices", "-1"], "--es_slices"),
        (["--workers", "two"], "--workers"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], flag: str
) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and flag in err[0] and "(see --help)" in err[0], err
