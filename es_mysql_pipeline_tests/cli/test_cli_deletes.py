"""The CLI's flags for updates and deletes, and the issue's done-test as a user runs it:
Elasticsearch (test server) → the CLI → MariaDB and SQLite, a day re-run after 100
documents were deleted and 100 updated, hard and soft."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from elasticsearch import helpers

from es_mysql_pipeline.cli.parser import build_parser
from es_mysql_pipeline.cli.resources import build_resources
from es_mysql_pipeline.errors import ConfigError
from es_mysql_pipeline_tests.conftest import split_target
from es_mysql_pipeline_tests.fixtures.es import EsTarget
from es_mysql_pipeline_tests.support.mysql import MYSQL_DB, MYSQL_HOST, MYSQL_PORT, MYSQL_USER

DAY, NEXT = "2024-01-03", "2024-01-04"


def resources_for(*argv: str) -> dict[str, Any]:
    return build_resources(build_parser().parse_args(list(argv)))


def test_flags_reach_the_sink_and_the_settings() -> None:
    built = resources_for(
        "--csv_file", "in.csv", "--sink_type", "sqlite", "--db_path", "x.db",
        "--write-mode", "upsert", "--version-field", "updated_at", "--deletes", "soft",
        "--delete-marker", "status=deleted",
    )  # fmt: skip
    assert built["sink"].write_mode == "upsert"
    assert built["sink"].version_field == "updated_at"
    assert built["settings"].deletes == "soft"
    assert built["settings"].delete_marker == "status=deleted"
    default = resources_for("--csv_file", "in.csv", "--sink_type", "sqlite", "--db_path", "x.db")
    assert default["sink"].version_field is None
    assert (default["settings"].deletes, default["settings"].delete_marker) == ("ignore", None)
    refresh = resources_for(
        "--csv_file", "in.csv", "--sink_type", "mysql", "--write-mode", "refresh"
    )  # fmt: skip
    assert refresh["sink"].write_mode == "refresh"


def test_a_version_field_needs_a_sql_sink() -> None:
    with pytest.raises(ConfigError, match="--version-field"):
        resources_for(
            "--csv_file", "in.csv", "--output_file", "o.jsonl", "--write-mode", "upsert",
            "--version-field", "v",
        )  # fmt: skip


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "es_mysql_pipeline", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )


def summary(stdout: str, key: str) -> int:
    for line in stdout.splitlines():
        parts = line.split()
        if line.startswith("  ") and " ".join(parts[:-1]) == key:
            return int(parts[-1])
    raise AssertionError(f"no {key!r} in:\n{stdout}")


def doc(i: int, day: str = DAY, version: int = 1, text: str | None = None) -> dict[str, Any]:
    return {
        "@timestamp": f"{day}T{i % 24:02d}:{i % 60:02d}:00Z",
        "text": text if text is not None else f"doc {i}",
        "version": version,
    }


def live(url: str, table: str) -> dict[str, tuple[Any, ...]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            t = sa.Table(table, sa.MetaData(), autoload_with=conn)
            q = sa.select(t.c._id, t.c.text, t.c.version)
            if "_deleted_at" in t.c:
                q = q.where(t.c._deleted_at.is_(None))
            return {str(r[0]): (r[1], r[2]) for r in conn.execute(q)}
    finally:
        engine.dispose()


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_cli_rerun_of_a_day_equals_the_source(
    es_target: EsTarget, sql_target: str, tmp_path: Path, mode: str
) -> None:
    if es_target.is_real:
        pytest.skip("edits the index in place: the test server's")
    url, table = split_target(sql_target)
    index = es_target.seed(
        f"cli-deletes-{mode}-{tmp_path.name}".lower()[:60],
        [(f"d{i:04d}", doc(i)) for i in range(1000)]
        + [(f"n{i:03d}", doc(i, NEXT)) for i in range(30)],
    )
    if url.startswith("sqlite"):
        sink = ["--sink_type", "sqlite", "--db_path", url.removeprefix("sqlite:///")]
    else:
        sink = ["--sink_type", "mysql", "--db_host", MYSQL_HOST, "--db_port", str(MYSQL_PORT),
                "--db_user", MYSQL_USER, "--db_name", MYSQL_DB]  # fmt: skip
    common = [
        "--source_type", "elasticsearch", "--es_url", es_target.url, "--es_index", index,
        *sink, "--db_table", table, "--write-mode", "upsert", "--version-field", "version",
        "--deletes", mode, "--no-progress", "--staging-dir", str(tmp_path / "staging"),
        "--dead-letter-dir", str(tmp_path / "dead"),
    ]  # fmt: skip
    whole = cli(*common, cwd=tmp_path)  # everything, both days
    assert whole.returncode == 0, whole.stderr
    assert summary(whole.stdout, "inserted") == 1030
    gone = [f"d{i:04d}" for i in range(0, 1000, 10)]
    changed = [f"d{i:04d}" for i in range(5, 1000, 10)]
    with es_target.client() as es:
        actions: list[dict[str, Any]] = [
            {"_op_type": "delete", "_index": index, "_id": i} for i in gone
        ]
        actions += [
            {"_index": index, "_id": i, "_source": doc(int(i[1:]), version=2, text="updated")}
            for i in changed
        ]
        helpers.bulk(es, actions, refresh=True)
    day = cli(*common, "--start", DAY, "--end", NEXT, cwd=tmp_path)
    assert day.returncode == 0, day.stderr
    got = {k: summary(day.stdout, k) for k in ("inserted", "updated", "deleted")}
    assert got == {"inserted": 0, "updated": 100, "deleted": 100}
    assert summary(day.stdout, "skipped (duplicates)") == 800
    expected = {
        f"d{i:04d}": ("updated", 2) if f"d{i:04d}" in changed else (f"doc {i}", 1)
        for i in range(1000)
        if f"d{i:04d}" not in gone
    }
    expected |= {f"n{i:03d}": (f"doc {i}", 1) for i in range(30)}
    assert live(url, table) == expected
