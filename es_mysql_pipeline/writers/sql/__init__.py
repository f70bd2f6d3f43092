"""The SQL sink without Dagster (MySQL/MariaDB, SQLite): settings to engine, schema, writer,
bulk load, deletes, refresh, and the error table (which the CLI reads without SQLAlchemy)."""
