"""Throw-away MariaDB users with exactly the grants a test needs, dropped afterwards."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import make_url

#: What the README documents for the loader user; the pipeline must work with no more.
LEAST_PRIVILEGE = ("SELECT", "INSERT", "UPDATE", "CREATE", "INDEX")


@dataclass(frozen=True)
class DbUser:
    name: str
    password: str
    #: ``mysql+pymysql://<name>@host:port/db`` - no password in it, as the product wants.
    url: str


@contextlib.contextmanager
def mysql_user(
    admin_url: str, grants: tuple[str, ...] = LEAST_PRIVILEGE, password: str | None = None
) -> Iterator[DbUser]:
    """Create ``'<random>'@'%'`` with ``grants`` on the test database; drop it on exit."""
    url = make_url(admin_url)
    db = url.database or "test"
    name = f"lp_{uuid.uuid4().hex[:10]}"
    password = password or f"Pw-{uuid.uuid4().hex}"
    engine = sa.create_engine(admin_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"CREATE USER '{name}'@'%%' IDENTIFIED BY '{password}'")
            if grants:
                conn.exec_driver_sql(f"GRANT {', '.join(grants)} ON `{db}`.* TO '{name}'@'%%'")
        user_url = url.set(username=name, password=None).render_as_string(hide_password=False)
        yield DbUser(name, password, user_url)
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP USER IF EXISTS '{name}'@'%%'")
        engine.dispose()
