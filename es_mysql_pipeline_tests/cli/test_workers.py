"""The run's shared worker processes: started for runs that will use them, and the command's
fast exit still doing what an exit must."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from es_mysql_pipeline import worker_processes
from es_mysql_pipeline.cli.parser import build_parser
from es_mysql_pipeline.cli.workers import run_workers
from es_mysql_pipeline.readers.file_reading import PARALLEL_MIN_BYTES

SAMPLE = Path(__file__).resolve().parents[2] / "es_mysql_pipeline" / "data" / "sample_events.csv"


def shared_during(*argv: str) -> int | None:
    args = build_parser().parse_args(list(argv))
    with run_workers(args):
        shared = worker_processes._shared
        return None if shared is None else shared.workers


def test_a_big_file_gets_the_shared_pool_and_a_small_one_none(tmp_path: Path) -> None:
    big = tmp_path / "big.csv"
    with open(big, "wb") as fh:
        fh.truncate(PARALLEL_MIN_BYTES)
    assert shared_during("--csv_file", str(big), "--fetch-processes", "2") == 2
    more = ("--fetch-processes", "1", "--transform-processes", "3")
    assert shared_during("--csv_file", str(big), *more) == 3
    assert shared_during("--csv_file", str(SAMPLE), "--fetch-processes", "2") is None
    assert shared_during("--csv_file", str(tmp_path / "missing.csv")) is None
    one = ("--fetch-processes", "1", "--transform-processes", "1")
    assert shared_during("--csv_file", str(big), *one) is None


def test_elasticsearch_gets_the_pool_unless_one_slice() -> None:
    es = ("--source_type", "elasticsearch", "--es_url", "http://127.0.0.1:9", "--es_index", "x")
    assert shared_during(*es, "--fetch-processes", "2") == 2
    assert shared_during(*es, "--fetch-processes", "2", "--es-slices", "1") is None


@pytest.mark.parametrize("code", [0, 2])
def test_the_command_exits_with_its_code_after_atexit_handlers_and_output(
    tmp_path: Path, code: int
) -> None:
    mark = tmp_path / "atexit-ran"
    csv = str(SAMPLE) if code == 0 else str(tmp_path / "missing.csv")
    script = (
        "import atexit, sys\n"
        "from es_mysql_pipeline.cli.main import console\n"
        f"atexit.register(lambda: open({str(mark)!r}, 'w').close())\n"
        f"sys.argv = ['es-mysql-pipeline', '--csv_file', {csv!r}, '--sink_type', 'file',\n"
        f"            '--output_file', {str(tmp_path / 'out.jsonl')!r}, '--no-progress',\n"
        f"            '--dead-letter-dir', {str(tmp_path / 'dl')!r}]\n"
        "console()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert proc.returncode == code, proc.stderr
    assert mark.exists()
    if code == 0:
        assert "Summary" in proc.stdout and proc.stdout.endswith("\n")
    else:
        assert "missing.csv" in proc.stderr
