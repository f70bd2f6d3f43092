"""Every MySQL/MariaDB error number the project knows, in one table: how the sink treats it
and, where a user can fix it, the hint the CLI and Dagster runs show.

No SQLAlchemy or driver import here: the CLI reads hints without paying for them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MysqlError:
    """What one error number means to the pipeline.

    ``retry``: retry the whole transaction (lost or refused connection, shutdown, deadlock,
    lock wait). ``ddl_race``: DDL that another load of the same table got to first. ``data``:
    a record's contents caused it; isolate the record into the dead letter, never retry.
    """

    name: str
    retry: bool = False
    ddl_race: bool = False
    data: bool = False
    hint: str | None = None


_SERVER_DOWN = "check --db_host and --db_port (is the server running?)"
GRANTS_HINT = (
    "grant the pipeline's user what it needs: GRANT SELECT, INSERT, UPDATE, CREATE, INDEX ON "
    "<database>.* TO <user>, plus ALTER when the data gains fields under --schema-contract "
    "evolve or for soft deletes, DELETE for hard deletes, ALTER and DROP for --write-mode "
    "refresh (see docs/deployment.md, least-privilege user)"
)

MYSQL_ERRORS: dict[int, MysqlError] = {
    1040: MysqlError("too many connections", retry=True),
    1044: MysqlError(
        "access denied to database", hint="grant the user access to the database named by --db_name"
    ),
    1045: MysqlError("access denied", hint="check --db_user and the password in DB_PASSWORD"),
    # MariaDB's answer to an unknown user or a wrong password (and to root over TCP where
    # root signs in by unix_socket): the same fix as 1045.
    1698: MysqlError("access denied", hint="check --db_user and the password in DB_PASSWORD"),
    1048: MysqlError("null in a NOT NULL column", data=True),
    1049: MysqlError("unknown database", hint="check --db_name (the database must exist)"),
    1050: MysqlError("table already exists", ddl_race=True),
    1053: MysqlError("server shutdown in progress", retry=True),
    1060: MysqlError("duplicate column", ddl_race=True),
    1061: MysqlError("duplicate key name", ddl_race=True),
    1062: MysqlError("duplicate entry", data=True),
    1117: MysqlError(
        "too many columns",
        hint="more than the server allows in one table (MySQL/MariaDB: 4096, fewer for wide "
        "rows); select fewer fields in the mapping (settings.select) or use the file sink",
    ),
    1142: MysqlError("command denied", hint=GRANTS_HINT),
    1143: MysqlError("column command denied", hint=GRANTS_HINT),
    1153: MysqlError(
        "packet bigger than max_allowed_packet",
        data=True,
        hint="raise max_allowed_packet on the server to load it",
    ),
    1205: MysqlError("lock wait timeout", retry=True, ddl_race=True),
    1213: MysqlError("deadlock", retry=True, ddl_race=True),
    1264: MysqlError("value out of range", data=True),
    1292: MysqlError("incorrect datetime value", data=True),
    1300: MysqlError("invalid utf8 string", data=True),
    1366: MysqlError("incorrect value", data=True),
    1406: MysqlError("data too long", data=True),
    1412: MysqlError("table definition changed", ddl_race=True),
    2002: MysqlError("cannot connect (socket)", retry=True, hint=_SERVER_DOWN),
    2003: MysqlError("cannot connect", retry=True, hint=_SERVER_DOWN),
    2005: MysqlError("unknown host", hint="check --db_host (the host name does not resolve)"),
    2006: MysqlError("server has gone away", retry=True),
    2013: MysqlError("lost connection during query", retry=True),
    2026: MysqlError("TLS error", hint="check --db_ssl_ca (TLS could not be set up)"),
    2055: MysqlError("lost connection (system error)", retry=True),
    3140: MysqlError("invalid JSON", data=True),
}

RETRYABLE_CODES = frozenset(code for code, e in MYSQL_ERRORS.items() if e.retry)
DDL_RACE_CODES = frozenset(code for code, e in MYSQL_ERRORS.items() if e.ddl_race)
DATA_CODES = frozenset(code for code, e in MYSQL_ERRORS.items() if e.data)
#: Codes that say "your connection settings are wrong", as opposed to a data or race problem.
CONNECT_CODES = frozenset({1044, 1045, 1049, 1698, 2002, 2003, 2005, 2026})


def _driver_error(exc: BaseException) -> BaseException:
    """The driver's exception inside SQLAlchemy's wrapper (``.orig``), or ``exc``."""
    orig = getattr(exc, "orig", None)
    return orig if isinstance(orig, BaseException) else exc


def error_code(exc: BaseException) -> int | None:
    """The MySQL error number of a driver exception (or SQLAlchemy's wrapper), if any."""
    exc = _driver_error(exc)
    return exc.args[0] if exc.args and isinstance(exc.args[0], int) else None


def hint_for(exc: BaseException) -> str | None:
    """What the user can change to fix ``exc``, when we know."""
    code = error_code(exc)
    known = MYSQL_ERRORS.get(code) if code is not None else None
    if known is not None and known.hint:
        return known.hint
    orig = getattr(exc, "orig", None) or exc
    if "ssl" in str(orig).lower():
        return MYSQL_ERRORS[2026].hint
    return None


def connect_hint(exc: BaseException) -> str:
    """``; <what to fix>`` for a failed connection we recognise, else nothing."""
    hint = hint_for(exc)
    return f"; {hint}" if hint else ""


def is_retryable(exc: BaseException) -> bool:
    """Connection-class errors: lost/refused connections, shutdown, deadlock, lock wait.

    SQLAlchemy wraps DBAPI errors raised while (re)connecting a pooled connection (for
    example a pre-ping reconnect cut mid-handshake); the driver's error is in ``.orig``.
    """
    exc = _driver_error(exc)
    if error_code(exc) in RETRYABLE_CODES:
        return True
    if "database is locked" in str(exc).lower():  # SQLite's busy writer
        return True
    return type(exc).__name__ == "InterfaceError" or isinstance(
        exc, (ConnectionError, TimeoutError)
    )


def is_data_error(exc: BaseException) -> bool:
    """Errors caused by a record's contents: isolate the record, never retry blindly."""
    name = type(exc).__name__
    if name in ("IntegrityError", "DataError"):
        return True
    return error_code(exc) in DATA_CODES or (
        name == "OperationalError" and "sqlite" in type(exc).__module__ and "locked" not in str(exc)
    )


class PacketTooLarge(Exception):
    """Stands for MySQL 1153 when the server dropped the connection instead of saying it."""


def record_reason(exc: BaseException) -> str:
    """Why the database refused one record, for its dead letter."""
    if error_code(exc) == 1153:
        return (
            "record larger than the server's max_allowed_packet (MySQL 1153); "
            f"{MYSQL_ERRORS[1153].hint}"
        )
    text = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
    return f"{type(exc).__name__}: {text}"[:500]
