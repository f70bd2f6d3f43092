from __future__ import annotations

from es_mysql_pipeline.cli.main import console

console()
