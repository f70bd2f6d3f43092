from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import hypothesis
import hypothesis.strategies as st
import pymysql
import pytest
import sqlalchemy as sa

from es_mysql_pipeline.errors import ConfigError, SinkError
from es_mysql_pipeline.records import TimeWindow
from es_mysql_pipeline.resources.sinks import SqlSink
from es_mysql_pipeline.value_types import ColumnStats
from es_mysql_pipeline.writers.base import TableShape, WriteCounts
from es_mysql_pipeline.writers.sql.errors import GRANTS_HINT
from es_mysql_pipeline.writers.sql.writer import SqlSession, SqlWriter
from es_mysql_pipeline_tests.conftest import split_target
from es_mysql_pipeline_tests.faultproxy import FaultProxy
from es_mysql_pipeline_tests.security.users import mysql_user
from es_mysql_pipeline_tests.support.mysql import MYSQL_HOST, MYSQL_PORT

SHAPE = TableShape(
    "id",
    "timestamp",
    {
        "id": ColumnStats("string", 10),
        "timestamp": ColumnStats("datetime"),
        "text": ColumnStats("string", 100_000),
        "n": ColumnStats("int"),
    },
)


TEXT = {"text": ColumnStats("string", 100)}


def rows(ids: list[str], text: str = "v") -> list[dict[str, object]]:
    return [{"id": i, "timestamp": "2024-01-01T00:00:00+00:00", "text": text, "n": 1} for i in ids]


def write(sink: SqlSink, batch: list[dict[str, object]]):
    session = sink.open_session(SHAPE, None)
    writer = session.writer()
    try:
        return writer.write(batch)
    finally:
        writer.close()
        session.commit()


def write_in_mode(
    sink: SqlSink, batch: list[dict[str, object]], bulk: bool
) -> tuple[WriteCounts, SqlWriter]:
    """Write one batch, checking first that the session loads by LOAD DATA iff ``bulk``."""
    session = sink.open_session(SHAPE, None)
    assert isinstance(session, SqlSession) and session.bulk is bulk
    writer = session.writer()
    assert isinstance(writer, SqlWriter)
    try:
        return writer.write(batch), writer
    finally:
        writer.close()
        session.commit()


def contents(url: str, table: str) -> dict[str, tuple[object, ...]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        t = sa.Table(table, sa.MetaData(), autoload_with=conn)
        result = conn.execute(sa.select(t.c.id, t.c.timestamp, t.c.text, t.c.n))
        out = {r[0]: tuple(r[1:]) for r in result}
    engine.dispose()
    return out


@pytest.mark.integration
def test_skip_mode_counts_duplicates_exactly(sql_target: str) -> None:
    url, table = split_target(sql_target)
    sink = SqlSink(url=url, table=table)
    c = write(sink, rows(["a", "b", "b", "A"]))
    assert (c.inserted, c.skipped, c.updated, c.failed) == (3, 1, 0, 0)
    c = write(sink, rows(["a", "c"], text="new"))
    assert (c.inserted, c.skipped) == (1, 1)
    data = contents(url, table)
    assert set(data) == {"a", "A", "b", "c"}  # ids are case-sensitive
    assert data["a"][1] == "v"  # skip keeps the existing row
    assert data["a"][0] == datetime(2024, 1, 1)


@pytest.mark.integration
def test_upsert_mode_counts_updates_exactly(sql_target: str) -> None:
    url, table = split_target(sql_target)
    sink = SqlSink(url=url, table=table, write_mode="upsert")
    write(sink, rows(["a", "b"]))
    c = write(sink, rows(["a", "b", "c"], text="new"))
    assert (c.inserted, c.updated, c.skipped) == (1, 2, 0)
    assert {k: v[1] for k, v in contents(url, table).items()} == {
        "a": "new",
        "b": "new",
        "c": "new",
    }


@pytest.mark.integration
def test_long_text_is_not_truncated(sql_target: str) -> None:
    url, table = split_target(sql_target)
    long = "é" * 70_000  # 140 kB in UTF-8: more than TEXT holds
    c = write(SqlSink(url=url, table=table), rows(["x"], text=long))
    assert c.inserted == 1
    assert contents(url, table)["x"][1] == long


@pytest.mark.integration
def test_bad_record_is_isolated_and_the_rest_loaded(mysql_url: str, mysql_table: str) -> None:
    sink = SqlSink(url=mysql_url, table=mysql_table)
    batch = rows([f"r{i}" for i in range(10)])
    batch[4]["n"] = 2**70  # out of BIGINT range: strict mode refuses it
    c = write(sink, batch)
    assert (c.inserted, c.failed) == (9, 1)
    assert c.failures[0][0]["id"] == "r4"
    assert "r4" not in contents(mysql_url, mysql_table)


@pytest.mark.integration
def test_freeze_explains_an_existing_table_mismatch(mysql_url: str, mysql_table: str) -> None:
    engine = sa.create_engine(mysql_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                f"CREATE TABLE {mysql_table} (id VARCHAR(10) PRIMARY KEY, "
                "timestamp DATETIME, text VARCHAR(20))"
            )
        )
    engine.dispose()
    with pytest.raises(ConfigError) as err:
        SqlSink(url=mysql_url, table=mysql_table, schema_contract="freeze").open_session(
            SHAPE, None
        )
    msg = str(err.value)
    assert "column 'n' is missing" in msg
    assert "column 'text'" in msg and "100000 bytes" in msg


