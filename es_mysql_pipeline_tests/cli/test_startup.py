"""`--help`, `--version` and a usage error must not import Dagster or the drivers (issue 12).

Not timed (the machine is shared): the test checks what was imported, which is what costs
the start-up time; ``make bench`` measures the time itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from es_mysql_pipeline_tests.support.sample import SAMPLE

HEAVY = ("dagster", "sqlalchemy", "elasticsearch", "prometheus_client", "pydantic", "pymysql")

# Runs the real entry point, then prints which heavy top-level packages ended up in sys.modules,
# including on the SystemExit that argparse raises for --help, --version and a bad flag.
WRAPPER = """
import json, sys
from es_mysql_pipeline.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
heavy = sorted({name.split(".")[0] for name in sys.modules} & set(json.loads(sys.stdin.read())))
print("HEAVY=" + json.dumps(heavy), file=sys.stderr)
raise SystemExit(code)
"""


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--version"], 0),
        (["--help"], 0),
        (["--no-such-flag"], 2),
        (["--csv_file", "x.csv", "--fetch-processes", "-1"], 2),
    ],
    ids=["version", "help", "bad-flag", "bad-count"],
)
def test_cli_answers_without_heavy_imports(args: list[str], code: int) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", WRAPPER, *args],
        input=json.dumps(HEAVY),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == code, proc.stderr
    marker = [line for line in proc.stderr.splitlines() if line.startswith("HEAVY=")]
    assert marker, proc.stderr
    assert json.loads(marker[-1].removeprefix("HEAVY=")) == []
    if code == 2:
        assert args[-1].lstrip("-") in proc.stderr or args[-2] in proc.stderr
        assert "Traceback" not in proc.stderr


def test_module_entry_point_version_imports_no_dagster() -> None:
    """``python -m es_mysql_pipeline --version`` as a user runs it, seen by ``-X importtime``."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "es_mysql_pipeline", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    imported = {
        line.rsplit("|", 1)[-1].strip().split(".")[0]
        for line in proc.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "es_mysql_pipeline" in imported
    assert imported.isdisjoint(HEAVY), sorted(imported & set(HEAVY))


def test_a_stop_fails_the_step_without_retries() -> None:
    """``raise_if_stopped`` in an asset body becomes a Dagster failure the policy won't retry."""
    import dagster as dg

    from es_mysql_pipeline import lifecycle
    from es_mysql_pipeline.assets.failures import step

    lifecycle.request_stop()
    try:
        with pytest.raises(dg.Failure) as info:
            step("load")(lifecycle.raise_if_stopped)("load")
    finally:
        lifecycle.reset()
    assert info.value.allow_retries is False
    assert info.value.description == "stopped by request during load, after the batch in flight"


# Records the collector's young-generation threshold at the moment Dagster is first imported.
GC_AT_IMPORT = """
import gc, sys
from es_mysql_pipeline.cli import main

class Spy:
    seen = None
    def find_spec(self, name, path=None, target=None):
        if name == "dagster" and Spy.seen is None:
            Spy.seen = gc.get_threshold()[0]
        return None

sys.meta_path.insert(0, Spy())
code = main(sys.argv[1:])
print(f"THRESHOLD={Spy.seen}", file=sys.stderr)
raise SystemExit(code)
"""


def test_a_run_imports_dagster_with_the_collector_tuned(tmp_path: Path) -> None:
    """Dagster's import allocates some 350,000 containers: at CPython's default threshold
    (700) the young generation is collected hundreds of times during start-up."""
    from es_mysql_pipeline.worker_processes import GC_YOUNG_THRESHOLD

    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            GC_AT_IMPORT,
            "--no-progress",
            "--csv_file",
            SAMPLE,
            "--sink_type",
            "file",
            "--output_file",
            str(tmp_path / "out.jsonl"),
            "--dead-letter-dir",
            str(tmp_path / "dl"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    marker = [line for line in proc.stderr.splitlines() if line.startswith("THRESHOLD=")]
    assert marker, proc.stderr
    assert int(marker[-1].removeprefix("THRESHOLD=")) >= GC_YOUNG_THRESHOLD
    assert (tmp_path / "out.jsonl").stat().st_size > 0
