"""Flags to the same resources the Dagster definitions use, checked before data moves."""

from __future__ import annotations

import argparse
import logging
import os
from importlib import resources as pkg_resources
from typing import Any

from es_mysql_pipeline.errors import ConfigError


def build_resources(args: argparse.Namespace) -> dict[str, Any]:
    """The source, sink and settings the flags name."""
    from es_mysql_pipeline.resources.settings import PipelineSettings
    from es_mysql_pipeline.resources.sinks import JsonlSink, SqlSink
    from es_mysql_pipeline.resources.sources import FileSource

    source: Any
    if args.source_type == "csv":
        if not args.csv_file:
            raise ConfigError("--csv_file is required with --source_type csv")
        source = FileSource(
            path=args.csv_file,
            delimiter=args.delimiter,
            encoding=args.encoding,
            id_column=args.id_column,
            timestamp_column=args.timestamp_column,
        )
    else:
        source = _elasticsearch_source(args)

    sink: Any
    common = {"batch_size": args.batch_size, "workers": args.workers, "write_mode": args.write_mode}
    if not 0 <= args.max_failed_ratio <= 1:
        raise ConfigError("--max-failed-ratio must be between 0 and 1")
    if args.sink_type == "file":
        if not args.output_file:
            raise ConfigError("--output_file is required with --sink_type file")
        if args.version_field:
            raise ConfigError("--version-field needs a SQL sink (--sink_type mysql or sqlite)")
        sink = JsonlSink(path=args.output_file, **common)
    else:
        url, password = _database(args)
        sink = SqlSink(
            url=url,
            password=password,
            table=args.db_table,
            ssl_ca=args.db_ssl_ca if args.sink_type == "mysql" else None,
            schema_contract=args.schema_contract,
            max_columns=args.max_columns,
            version_field=args.version_field or None,
            **common,
        )
    settings = PipelineSettings(
        pipeline_id=args.pipeline_id,
        dead_letter_dir=args.dead_letter_dir,
        fetch_batch_size=max(args.batch_size, 1000),
        analyzer=args.analyzer,
        fetch_processes=args.fetch_processes,
        transform_processes=args.transform_processes,
        max_failed_ratio=args.max_failed_ratio,
        id_column=args.output_id_column,
        timestamp_column=args.output_time_column,
        keep_whole=[p for arg in args.keep_whole for p in arg.split(",") if p],
        deletes=args.deletes,
        delete_marker=args.delete_marker or None,
    )
    return {"source": source, "sink": sink, "settings": settings}


def _database(args: argparse.Namespace) -> tuple[str, str | None]:
    """The SQL sink's URL and password (``DB_PASSWORD``, or the discouraged ``--db_pass``)."""
    if args.sink_type == "sqlite":
        if not args.db_path:
            raise ConfigError("--db_path is required with --sink_type sqlite")
        return f"sqlite:///{args.db_path}", None
    password = os.environ.get("DB_PASSWORD")
    if args.db_pass:
        logging.getLogger("es_mysql_pipeline").warning(
            "--db_pass is visible to other users in the process list; "
            "set DB_PASSWORD in the environment instead"
        )
        password = args.db_pass
    from sqlalchemy.engine import URL

    url = URL.create(
        "mysql+pymysql",
        username=args.db_user,
        host=args.db_host,
        port=args.db_port,
        database=args.db_name,
    )
    return url.render_as_string(hide_password=False), password or None


def declared_resources(args: argparse.Namespace) -> dict[str, Any]:
    """The source, sink and settings of pipeline ``--pipeline`` of ``--defs``.

    Secrets declared as variable names are read from this process's environment now: the
    pre-flight connects before Dagster would resolve them.
    """
    from es_mysql_pipeline.component import find_pipeline

    bundled = str(pkg_resources.files("es_mysql_pipeline") / "defs")
    path = args.defs or os.environ.get("ES_MYSQL_PIPELINE_DEFS") or bundled
    plan = find_pipeline(path, args.pipeline)
    if args.pipeline_id == "default":
        args.pipeline_id = plan.name  # the metrics' pipeline_id
    return {
        "source": _with_secrets(plan.source),
        "sink": _with_secrets(plan.sink),
        "settings": plan.settings,
    }


def _with_secrets(resource: Any) -> Any:
    """``resource`` with each ``dg.EnvVar`` field replaced by the variable's value."""
    import dagster as dg

    fields = {name: getattr(resource, name) for name in type(resource).model_fields}
    for name, value in fields.items():
        if isinstance(value, dg.EnvVar):
            secret = os.environ.get(value.env_var_name)
            if not secret:
                raise ConfigError(f"{value.env_var_name} is not set (the {name} of the pipeline)")
            fields[name] = secret
    return type(resource)(**fields)


def _elasticsearch_source(args: argparse.Namespace) -> Any:
    if not args.es_url or not args.es_index:
        raise ConfigError("--es_url and --es_index are required with --source_type elasticsearch")
    from es_mysql_pipeline.resources.sources.elasticsearch import ElasticsearchSource

    return ElasticsearchSource(
        hosts=args.es_url,
        index=args.es_index,
        query=args.es_query,
        timestamp_field=args.es_timestamp_field,
        api_key=os.environ.get("ES_API_KEY") or None,
        username=args.es_user or os.environ.get("ES_USER") or None,
        password=os.environ.get("ES_PASSWORD") or None,
        ca_certs=args.es_ca_certs,
        page_size=min(max(args.batch_size, 1), 10_000),
        slices=args.es_slices,
    )


def preflight(resources: dict[str, Any]) -> None:
    """Fail fast, before any data moves, on settings that cannot work."""
    resources["source"].check()
    sink = resources["sink"]
    sink.check()
    if hasattr(sink, "engine"):
        engine = sink.engine()
        try:
            with engine.connect():
                pass
        except Exception as exc:
            from es_mysql_pipeline.writers.sql.errors import connect_hint

            raise ConfigError(
                f"cannot connect to {sink.describe()['target']}: {sink.clean_error(exc)}"
                + connect_hint(exc)
            ) from None
        finally:
            engine.dispose()
