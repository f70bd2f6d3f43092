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
    ("raw", "expected"),
    [
        ("user.name", "user_name"),
        ("@timestamp", "_timestamp"),
        ("9lives", "_9lives"),
        ("a`; DROP", "a___DROP"),
    ],
)
def test_column_names_from_data_are_made_safe(raw: str, expected: str) -> None:
    assert column_name(raw) == expected
