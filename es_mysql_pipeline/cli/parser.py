"""The command line: the seed script's flags and usage errors (one line, exit 2)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import NoReturn

from es_mysql_pipeline import __version__

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_STOPPED = 0, 1, 2, 130


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line and exit 2 like every other config error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def at_least(minimum: int) -> Callable[[str], int]:
    """An integer flag's type: a smaller number is a usage error, answered before anything
    heavy is imported."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, not {value}")
        return value

    parse.__name__ = "int"  # argparse names the type in its messages
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="es-mysql-pipeline",
        description="Move records from CSV/JSONL or Elasticsearch into MySQL, SQLite or JSONL.",
    )
    a = p.add_argument
    a("--version", action="version", version=f"%(prog)s {__version__}")
    src = p.add_argument_group("source")
    src.add_argument(
        "--source_type", "--source-type", choices=["csv", "elasticsearch"], default="csv"
    )
    src.add_argument("--csv_file", "--csv-file", help="CSV or JSON Lines input file")
    src.add_argument("--delimiter", default=",")
    src.add_argument("--encoding", default="utf-8-sig")
    src.add_argument(
        "--id_column",
        "--id-column",
        default="id",
        help="source field holding the primary key (CSV; default id)",
    )
    src.add_argument(
        "--timestamp_column",
        "--timestamp-column",
        help="source field with the event time (default: detected from the header, e.g. "
        "@timestamp, timestamp, ts, time, event_time, created_at; none: there is none)",
    )
    src.add_argument(
        "--es_url", "--es-url", action="append", help="Elasticsearch URL; repeat for several hosts"
    )
    src.add_argument("--es_index", "--es-index", help="index name or pattern, e.g. logs-*")
    src.add_argument("--es_query", "--es-query", help="Query DSL JSON combined with the window")
    src.add_argument(
        "--es_timestamp_field",
        "--es-timestamp-field",
        help="source field with the event time "
        "(default: detected from the mapping; none: there is none)",
    )
    src.add_argument("--es_ca_certs", "--es-ca-certs", help="CA bundle for HTTPS")
    src.add_argument("--es_user", "--es-user", help="user name; password from ES_PASSWORD")
    src.add_argument(
        "--es_slices",
        "--es-slices",
        type=at_least(0),
        default=0,
        help="PIT slices read in parallel, capped at the index's primary shards (default 0: "
        "one per --fetch-processes worker, each slice read by its own process)",
    )
    sink = p.add_argument_group("sink")
    sink.add_argument(
        "--sink_type", "--sink-type", choices=["file", "mysql", "sqlite"], default="file"
    )
    sink.add_argument("--output_file", "--output-file", help="JSON Lines output (file sink)")
    sink.add_argument("--db_host", "--db-host", default="127.0.0.1")
    sink.add_argument("--db_port", "--db-port", type=int, default=3306)
    sink.add_argument("--db_user", "--db-user", default="root")
    sink.add_argument("--db_pass", "--db-pass", help=argparse.SUPPRESS)
    sink.add_argument("--db_name", "--db-name", default="test")
    sink.add_argument("--db_table", "--db-table", default="records")
    sink.add_argument("--db_path", "--db-path", help="SQLite database file (sqlite sink)")
    sink.add_argument("--db_ssl_ca", "--db-ssl-ca", help="CA bundle: connect to MySQL over TLS")
    sink.add_argument(
        "--write-mode",
        "--write_mode",
        choices=["skip", "upsert", "append", "refresh"],
        default="skip",
        help="skip keeps an existing row, upsert replaces it, append inserts every record, "
        "refresh loads a new table and swaps it in whole (default skip)",
    )
    sink.add_argument(
        "--version-field",
        "--version_field",
        help="SQL sinks, upsert/refresh: a row is replaced only by a record whose value of "
        "this field (e.g. updated_at, a version number) is newer",
    )
    sink.add_argument(
        "--deletes",
        choices=["ignore", "hard", "soft"],
        default="ignore",
        help="after the window loads, rows of the window whose id the source no longer has "
        "are kept (ignore, default), deleted (hard) or stamped in _deleted_at (soft)",
    )
    sink.add_argument(
        "--delete-marker",
        "--delete_marker",
        metavar="FIELD[=VALUE]",
        help="a record whose FIELD is true (or equals VALUE) deletes its row instead of "
        "being loaded, e.g. deleted or status=deleted",
    )
    sink.add_argument(
        "--schema-contract",
        "--schema_contract",
        choices=["evolve", "freeze", "discard"],
        default="evolve",
        help="SQL sinks, data that does not fit the table: evolve adds columns and widens "
        "text (default), freeze refuses the load, discard leaves new fields out",
    )
    sink.add_argument(
        "--max-columns",
        "--max_columns",
        type=at_least(3),
        default=250,
        help="SQL sinks: columns a table may reach through new fields; later fields go to "
        "the _overflow JSON column (default 250)",
    )
    cols = p.add_argument_group("columns")
    cols.add_argument(
        "--keep-whole",
        "--keep_whole",
        action="append",
        default=[],
        metavar="PATH",
        help="an object with dynamic keys (e.g. labels, kubernetes.labels) stored whole in the "
        "_overflow JSON column instead of a column per key; repeat for several",
    )
    cols.add_argument(
        "--output-id-column",
        help="column of the id field (default: the field's own name, _id for Elasticsearch; "
        "tables made by 0.1 use id)",
    )
    cols.add_argument(
        "--output-time-column",
        help="column of the time field (default: the field's own name, @timestamp as "
        "timestamp; tables made by 0.1 use timestamp)",
    )
    declared = p.add_argument_group("a pipeline declared in a defs.yaml")
    declared.add_argument(
        "--pipeline",
        help="run this pipeline of --defs (its source, sink and settings; the source and "
        "sink flags are then not used)",
    )
    declared.add_argument(
        "--defs",
        help="a defs.yaml or a folder of them (default: $ES_MYSQL_PIPELINE_DEFS, else the "
        "bundled sample's)",
    )
    run = p.add_argument_group("run")
    run.add_argument("--batch-size", "--batch_size", type=at_least(1), default=1000)
    run.add_argument("--workers", type=at_least(1), default=2, help="load threads (connections)")
    run.add_argument(
        "--fetch-processes",
        type=at_least(0),
        default=0,
        help="worker processes reading a CSV or JSON Lines file of 16 MiB+ (0: one per core, "
        "max 4)",
    )
    run.add_argument(
        "--transform-processes",
        type=at_least(0),
        default=0,
        help="worker processes for the transform of 50,000+ records (0: one per core, max 4)",
    )
    run.add_argument("--start", help="first day to load (YYYY-MM-DD, UTC)")
    run.add_argument("--end", help="day after the last one to load (exclusive)")
    run.add_argument("--pipeline-id", "--pipeline_id", default="default")
    run.add_argument("--dead-letter-dir", default="dead_letter")
    run.add_argument("--staging-dir", help="where staged files go (default: a temp dir)")
    run.add_argument("--analyzer", help="dotted path of a per-record analyzer callable")
    run.add_argument(
        "--max-failed-ratio",
        type=float,
        default=0.05,
        help="exit 1 when failed/processed exceeds this; stop early when more than this "
        "share of the records fail for the same reason (default 0.05)",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--debug", action="store_true", help="show tracebacks and Dagster logs")
    obs = p.add_argument_group("metrics")
    obs.add_argument(
        "--metrics-port",
        "--metrics_port",
        type=int,
        help="serve /metrics, /health and /info on this port",
    )
    obs.add_argument("--metrics-host", "--metrics_host", default="127.0.0.1")
    obs.add_argument(
        "--metrics-linger",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="keep /metrics up this long after the run so Prometheus scrapes the final counts",
    )
    return p
