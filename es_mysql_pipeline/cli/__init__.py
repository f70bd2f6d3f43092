"""The ``es-mysql-pipeline`` command: parser, flags to resources, progress, run and report."""

from es_mysql_pipeline.cli.main import main

__all__ = ["main"]