def test_injection_in_table_name_is_refused() -> None:
    with pytest.raises(ConfigError, match="not a valid SQL identifier"):
        SqlSink(url="sqlite://", table="records; DROP TABLE x").check()


@pytest.mark.integration
def test_wrong_password_is_one_clear_line(mysql_url: str) -> None:
    from es_mysql_pipeline.cli.resources import preflight
    from es_mysql_pipeline.resources.sources import FileSource
    from es_mysql_pipeline_tests.helpers import SAMPLE

    sink = SqlSink(url=mysql_url.replace("root@", "nobody_here@"), password="Sentinel-Pw-123")
    with pytest.raises(ConfigError) as err:
        preflight({"source": FileSource(path=SAMPLE), "sink": sink})
    assert "Access denied" in str(err.value)
    assert "Sentinel-Pw-123" not in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.integration
@pytest.mark.parametrize("bulk", [True, False])
def test_bulk_and_insert_paths_agree(bulk: bool, mysql_url: str, mysql_table: str) -> None:
    """LOAD DATA (bulk) and checked INSERTs give the same rows and counts, NULLs included."""
    sink = SqlSink(url=mysql_url, table=mysql_table, bulk_load=bulk)
    batch = rows(["a", "b", "b", "c"], text='quote " comma , newline \n tab \t NULL')
    batch[2]["n"] = None
    batch[3]["text"] = None
    c, _ = write_in_mode(sink, batch, bulk)
    assert (c.inserted, c.skipped, c.failed) == (3, 1, 0)
    data = contents(mysql_url, mysql_table)
    assert data["a"][1] == 'quote " comma , newline \n tab \t NULL'
    assert data["c"][1] is None and data["b"][2] == 1


#: Text that LOAD DATA's format gives a meaning to: escapes, NULL's spelling, line and
#: field ends, NUL, and what a CSV dialect would quote.
AWKWARD = [
    "\\N",
    "back\\slash \\t not a tab \\",
    "cr \r lf \n crlf \r\n tab \t nul \x00 end",
    "\"quoted\", 'single', ,comma",
    "",
    "NULL",
    "ünïcødé ✓ 𝄞",
    " leading and trailing spaces ",
]


@pytest.mark.integration
@pytest.mark.parametrize("bulk", [True, False])
def test_awkward_text_and_mixed_values_arrive_exact(
    bulk: bool, mysql_url: str, mysql_table: str
) -> None:
    """Every value comes back as given, on the bulk path and on the INSERT path alike."""
    sink = SqlSink(url=mysql_url, table=mysql_table, bulk_load=bulk)
    batch = rows([f"t{i}" for i in range(len(AWKWARD))])
    for record, text in zip(batch, AWKWARD, strict=True):
        record["text"] = text
    batch[0]["n"] = None
    batch[1]["n"] = -(2**63)
    batch[2]["n"] = 2**63 - 1
    c, writer = write_in_mode(sink, batch, bulk)
    assert writer.bulk_fallbacks == 0  # LOAD DATA took it all
    assert (c.inserted, c.failed) == (len(AWKWARD), 0)
    data = contents(mysql_url, mysql_table)
    assert [data[f"t{i}"][1] for i in range(len(AWKWARD))] == AWKWARD
    assert [data[f"t{i}"][2] for i in range(3)] == [None, -(2**63), 2**63 - 1]


