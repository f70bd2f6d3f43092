"""Disk full on staging: the CLI runs under ``RLIMIT_FSIZE`` (set in the child), so writing
the stage fails with EFBIG. The run must fail with exit code 1 and one clear line (no
traceback), load nothing a re-run does not fix, and leave no stage that claims to be
complete; a re-run without the limit loads the source exactly."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

from es_mysql_pipeline_tests.chaos import common
from es_mysql_pipeline_tests.chaos.conftest import CsvFactory

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.slow]

ROWS = 50_000
LIMIT = 2_000_000  # bytes per file: the raw stage of 50k rows is about 10 MB


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


def test_disk_full_on_staging_fails_clearly_then_rerun_is_exact(
    csv_factory: CsvFactory, chaos_table: str, tmp_path: Path
) -> None:
    source = csv_factory(ROWS, 6)
    cmd = common.cli_command(source, chaos_table, tmp_path)
    full = common.run(cmd, tmp_path / "full", preexec_fn=_limit_file_size)
    # (progress lines are not errors: the CLI prints them even with --no-progress, see report)
    lines = [line for line in full.stderr.splitlines() if line.startswith("es-mysql-pipeline")]
    problems = common.check_stages(tmp_path / "staging")
    loaded_while_full = common.row_count(chaos_table)

    rerun = common.run(cmd, tmp_path / "rerun")
    comparison = common.compare_table(chaos_table, common.expected_rows(source))
    clear = (
        full.returncode == 1
        and len(lines) == 1
        and lines[0].startswith("es-mysql-pipeline: error: staging: cannot write")
        and "File too large" in lines[0]
    )
    ok = clear and not problems and rerun.returncode == 0 and comparison.exact
    common.report(
        "disk full on staging (RLIMIT_FSIZE 2 MB)",
        1,
        comparison,
        0,
        ok,
        lines[-1][:90] if lines else "(no message)",
    )
    assert full.returncode == 1, full.stderr
    assert len(lines) == 1 and "Traceback" not in full.stderr, full.stderr
    assert lines[0].startswith("es-mysql-pipeline: error: staging: cannot write"), lines
    assert "File too large" in lines[0]
    assert not problems, problems
    assert loaded_while_full == 0
    assert rerun.returncode == 0, rerun.stderr
    assert comparison.exact, str(comparison)
