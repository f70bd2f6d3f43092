"""The LOAD DATA files (writers/sql/bulk_load.py): fields beyond the column budget packed
into the overflow object, values of every kind written as MariaDB reads them back, and no
file left when a batch cannot be encoded."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from es_mysql_pipeline.records import OVERFLOW_COLUMN
from es_mysql_pipeline.writers.sql.bulk_load import (
    BulkEncoder,
    column_kind,
    local_infile,
    pack_overflow,
)
from es_mysql_pipeline_tests.support.mysql import engine_for, mysql_url
from es_mysql_pipeline_tests.support.ports import free_port


def test_packed_fields_of_columns_join_the_overflow_object() -> None:
    frame = {
        "id": ["1", "2", "3"],
        "a": [1, None, None],
        "b": ["x", None, None],
        OVERFLOW_COLUMN: [{"kept": True}, {"kept": False}, None],
    }
    packed = pack_overflow(frame, ("a", "b", "not_here"))
    assert packed == {
        "id": ["1", "2", "3"],
        OVERFLOW_COLUMN: [{"kept": True, "a": 1, "b": "x"}, {"kept": False}, None],
    }
    assert frame["a"] == [1, None, None]  # columns are copied, not changed
    plain = {"id": ["1"], "a": [5]}
    assert pack_overflow(plain, ("a",)) == {"id": ["1"], OVERFLOW_COLUMN: [{"a": 5}]}
    assert pack_overflow(plain, ("zz",)) is plain
    assert pack_overflow(plain, ()) is plain


def test_a_file_holds_each_kind_as_mariadb_reads_it(tmp_path: Path) -> None:
    encoder = BulkEncoder(
        ("id", "flag", "n", "doc", OVERFLOW_COLUMN),
        ("text", "bool", "number", "text", "text"),
        str(tmp_path),
        packed=("extra",),
    )
    rows = [
        {"id": "1", "flag": True, "n": False, "doc": {"k": "tab\there"}, "extra": 7},
        {"id": "2", "flag": False, "n": 2.5, "doc": ["é"], "extra": None},
    ]
    path = encoder.encode([rows])
    assert Path(path).read_text(encoding="utf-8").splitlines() == [
        '1\t1\t0\t{"k": "tab\\\\there"}\t{"extra": 7}',
        '2\t0\t2.5\t["é"]\t\\N',
    ]
    assert column_kind(sa.Boolean()) == "bool"
    assert column_kind(sa.Numeric()) == "number"


def test_a_batch_that_cannot_be_encoded_leaves_no_file(tmp_path: Path) -> None:
    encoder = BulkEncoder(("id", "at"), ("text", "datetime"), str(tmp_path))
    with pytest.raises(ValueError):
        encoder.encode([[{"id": "1", "at": "not a time"}]])
    assert list(tmp_path.iterdir()) == []


def test_local_infile_is_off_where_it_cannot_be_asked(tmp_path: Path) -> None:
    with engine_for(f"sqlite:///{tmp_path / 'x.sqlite'}") as engine:
        assert not local_infile(engine)
    with engine_for(mysql_url(port=free_port())) as engine:  # nothing listens there
        assert not local_infile(engine)
