"""The shared test plumbing stays light: a pure test never pays for importing Dagster."""

from __future__ import annotations

import subprocess
import sys


def test_conftest_and_fixture_plugins_import_no_dagster() -> None:
    code = (
        "import sys\n"
        "import es_mysql_pipeline_tests.conftest\n"
        "import es_mysql_pipeline_tests.fixtures.es\n"
        "import es_mysql_pipeline_tests.fixtures.prometheus\n"
        "import es_mysql_pipeline_tests.support.mysql\n"
        "heavy = sorted(m for m in ('dagster', 'sqlalchemy.orm', 'pydantic') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert "dagster" not in out.split(","), out