def test_bulk_escaping_is_the_same_whatever_the_column_holds() -> None:
    """A column is escaped as one joined string, with a separator it does not hold; one
    holding every candidate separator is escaped value by value, with the same result."""
    from es_mysql_pipeline.writers.sql import bulk_load

    def by_value(values: list[str | None]) -> list[str]:
        return ["\\N" if v is None else v.translate(bulk_load._TRANSLATION) for v in values]

    column: list[str | None] = [*AWKWARD, None, "plain"]
    assert bulk_load._fields(list(column)) == by_value(column)
    every_separator = "".join(bulk_load._SEPARATORS)
    column = [*column, every_separator + "\t"]
    assert bulk_load._fields(list(column)) == by_value(column)
    assert bulk_load._fields(["a", "b"]) == ["a", "b"]


def test_a_load_file_from_columns_is_the_file_from_records(tmp_path: Path) -> None:
    """Staged frames of one shape reach the encoder as columns: same bytes as the records,
    a column the frame lacks written as NULLs."""
    from es_mysql_pipeline.records import columns_of
    from es_mysql_pipeline.writers.sql.bulk_load import write_bulk_file

    rows: list[dict[str, object]] = [
        {"id": f"t{i}", "ts": "2024-01-01T00:00:00.000000+00:00", "v": v, "n": i, "o": [i]}
        for i, v in enumerate([*AWKWARD, None])
    ]
    columns = columns_of(rows)
    assert columns is not None
    names, kinds = ("id", "ts", "v", "n", "o", "absent"), ("text", "datetime", "text", "number",
                                                            "text", "text")  # fmt: skip
    write_bulk_file(str(tmp_path / "rows.tsv"), [rows], names, kinds)
    write_bulk_file(str(tmp_path / "cols.tsv"), [columns], names, kinds)
    text = (tmp_path / "rows.tsv").read_bytes()
    assert (tmp_path / "cols.tsv").read_bytes() == text
    assert text.count(b"\\N\n") == len(rows)  # the absent column, last on every line
    # A file of several frames (the load joins batches into files of 20,000 rows or more)
    # is the file of their records together, whatever shape each frame has.
    tail = columns_of(rows[3:])
    assert tail is not None
    write_bulk_file(str(tmp_path / "parts.tsv"), [rows[:1], rows[1:3], tail], names, kinds)
    assert (tmp_path / "parts.tsv").read_bytes() == text


_STAGED_TIMES = st.datetimes(timezones=st.just(timezone.utc)).map(
    lambda d: d.isoformat(timespec="microseconds")
)
_ISO_TEXTS = [
    *("2024-01-01T00:00:00Z", "2024-01-01 10:00:00+02:00", "2024-01-01"),
    "2024-01-01T+00:00:00.00000+00:00",  # an offset-like text before the offset
]
_ODD_TIMES = st.one_of(
    st.none(),
    st.text(alphabet="0123456789T+-:.\x1f ", min_size=26, max_size=26).map(lambda t: t + "+00:00"),
    st.sampled_from(_ISO_TEXTS),
)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(st.lists(_STAGED_TIMES, max_size=8), st.lists(_ODD_TIMES, max_size=2))
def test_a_datetime_column_converts_as_each_value_would(staged: list[str], odd: list[Any]) -> None:
    """The joined-string conversion of a datetime column gives what sql_datetime gives
    value by value, whatever odd values (a second ``+``, the separator) are mixed in."""
    from es_mysql_pipeline.writers.sql.bulk_load import _sql_datetimes, sql_datetime

    for values in (staged, [*staged, *odd], [*odd, *staged]):
        want = [None if v is None else sql_datetime(v) for v in values]
        assert list(_sql_datetimes(values)) == want


