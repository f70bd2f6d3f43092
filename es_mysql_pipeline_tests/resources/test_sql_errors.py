"""The MySQL error table: each code's class, and hints that reach Dagster runs too."""

from __future__ import annotations

import sqlite3

import pytest

from es_mysql_pipeline.errors import ConfigError
from es_mysql_pipeline.resources.sinks import SqlSink
from es_mysql_pipeline.value_types import ColumnStats
from es_mysql_pipeline.writers.base import TableShape
from es_mysql_pipeline.writers.sql.errors import (
    DATA_CODES,
    MYSQL_ERRORS,
    RETRYABLE_CODES,
    PacketTooLarge,
    connect_hint,
    error_code,
    hint_for,
    is_data_error,
    is_retryable,
    record_reason,
)


class FakeDriverError(Exception):
    """Stands for pymysql's errors: ``args == (code, message)``."""


class Wrapped(Exception):
    """Stands for SQLAlchemy's wrapper, which keeps the driver's error in ``.orig``."""

    def __init__(self, orig: BaseException) -> None:
        super().__init__("wrapped")
        self.orig = orig


@pytest.mark.parametrize("code", sorted(MYSQL_ERRORS))
def test_every_code_is_classified_as_its_table_row_says(code: int) -> None:
    exc = FakeDriverError(code, "message")
    known = MYSQL_ERRORS[code]
    assert error_code(exc) == error_code(Wrapped(exc)) == code
    assert is_retryable(exc) is known.retry
    assert is_retryable(Wrapped(exc)) is known.retry
    assert is_data_error(exc) is known.data


def test_no_code_is_both_data_and_retried() -> None:
    assert not RETRYABLE_CODES & DATA_CODES


def test_unknown_codes_and_plain_errors_are_neither() -> None:
    assert not is_retryable(FakeDriverError(9999, "x")) and not is_data_error(ValueError("x"))
    assert hint_for(ValueError("nothing known")) is None
    assert connect_hint(ValueError("nothing known")) == ""


def test_hints_name_the_setting_to_fix() -> None:
    assert "DB_PASSWORD" in (hint_for(FakeDriverError(1045, "Access denied")) or "")
    assert "--db_host" in connect_hint(Wrapped(FakeDriverError(2003, "refused")))
    assert "--db_ssl_ca" in (hint_for(FakeDriverError(2014, "SSL handshake failed")) or "")


def test_refused_login_in_a_run_names_the_fix_not_the_secret(mysql_url: str) -> None:
    secret = "not-the-password-7d1c"
    url = mysql_url.replace("root@", "nobody_here@")
    sink = SqlSink(url=url, password=secret, table="t_login")
    shape = TableShape(
        id_column="id", timestamp_column=None, columns={"id": ColumnStats(type="string")}
    )
    with pytest.raises(ConfigError) as info:
        sink.open_session(shape, None)
    text = str(info.value)
    assert "DB_PASSWORD" in text and "--db_user" in text
    assert secret not in text


def test_a_locked_sqlite_database_is_retried_and_an_oversized_record_named() -> None:
    assert is_retryable(sqlite3.OperationalError("database is locked"))
    assert record_reason(PacketTooLarge(1153, "packet bigger than max_allowed_packet")) == (
        "record larger than the server's max_allowed_packet (MySQL 1153); raise "
        "max_allowed_packet on the server to load it"
    )
