"""The MariaDB the tests use: where it is, URLs for it (or a private server on another port),
and short-lived engines that are always disposed."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

MYSQL_HOST, MYSQL_PORT, MYSQL_USER, MYSQL_DB = "127.0.0.1", 3306, "root", "test"


def mysql_url(port: int = MYSQL_PORT, host: str = MYSQL_HOST) -> str:
    """``mysql+pymysql://root@host:port/test`` (root, no password): the shared server by
    default, or a private one a test started on ``port``."""
    return f"mysql+pymysql://{MYSQL_USER}@{host}:{port}/{MYSQL_DB}"


#: The shared test database; ``TEST_MYSQL_URL`` points the suite elsewhere.
MYSQL_URL = os.environ.get("TEST_MYSQL_URL", mysql_url())


@contextmanager
def engine_for(url: str) -> Iterator[sa.Engine]:
    """An engine for one block of a test, disposed afterwards (no pooled connection leaks
    into the next test or a server restart)."""
    engine = sa.create_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


def drop_table(url: str, table: str) -> None:
    with engine_for(url) as engine, engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE IF EXISTS `{table}`"))