@pytest.mark.integration
def test_a_big_load_encoded_ahead_loads_all_and_dead_letters_the_bad_rows(
    mysql_url: str, mysql_table: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ENCODE_AHEAD_MIN_ROWS a worker process writes the LOAD DATA files; a file the
    server refuses (a text in a number column) is retried through checked INSERTs."""
    from es_mysql_pipeline.dead_letter import read_dead_letters
    from es_mysql_pipeline.load_encoding import ENCODE_AHEAD_MIN_ROWS, encode_ahead
    from es_mysql_pipeline.load_engine import load_staged
    from es_mysql_pipeline.staging import StagedFileWriter

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("ES_MYSQL_PIPELINE_SCRATCH", str(scratch))
    n = ENCODE_AHEAD_MIN_ROWS + 10_000
    assert encode_ahead(n)
    bad = {f"r{i}" for i in range(0, n, 10_000)}
    with StagedFileWriter("id", None) as staging:
        for start in range(0, n, 5000):
            staging.write(
                [
                    {"id": f"r{i}", "n": "x" if f"r{i}" in bad else i, "text": AWKWARD[i % 8]}
                    for i in range(start, start + 5000)
                ]
            )
        staged = staging.finish()
    shape = TableShape(
        "id", None, {"id": ColumnStats("string", 20), "n": ColumnStats("int"), **TEXT}
    )
    sink = SqlSink(url=mysql_url, table=mysql_table, batch_size=2000, workers=2)
    outcome = load_staged(staged, sink, shape, "all", str(tmp_path / "dl"))
    assert (outcome.counts.inserted, outcome.counts.failed) == (n - len(bad), len(bad))
    assert outcome.dead_letter is not None
    assert {d["record"]["id"] for d in read_dead_letters(outcome.dead_letter)} == bad
    engine = sa.create_engine(mysql_url)
    with engine.connect() as conn:
        got = conn.execute(
            sa.text(f"SELECT COUNT(*), SUM(n), SUM(text = :t) FROM {mysql_table}"),
            {"t": AWKWARD[2]},
        ).one()
    engine.dispose()
    assert got[0] == n - len(bad)
    assert got[1] == sum(i for i in range(n) if f"r{i}" not in bad)
    assert got[2] == sum(1 for i in range(n) if i % 8 == 2 and f"r{i}" not in bad)
    assert [p.name for p in scratch.iterdir() if p.name.startswith("bulk-")] == []


def marked_session(sink: SqlSink, soft: bool = False) -> Any:
    shape = TableShape("id", None, {"id": ColumnStats("string", 10), **TEXT},
                       delete_marker="deleted", soft_delete=soft)  # fmt: skip
    return sink.open_session(shape, None)


def test_a_batch_of_delete_marks_only_deletes(sql_target: str) -> None:
    url, table = split_target(sql_target)
    sink = SqlSink(url=url, table=table, write_mode="upsert")
    session = marked_session(sink)
    writer = session.writer()
    writer.write([{"id": "a", "text": "x"}, {"id": "b", "text": "y"}])
    counts = writer.write([{"id": "a", "deleted": "yes"}, {"id": "zz", "deleted": True}])
    writer.close()
    session.commit()
    assert (counts.inserted, counts.deleted, counts.skipped) == (0, 1, 1)
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(sa.text(f"SELECT id FROM {table}")).scalars().all() == ["b"]
    engine.dispose()


def test_soft_deletes_need_the_column_in_its_own_spelling(mysql_url: str, mysql_table: str) -> None:
    engine = sa.create_engine(mysql_url)
    with engine.begin() as conn:  # MariaDB names are case-insensitive: no second _deleted_at
        conn.exec_driver_sql(
            f"CREATE TABLE `{mysql_table}` (id VARCHAR(10) PRIMARY KEY, text TEXT, "
            "`_DELETED_AT` DATETIME NULL)"
        )
    engine.dispose()
    session = marked_session(SqlSink(url=mysql_url, table=mysql_table), soft=True)
    writer = session.writer()
    with pytest.raises(
        SinkError, match=f"#{mysql_table}: table '{mysql_table}' has no _deleted_at$"
    ):
        writer.write([{"id": "a", "deleted": True}])
    writer.close()
    session.abort()


@pytest.mark.integration
def test_a_big_batch_cut_off_by_the_network_is_retried_not_dead_lettered(
    mysql_url: str, mysql_table: str
) -> None:
    """A connection lost while sending over 1 MB may be the server refusing the size; its
    max_allowed_packet says it was not, so the batch is retried whole."""
    with FaultProxy(MYSQL_HOST, MYSQL_PORT) as proxy:
        url = mysql_url.replace(f":{MYSQL_PORT}/", f":{proxy.port}/")
        sink = SqlSink(url=url, table=mysql_table, bulk_load=False, retry_backoff_seconds=0.01)
        session = sink.open_session(SHAPE, None)
        session.engine.dispose()  # the writer's connection is the next one opened
        proxy.cut_new_connections(after_bytes=100_000, count=1)
        writer = session.writer()
        try:
            first = writer.write(rows([str(i) for i in range(4)], "x" * 400_000))
            proxy.cut_open_connections(after_bytes=100_000)
            again = writer.write(rows([str(i) for i in range(4, 8)], "x" * 400_000))
        finally:
            writer.close()
            session.commit()
        assert proxy.counters.cuts == 2
    # each batch retried once whole, not halves written apart
    for counts in (first, again):
        assert (counts.inserted, counts.failed, counts.retries) == (4, 0, 1)
    assert set(contents(mysql_url, mysql_table)) == {str(i) for i in range(8)}


@pytest.mark.integration
def test_deletes_without_their_grants_are_refused_not_retried(
    mysql_url: str, mysql_table: str
) -> None:
    """Soft deletes add their column (ALTER), sync deletes remove rows (DELETE): a user
    without the grant gets the server's refusal, not a retry."""
    write(SqlSink(url=mysql_url, table=mysql_table), rows(["a", "b"]))
    with mysql_user(mysql_url) as user:
        sink = SqlSink(url=user.url, table=mysql_table, password=user.password)
        with pytest.raises(ConfigError) as altered:
            marked_session(sink, soft=True)
        with pytest.raises(ConfigError) as deleted:
            sink.delete_missing(SHAPE, None, {"a"})
    assert "ALTER command denied" in str(altered.value) and mysql_table in str(altered.value)
    assert str(altered.value).endswith(GRANTS_HINT)
    assert "DELETE command denied" in str(deleted.value) and mysql_table in str(deleted.value)
    assert set(contents(mysql_url, mysql_table)) == {"a", "b"}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"batch_size": 0}, "batch_size and workers must be at least 1"),
        ({"ssl_ca": "/nonexistent/ca.pem"},
         "--db_ssl_ca/ssl_ca: '/nonexistent/ca.pem' does not exist or is not a file"),
        ({"url": "not a url"},
         "db url 'not a url' is not a SQLAlchemy URL (expected "
         "mysql+pymysql://user@host:3306/db or sqlite:///file.db)"),
        ({"url": "nosuchdb://h/x"}, "db url: Can't load plugin: sqlalchemy.dialects:nosuchdb"),
    ],
)  # fmt: skip
def test_bad_sink_settings_are_one_line_each(settings: dict[str, Any], message: str) -> None:
    sink = SqlSink(**{"url": "sqlite:///x.db", "table": "t", **settings})
    with pytest.raises(ConfigError) as info:
        sink.engine()
    assert str(info.value) == message
    if settings.get("url") == "not a url":
        assert sink.describe()["target"] == "<invalid url>#t"


