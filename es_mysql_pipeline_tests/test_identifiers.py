from __future__ import annotations

import pytest

from es_mysql_pipeline.errors import ConfigError
from es_mysql_pipeline.identifiers import column_name, validate_identifier


@pytest.mark.parametrize(
    "name",
    ["records; DROP TABLE x", "a b", "`x`", "x'--", "db.table", "", "1abc", "a" * 65, 'x"y'],
)
def test_hostile_identifiers_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="db_table"):
        validate_identifier(name, "db_table")


def test_plain_identifiers_pass() -> None:
    assert validate_identifier("records_2024", "db_table") == "records_2024"


@pytest.mark.parametrize(
    ("raw", "prefix"),
    [
        ("user.name", "user_name_"),
        ("@timestamp", "_timestamp_"),
        ("9lives", "_9lives_"),
        ("a`; DROP", "a___DROP_"),
        ("é", "__"),
        ("x" * 80, "x" * 55 + "_"),
    ],
)
def test_column_names_from_data_are_made_safe_and_distinct(raw: str, prefix: str) -> None:
    name = column_name(raw)
    assert name.startswith(prefix) and len(name) <= 64
    assert validate_identifier(name, "column") == name
    assert len(name) == len(prefix) + 8  # the hash of the original name


def test_plain_names_stay_and_changed_names_never_meet() -> None:
    assert column_name("user_name") == "user_name"
    assert column_name("userId") == "userId"
    variants = ["a.b", "a_b", "a-b", "a b", "a" * 64 + "1", "a" * 64 + "2", "@a_b"]
    assert len({column_name(v) for v in variants}) == len(variants)
    assert column_name("a.b") == column_name("a.b")  # the same in every call and process