def test_server_refusals_name_their_fix() -> None:
    sink = SqlSink(url="mysql+pymysql://loader@db:3306/app", table="t", password="s3cret")
    where = "mysql+pymysql://loader@db:3306/app#t"
    wide = sink.session_error(pymysql.err.OperationalError(1117, "Too many columns"), 5000)
    assert isinstance(wide, ConfigError)
    assert str(wide).startswith(f"{where}: too many columns: the data has 5000 columns, more ")
    denied = pymysql.err.OperationalError(1142, "INSERT command denied to user 'loader'")
    err = sink.session_error(denied, 3)
    assert isinstance(err, ConfigError)
    assert str(err) == (
        f"{where}: (1142, \"INSERT command denied to user 'loader'\"); {GRANTS_HINT}"
    )


def test_an_in_memory_sqlite_sink_loads_and_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    counts = write(SqlSink(url="sqlite://", table="t"), rows(["a", "b"]))
    assert counts.inserted == 2 and list(tmp_path.iterdir()) == []


def test_counts_and_deletes_of_a_table_not_there_yet_or_without_a_column(tmp_path: Path) -> None:
    sink = SqlSink(url=f"sqlite:///{tmp_path / 'x.sqlite'}", table="t")
    day = TimeWindow.from_dates("2024-01-01", "2024-01-02")
    assert sink.count_rows(SHAPE, day, None) == 0
    assert sink.delete_missing(SHAPE, day, set()) == 0
    write(sink, rows(["a"]))
    untimed = TableShape("id", None, SHAPE.columns)
    with pytest.raises(ConfigError, match="the rows of a time window need a time column"):
        sink.count_rows(untimed, day, None)
    with pytest.raises(ConfigError, match=r"^table 't' has no column 'key'$"):
        sink.delete_missing(TableShape("key", None, SHAPE.columns), None, set())
