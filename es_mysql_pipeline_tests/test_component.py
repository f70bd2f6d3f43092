"""Three pipelines declared in one defs.yaml, on the real services.

An Elasticsearch index (the wire-level test server) → MariaDB table A, daily; a CSV whose id
column is ``click_id`` → MariaDB table B, hourly; JSON Lines → SQLite, daily. Each is its own
asset chain, group, resource keys, job and schedule or automation; a backfill of one leaves
the others untouched; stages never cross pipelines or runs; mistakes in the YAML fail at
load time in one line naming the file, the line and the place.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster.components.testing import create_defs_folder_sandbox

from es_mysql_pipeline.component import (
    EsMysqlPipelines,
    PipelineModel,
    PipelinesConfigError,
    SinkModel,
    SourceModel,
    find_pipeline,
    last_complete_partition,
    load_pipelines_file,
)
from es_mysql_pipeline.definitions import pipelines_defs
from es_mysql_pipeline.metrics.pushgateway import PushgatewayResource
from es_mysql_pipeline.targets import PIPELINE_TAG
from es_mysql_pipeline_tests.conftest import drop_table
from es_mysql_pipeline_tests.es_server import EsTestServer
from es_mysql_pipeline_tests.fixtures.es import EsTarget
from es_mysql_pipeline_tests.helpers import write_csv

pytestmark = pytest.mark.integration

DAYS = ["2024-03-01", "2024-03-02", "2024-03-03", "2024-03-04", "2024-03-05"]
PER_DAY = 12


def order_docs() -> list[tuple[str, dict[str, Any]]]:
    """``PER_DAY`` orders on each of ``DAYS``, two hours apart."""
    return [
        (
            f"o-{d}-{i}",
            {"@timestamp": f"{day}T{2 * i:02d}:00:00Z", "amount": i * 1.5, "shop": f"s{i % 3}"},
        )
        for d, day in enumerate(DAYS)
        for i in range(PER_DAY)
    ]


def click_rows() -> list[dict[str, str]]:
    """Clicks on 2024-03-01, five per hour for six hours; the id column is ``click_id``."""
    return [
        {"click_id": f"c-{h}-{i}", "ts": f"2024-03-01T{h:02d}:{10 * i:02d}:00Z", "page": f"p{i}"}
        for h in range(6)
        for i in range(5)
    ]


def event_lines() -> list[dict[str, Any]]:
    return [
        {"id": f"e-{d}-{i}", "timestamp": f"{day}T12:{i:02d}:00Z", "kind": "view"}
        for d, day in enumerate(DAYS[:3])
        for i in range(7)
    ]


def count(url: str, table: str, where: str = "") -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(f"SELECT COUNT(*) FROM {table} {where}")).scalar_one())
    except sa.exc.NoSuchTableError:
        return 0
    except sa.exc.ProgrammingError:  # MariaDB: no such table yet
        return 0
    except sa.exc.OperationalError:  # SQLite: no such table yet
        return 0
    finally:
        engine.dispose()


DEFS_YAML = """\
type: es_mysql_pipeline.EsMysqlPipelines
attributes:
  data_dir: {data}
  connections:
    search: {{type: elasticsearch, hosts: ["{es_url}"]}}
    app_db: {{type: mysql, url: "{mysql_url}"}}
  defaults:
    partitions: {{type: daily, start: "2024-03-01"}}
    schedule: "15 0 * * *"
    write_mode: upsert
  pipelines:
    - name: orders
      source: {{connection: search, index: orders}}
      sink: {{connection: app_db, table: {table_a}}}
      lag: 2d
      owners: ["team:sales"]
      tags: {{domain: sales}}
    - name: clicks
      source: {{path: {csv}, id_field: click_id, time_field: ts}}
      sink: {{connection: app_db, table: {table_b}}}
      partitions: {{type: hourly, start: "2024-03-01-00:00"}}
      schedule: "5 * * * *"
      settings: {{rename: {{page: page_name}}}}
    - name: events
      source: {{path: {jsonl}}}
      sink: {{sqlite: {sqlite}, table: events}}
      backfill: {{type: multi_run, max_partitions_per_run: 2}}
"""


class Setup:
    def __init__(self, tmp: Path, es_url: str, mysql_url: str) -> None:
        self.tmp = tmp
        self.mysql_url = mysql_url
        self.table_a = f"orders_{uuid.uuid4().hex[:10]}"
        self.table_b = f"clicks_{uuid.uuid4().hex[:10]}"
        self.sqlite = tmp / "events.sqlite"
        csv = write_csv(tmp / "clicks.csv", click_rows())
        jsonl = tmp / "events.jsonl"
        jsonl.write_text("".join(json.dumps(r) + "\n" for r in event_lines()), encoding="utf-8")
        self.defs_file = tmp / "defs.yaml"
        self.defs_file.write_text(
            DEFS_YAML.format(
                data=tmp / "data",
                es_url=es_url,
                mysql_url=mysql_url,
                table_a=self.table_a,
                table_b=self.table_b,
                csv=csv,
                jsonl=jsonl,
                sqlite=self.sqlite,
            ),
            encoding="utf-8",
        )
        self.defs = pipelines_defs(str(self.defs_file))

    @property
    def sqlite_url(self) -> str:
        return f"sqlite:///{self.sqlite}"

    def counts(self) -> tuple[int, int, int]:
        return (
            count(self.mysql_url, self.table_a),
            count(self.mysql_url, self.table_b),
            count(self.sqlite_url, "events"),
        )


@pytest.fixture
def setup(tmp_path: Path, mysql_url: str) -> Iterator[Setup]:
    with EsTestServer() as server:
        EsTarget(server.url, server).seed("orders", order_docs())
        s = Setup(tmp_path, server.url, mysql_url)
        try:
            yield s
        finally:
            drop_table(mysql_url, s.table_a)
            drop_table(mysql_url, s.table_b)


def _run(
    defs: dg.Definitions,
    job: str,
    instance: dg.DagsterInstance,
    key: str | None = None,
    tags: dict[str, str] | None = None,
) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def(job).execute_in_process(
        partition_key=key, instance=instance, tags=tags, raise_on_error=False
    )


def test_three_pipelines_load_as_three_chains(setup: Setup) -> None:
    defs = setup.defs
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {
        f"{p}/{s}"
        for p in ("orders", "clicks", "events")
        for s in ("raw", "clean", "loaded", "unplaced")  # partitioned: records of no day
    }
    groups = {graph.get(k).group_name for k in graph.get_all_asset_keys()}
    assert groups == {"orders", "clicks", "events"}
    for name in ("orders", "clicks", "events"):
        for part in ("source", "sink", "settings", "io_manager"):
            assert f"{name}__{part}" in (defs.resources or {})
        loaded = graph.get(dg.AssetKey([name, "loaded"]))
        assert loaded.tags[PIPELINE_TAG] == name
        assert loaded.pools == {loaded.pools and next(iter(loaded.pools))}  # one pool
        job = defs.resolve_job_def(f"{name}_job")
        assert job.executor_def is dg.in_process_executor
        assert job.run_tags[PIPELINE_TAG] == name
    # Dagster's implicit all-assets job builds: no resource key shared by two pipelines
    assert (
        len(defs.resolve_implicit_global_asset_job_def().nodes) == 12
    )  # the three chains and their unplaced counts
    assert graph.get(dg.AssetKey(["orders", "loaded"])).owners == ["team:sales"]
    # the pools name the tables, one per table
    pools = {
        next(iter(graph.get(dg.AssetKey([n, "loaded"])).pools or []))
        for n in ("orders", "clicks", "events")
    }
    assert len(pools) == 3 and any(setup.table_a in p for p in pools)


def _evaluate(defs: Any, instance: Any, cursor: Any, at: datetime) -> Any:
    """Dagster's tester runs ``asyncio.run``: in a thread of its own, whatever event loop
    the test's thread may have (Playwright's sync API keeps one running)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(
            dg.evaluate_automation_conditions,
            defs=defs,
            instance=instance,
            cursor=cursor,
            evaluation_time=at,
        ).result()


def test_schedules_and_late_data_automation(setup: Setup) -> None:
    defs = setup.defs
    graph = defs.resolve_asset_graph()
    # orders: lag 2d → an automation condition and its sensor, no schedule
    for step in ("raw", "clean", "loaded"):
        assert graph.get(dg.AssetKey(["orders", step])).automation_condition is not None
    sensor = defs.resolve_sensor_def("orders_automation")
    assert isinstance(sensor, dg.AutomationConditionSensorDefinition)
    repo = defs.get_repository_def()
    assert {s.name for s in repo.schedule_defs} == {"clicks_schedule", "events_schedule"}
    # at the 00:15 tick the last two days of orders are requested, all three steps, once
    with dg.DagsterInstance.ephemeral() as instance:
        cursor = None
        requested = []
        for minute in (10, 20, 30):
            at = datetime(2024, 3, 5, 0, minute, tzinfo=timezone.utc)
            result = _evaluate(defs, instance, cursor, at)
            cursor = result.cursor
            requested.append(
                {
                    key.to_user_string(): sorted(
                        str(k) for k in result.get_requested_partitions(key)
                    )
                    for key in graph.get_all_asset_keys()
                    if result.get_requested_partitions(key)
                }
            )
    two_days = ["2024-03-03", "2024-03-04"]
    assert requested == [{}, {f"orders/{s}": two_days for s in ("raw", "clean", "loaded")}, {}]
    # clicks: hourly at :05 loads the hour just over; events: daily at 00:15 the day before
    tick = datetime(2024, 3, 1, 4, 5, tzinfo=timezone.utc)
    ctx = dg.build_schedule_context(scheduled_execution_time=tick, repository_def=repo)
    (req,) = defs.resolve_schedule_def("clicks_schedule").evaluate_tick(ctx).run_requests or []
    assert req.partition_key == "2024-03-01-03:00"
    assert req.tags[PIPELINE_TAG] == "clicks"
    tick = datetime(2024, 3, 5, 0, 15, tzinfo=timezone.utc)
    ctx = dg.build_schedule_context(scheduled_execution_time=tick, repository_def=repo)
    (req,) = defs.resolve_schedule_def("events_schedule").evaluate_tick(ctx).run_requests or []
    assert req.partition_key == "2024-03-04"


@pytest.mark.parametrize(
    ("tick", "expected"),
    [
        (datetime(2024, 2, 20, 0, 15, tzinfo=timezone.utc), None),  # before the start
        (datetime(2024, 3, 1, 0, 15, tzinfo=timezone.utc), None),  # the first day not over
        (datetime(2024, 3, 2, 0, 15, tzinfo=timezone.utc), "2024-03-01"),
        (datetime(2024, 3, 9, 0, 15, tzinfo=timezone.utc), "2024-03-04"),  # the last (end)
    ],
)
def test_a_tick_loads_the_last_complete_partition_and_none_before_the_first(
    tick: datetime, expected: str | None
) -> None:
    days = dg.DailyPartitionsDefinition(start_date="2024-03-01", end_date="2024-03-05")
    assert last_complete_partition(days, tick) == expected


def test_a_partition_of_each_then_a_backfill_of_one(setup: Setup) -> None:
    defs = setup.defs
    with dg.DagsterInstance.ephemeral() as instance:
        orders = _run(defs, "orders_job", instance, "2024-03-02")
        clicks = _run(defs, "clicks_job", instance, "2024-03-01-02:00")
        events = _run(defs, "events_job", instance, "2024-03-01")
        for result in (orders, clicks, events):
            assert result.success
            (check,) = result.get_asset_check_evaluations()
            assert check.passed, check.metadata
            assert result.dagster_run.tags[PIPELINE_TAG] in ("orders", "clicks", "events")
        assert setup.counts() == (PER_DAY, 5, 7)
        # the CSV's click_id is the id column, under its own name; page was renamed
        engine = sa.create_engine(setup.mysql_url)
        with engine.connect() as conn:
            cols = {c["name"] for c in sa.inspect(conn).get_columns(setup.table_b)}
            ids = set(conn.execute(sa.text(f"SELECT click_id FROM {setup.table_b}")).scalars())
        engine.dispose()
        assert "page_name" in cols and "page" not in cols
        assert ids == {f"c-2-{i}" for i in range(5)}

        before = {
            key: len(instance.fetch_materializations(key, limit=100).records)
            for key in defs.resolve_asset_graph().get_all_asset_keys()
        }
        backfill = _run(
            defs,
            "orders_job",
            instance,
            tags={
                "dagster/asset_partition_range_start": "2024-03-03",
                "dagster/asset_partition_range_end": "2024-03-05",
            },
        )
        assert backfill.success
        assert all(e.passed for e in backfill.get_asset_check_evaluations())
        assert setup.counts() == (4 * PER_DAY, 5, 7)
        after = {
            key: len(instance.fetch_materializations(key, limit=100).records)
            for key in defs.resolve_asset_graph().get_all_asset_keys()
        }
        changed = {k.to_user_string() for k in after if after[k] != before[k]}
        assert changed == {"orders/raw", "orders/clean", "orders/loaded"}


def test_two_runs_of_one_partition_never_share_a_stage(setup: Setup) -> None:
    defs = setup.defs
    stage_dir = setup.tmp / "data" / "staging" / "events" / "raw" / "2024-03-02"
    with dg.DagsterInstance.ephemeral() as instance:
        first = _run(defs, "events_job", instance, "2024-03-02")
        assert first.success
        (stage,) = [p for p in os.listdir(stage_dir) if p.endswith(".stage")]
        assert stage == f"{first.run_id}.stage"
        second = _run(defs, "events_job", instance, "2024-03-02")
        assert second.success
        # the second run staged under its own name; the finished first run's stage went
        stages = sorted(p for p in os.listdir(stage_dir) if p.endswith(".stage"))
        assert stages == [f"{second.run_id}.stage"]
        # re-materializing only the load takes the newest complete clean stage
        events = find_pipeline(setup.defs_file, "events")
        only_load = dg.materialize(
            events.assets(),
            selection=[dg.AssetKey(["events", "loaded"])],
            resources={**events.resources(), "pushgateway": PushgatewayResource()},
            partition_key="2024-03-02",
            instance=instance,
            raise_on_error=False,
        )
        assert only_load.success
        (check,) = only_load.get_asset_check_evaluations()
        assert check.passed


# ---- mistakes: one line at load time, naming the file, the line and the place ----------

GOOD = """\
type: es_mysql_pipeline.EsMysqlPipelines
attributes:
  connections:
    db: {type: sqlite, url: "sqlite:///x.sqlite"}
  pipelines:
    - name: one
      source: {path: a.csv}
      sink: {connection: db, table: t1}
"""
#: A second pipeline, into another table or into the first one's table.
TWO = "    - name: two\n      source: {path: b.csv}\n      sink: {connection: db, table: t2}\n"
TWO_T1 = TWO.replace("t2}", "t1}")


@pytest.mark.parametrize(
    ("extra", "line_of", "words"),
    [
        (
            TWO.replace("db,", "nodb,"),
            "sink: {connection: nodb",
            ["pipelines[1].sink.connection", "unknown connection 'nodb'", "declared: db"],
        ),
        (
            TWO.replace("name: two", "name: one"),
            "- name: one\n      source: {path: b.csv}",
            ["pipelines[1].name", "duplicate pipeline name 'one'"],
        ),
        (
            TWO_T1
            + "      settings: {id_column: other_id}\n",
            "sink: {connection: db, table: t1}\n      settings",
            ["pipelines[1].sink", "different id columns", "'id', 'other_id'"],
        ),
        (
            TWO
            + "      schedule: every day\n",
            "schedule: every day",
            ["pipelines[1].schedule", "'every day' is not a cron schedule"],
        ),
        (
            TWO
            + "      settings: {id_colum: x}\n",
            "settings: {id_colum",
            ["pipelines[1].settings", "unknown setting 'id_colum'"],
        ),
        (
            TWO
            + "      lag: 2 weeks\n      schedule: '0 1 * * *'\n"
            "      partitions: {type: daily, start: '2024-01-01'}\n",
            "lag: 2 weeks",
            ["pipelines[1].lag", "use a number of days or hours"],
        ),
        (
            TWO
            + "      partitions: {type: hourly, start: 'March'}\n",
            "start: 'March'",
            ["pipelines[1].partitions.start", "'March'"],
        ),
        (
            "    - name: two\n      source: {path: b.csv, index: x}\n"
            "      sink: {connection: db, table: t2}\n",
            "source: {path: b.csv, index: x}",
            ["pipelines[1].source", "index and query are for an elasticsearch connection"],
        ),
    ],
    ids=["unknown-connection", "duplicate-name", "same-table-other-id", "bad-cron",
         "unknown-setting", "bad-lag", "bad-start", "file-with-index"],
)  # fmt: skip
def test_mistakes_fail_at_load_in_one_line(
    tmp_path: Path, extra: str, line_of: str, words: list[str]
) -> None:
    text = GOOD + extra
    path = tmp_path / "defs.yaml"
    path.write_text(text, encoding="utf-8")
    line = text[: text.index(line_of)].count("\n") + 1
    with pytest.raises(PipelinesConfigError) as err:
        pipelines_defs(str(path))
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message
    assert message.startswith(f"{path}:"), message
    assert message.startswith(f"{path}:{line}: {words[0]}:"), (line, message)


def test_a_typo_in_a_field_fails_at_load_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "defs.yaml"
    path.write_text(GOOD.replace("table: t1}", "tabel: t1}"), encoding="utf-8")
    with pytest.raises(PipelinesConfigError) as err:
        pipelines_defs(str(path))
    message = str(err.value)
    assert "\n" not in message and "tabel" in message and str(path) in message, message


def test_secrets_are_variable_names_never_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_DB_PASSWORD", "Sentinel-Pw-26")
    monkeypatch.setenv("TEST_ES_KEY", "Sentinel-Key-26")
    text = (
        "type: es_mysql_pipeline.EsMysqlPipelines\nattributes:\n  connections:\n"
        "    es: {type: elasticsearch, hosts: ['http://127.0.0.1:1'], api_key_env: TEST_ES_KEY}\n"
        "    db: {type: mysql, url: 'mysql+pymysql://u@h/d', password_env: TEST_DB_PASSWORD}\n"
        "  pipelines:\n    - {name: p, source: {connection: es, index: i},"
        " sink: {connection: db, table: t}}\n"
    )
    path = tmp_path / "defs.yaml"
    path.write_text(text, encoding="utf-8")
    ((component, file, doc),) = load_pipelines_file(path)
    (plan,) = component.plans(file, doc)
    assert isinstance(plan.sink.password, dg.EnvVar)
    assert plan.sink.password.env_var_name == "TEST_DB_PASSWORD"
    assert isinstance(plan.source.api_key, dg.EnvVar)
    rendered = repr(plan.resources()) + json.dumps(plan.run_tags())
    assert "Sentinel" not in rendered
    # a password written into the url is refused, naming where to put it instead
    path.write_text(text.replace("u@h", "u:pw@h"), encoding="utf-8")
    with pytest.raises(PipelinesConfigError, match="password_env"):
        pipelines_defs(str(path))


def test_the_bundled_defs_folder_is_the_sample_into_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ES_MYSQL_PIPELINE_DATA", str(tmp_path))
    defs = pipelines_defs(None)
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys == {"sample/raw", "sample/clean", "sample/loaded", "sample/unplaced"}
    # the sample's five days, no more: loadable in one click, the graph's fill % honest
    job = defs.resolve_job_def("sample_job")
    assert job.partitions_def is not None
    assert job.partitions_def.get_partition_keys() == [f"2024-01-0{d}" for d in range(1, 6)]
    result = _run(defs, "sample_job", dg.DagsterInstance.ephemeral(), "2024-01-02")
    assert result.success
    (check,) = result.get_asset_check_evaluations()
    assert check.passed
    assert count(f"sqlite:///{tmp_path / 'es_mysql_pipeline.sqlite'}", "records") > 0


# ---- each check of the YAML: the whole line, at the YAML line of the mistake ------------

HEAD = """\
type: es_mysql_pipeline.EsMysqlPipelines
attributes:
  connections:
    db: {type: sqlite, url: "sqlite:///x.sqlite"}
    es: {type: elasticsearch, hosts: ["http://127.0.0.1:1"]}
"""


def pipe(source: str = "{path: b.csv}", sink: str = "{jsonl_dir: out}", more: str = "") -> str:
    """``pipelines:`` with one pipeline ``two``: its source, sink and further lines."""
    return f"  pipelines:\n    - name: two\n      source: {source}\n      sink: {sink}\n{more}"


SCHEDULE = "      schedule: '0 1 * * *'\n"
DAILY = "      partitions: {type: daily}\n"
#: Dagster's templates: a source given whole by one, a template with an unknown name
TEMPLATE_SOURCE = "\"{{ {'connection': 'nodb', 'index': 'x'} }}\""


@pytest.mark.parametrize(
    ("tail", "line_of", "expected"),
    [
        ("    pg: {type: sql}\n", "pg:",
         "connections.pg: a sql connection needs url"),
        ("    search: {type: elasticsearch}\n", "search:",
         "connections.search: an elasticsearch connection needs hosts"),
        ("    my-db: {type: mysql, url: 'mysql+pymysql://u@h/d'}\n", "my-db:",
         "connections.my-db: connection name 'my-db': letters, digits and _ (a letter first)"),
        (pipe().replace("name: two", "name: 2nd"), "- name: 2nd",
         "pipelines[0].name: pipeline name '2nd': letters, digits and _ (a letter first)"),
        (pipe(more="      lag: 2d\n" + SCHEDULE), "lag: 2d",
         "pipelines[0].lag: lag re-loads recent partitions: give partitions too"),
        (pipe(more=DAILY + "      lag: 2d\n"), "lag: 2d",
         "pipelines[0].lag: lag needs a schedule (the cron of the re-load)"),
        (pipe(more=DAILY + "      backfill: {type: multi_run, max_partitions_per_run: 0}\n"),
         "backfill:", "pipelines[0].backfill: max_partitions_per_run must be 1 or more"),
        (pipe(more="      tags:\n        team: data\n        cost: a b\n"), "a b",
         "pipelines[0].tags.cost: tag value 'a b': use letters, digits, _ . -"),
        (pipe(more="      tags: {es_mysql_pipeline/pipeline_id: other}\n"), "tags:",
         "pipelines[0].tags.es_mysql_pipeline/pipeline_id: tag "
         "'es_mysql_pipeline/pipeline_id' is set by the pipeline itself"),
        (pipe(more="      settings: {max_failed_ratio: 7}\n"), "settings:",
         "pipelines[0].settings: PipelineSettings.max_failed_ratio: Input should be less than "
         "or equal to 1"),
        (pipe(more="      settings: {pipeline_id: x}\n"), "settings:",
         "pipelines[0].settings: pipeline_id is the pipeline's name"),
        (pipe(source="{format: csv}"), "source:",
         "pipelines[0].source: give either path (a CSV or JSON Lines file) or connection and "
         "index"),
        (pipe(source="{connection: db, index: x}"), "source:",
         "pipelines[0].source.connection: 'db' is a sqlite connection"),
        (pipe(source="{connection: es}"), "source:",
         "pipelines[0].source: an elasticsearch source needs index (a name or pattern)"),
        (pipe(source="{connection: es, index: x, id_field: key}"), "source:",
         "pipelines[0].source.id_field: an elasticsearch record's id is its _id"),
        (pipe(source="{path: b.csv, options: {path: c.csv}}"), "source:",
         "pipelines[0].source.options: 'path' is set outside options: drop it from options"),
        (pipe(sink="{sqlite: x.db, jsonl_dir: out}"), "sink:",
         "pipelines[0].sink: give one of connection (with table), sqlite (with table) or "
         "jsonl_dir"),
        (pipe(sink="{sqlite: x.db}"), "sink:",
         "pipelines[0].sink: a database sink needs table"),
        (pipe(sink="{connection: es, table: t}"), "sink:",
         "pipelines[0].sink.connection: 'es' is an elasticsearch cluster"),
        (pipe(sink="\n        connection: db\n        table: t\n        options:\n"
                   "          table: u\n"), "table: u",
         "pipelines[0].sink.options: 'table' is set outside options: drop it from options"),
        (pipe(source="{path: b.csv, options: {delimter: ';'}}"), "source:",
         "pipelines[0].source.options: FileSource has no option 'delimter' (delimiter, "
         "encoding, format, id_column, timestamp_column)"),
        (pipe(sink="{jsonl_dir: out, options: {batch_size: many}}"), "sink:",
         "pipelines[0].sink: JsonlSink.batch_size: Input should be a valid integer, unable to "
         "parse string as an integer"),
        (pipe(source=TEMPLATE_SOURCE), "source:",
         "pipelines[0].source.connection: unknown connection 'nodb' (declared: db, es)"),
        (pipe(source="{path: '{{ no_such_name }}'}"), "source:",
         "pipelines[0].source.path: UndefinedError: 'no_such_name' not found in scope"),
        (pipe(more="      lag: '{{ 3 }}'\n"), "- name: two",
         "pipelines: lag: Input should be a valid string"),
    ],
    ids=["db-without-url", "es-without-hosts", "connection-name", "pipeline-name",
         "lag-without-partitions", "lag-without-schedule", "no-partitions-per-run",
         "tag-value", "own-tag", "ratio-setting", "pipeline-id-setting", "source-neither",
         "source-on-a-db",
         "es-without-index", "es-id-field", "source-option-twice", "sink-two-kinds",
         "sink-without-table", "sink-on-es", "sink-option-twice", "source-option-typo",
         "sink-option-type",
         "template-source", "template-unknown-name", "template-wrong-type"],
)  # fmt: skip
def test_each_mistake_is_one_line_at_its_yaml_line(
    tmp_path: Path, tail: str, line_of: str, expected: str
) -> None:
    text = HEAD + tail
    path = tmp_path / "defs.yaml"
    path.write_text(text, encoding="utf-8")
    line = text[: text.index(line_of)].count("\n") + 1
    with pytest.raises(PipelinesConfigError) as err:
        pipelines_defs(str(path))
    # Dagster's complaint about an unknown template name goes on to list its scope
    assert str(err.value).startswith(f"{path}:{line}: {expected}"), (line, str(err.value))
    if "UndefinedError" not in expected:
        assert str(err.value) == f"{path}:{line}: {expected}"


def test_a_mistake_inherited_from_defaults_points_at_the_pipeline(tmp_path: Path) -> None:
    text = HEAD + "  defaults: {lag: 2d, schedule: '0 1 * * *'}\n" + pipe().replace("two", "one")
    path = tmp_path / "defs.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PipelinesConfigError) as err:
        find_pipeline(path, "one")
    line = text[: text.index("- name: one")].count("\n") + 1
    expected = "pipelines[0].lag: lag re-loads recent partitions: give partitions too"
    assert str(err.value) == f"{path}:{line}: {expected}"


SECOND = HEAD.replace("    es:", "    es2:") + pipe(more="      lag: 2d\n" + SCHEDULE)
LAG_TOO_SOON = "pipelines[0].lag: lag re-loads recent partitions: give partitions too"


def two_components(second: str) -> str:
    """A defs.yaml of two components, the second ``second``, and another one's first."""
    other = "type: dagster.DefsFolderComponent\nattributes: {}\n---\n"
    return other + HEAD + pipe().replace("two", "one") + "---\n" + second


def last_line_of(text: str, part: str) -> int:
    return text[: text.rindex(part)].count("\n") + 1


@pytest.mark.parametrize(
    ("second", "line_of", "expected"),
    [
        (SECOND, "lag: 2d", LAG_TOO_SOON),
        (SECOND.replace("sink:", "sinc:"), "- name: two", "pipelines[0].sink: Field required"),
    ],
    ids=["check", "validation"],
)
def test_the_line_is_in_the_document_of_the_component_at_fault(
    tmp_path: Path, second: str, line_of: str, expected: str
) -> None:
    text = two_components(second)
    path = tmp_path / "defs.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PipelinesConfigError) as err:
        find_pipeline(path, "two")
    assert str(err.value) == f"{path}:{last_line_of(text, line_of)}: {expected}"


def test_in_a_dagster_project_the_line_is_in_the_document_at_fault() -> None:
    text = HEAD + pipe().replace("two", "one") + "---\n" + SECOND
    with create_defs_folder_sandbox() as sandbox:
        folder = sandbox.defs_folder_path / "pipelines"
        folder.mkdir()
        (folder / "defs.yaml").write_text(text, encoding="utf-8")
        with pytest.raises(Exception) as err, sandbox.build_all_defs():  # Dagster wraps it
            pass  # the load fails before
    line = last_line_of(text, "lag: 2d")
    assert repr(err.value.__cause__) == repr(
        PipelinesConfigError(f"{folder / 'defs.yaml'}:{line}: {LAG_TOO_SOON}")
    )


def test_a_component_built_in_python_names_the_place_without_a_file() -> None:
    component = EsMysqlPipelines(
        pipelines=[
            PipelineModel(name="one", source=SourceModel(path="a.csv"), sink=SinkModel()),
        ]
    )
    with pytest.raises(PipelinesConfigError) as err:
        component.definitions()
    assert str(err.value) == (
        "pipelines[0].sink: give one of connection (with table), sqlite (with table) or jsonl_dir"
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "{path}: no defs.yaml in this folder"),
        (b"a: [1\n", "{path}: while parsing a flow sequence"),
        ("name: caf\u00e9\n".encode("latin-1"), "{path}: 'utf-8' codec can't decode byte 0xe9"),
        (b"type: dagster.DefsFolderComponent\nattributes: {}\n---\n[]\n",
         "{path}: no component of type es_mysql_pipeline.EsMysqlPipelines"),
        (b"", "{path}: no component of type es_mysql_pipeline.EsMysqlPipelines"),
    ],
    ids=["empty-folder", "yaml-syntax", "not-utf8", "other-components", "empty-file"],
)  # fmt: skip
def test_a_file_that_is_no_pipelines_file_is_one_line(
    tmp_path: Path, content: bytes | None, expected: str
) -> None:
    path = tmp_path if content is None else tmp_path / "defs.yaml"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(PipelinesConfigError) as err:
        pipelines_defs(str(path))
    assert str(err.value).startswith(expected.format(path=path)), str(err.value)
    assert "\n" not in str(err.value)


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(PipelinesConfigError) as err:
        find_pipeline(path, "one")
    assert str(err.value) == f"{path}: [Errno 2] No such file or directory: '{path}'"


def _tick(defs: dg.Definitions, name: str, at: datetime) -> dg.ScheduleExecutionData:
    context = dg.build_schedule_context(
        scheduled_execution_time=at, repository_def=defs.get_repository_def()
    )
    return defs.resolve_schedule_def(f"{name}_schedule").evaluate_tick(context)


def test_a_schedule_without_partitions_loads_all_and_before_the_start_skips(
    tmp_path: Path,
) -> None:
    text = HEAD + pipe(more=SCHEDULE + "      partitions: {type: none}\n")
    text += "    - {name: later, source: {path: c.csv}, sink: {jsonl_dir: out2},\n"
    text += "       schedule: '15 0 * * *', partitions: {type: daily, start: '2024-06-01'}}\n"
    path = tmp_path / "defs.yaml"
    path.write_text(text, encoding="utf-8")
    defs = pipelines_defs(str(path))
    at = datetime(2024, 6, 1, 0, 15, tzinfo=timezone.utc)
    (whole,) = _tick(defs, "two", at).run_requests or []
    assert whole.partition_key is None and whole.tags[PIPELINE_TAG] == "two"
    skipped = _tick(defs, "later", at)  # the first day is not over yet
    assert skipped.run_requests == [] and skipped.skip_message == "no complete partition yet"
    (day,) = _tick(defs, "later", at + timedelta(days=1)).run_requests or []
    assert day.partition_key == "2024-06-01"


def test_celery_as_the_default_executor_or_one_pipelines(tmp_path: Path) -> None:
    text = HEAD + "  defaults: {executor: celery}\n" + pipe()
    text += "    - {name: three, source: {path: c.csv}, sink: {jsonl_dir: o3},\n"
    text += "       executor: multiprocess}\n"
    path = tmp_path / "defs.yaml"
    path.write_text(text, encoding="utf-8")
    defs = pipelines_defs(str(path))
    assert defs.resolve_job_def("two_job").executor_def.name == "celery"
    assert defs.resolve_job_def("three_job").executor_def is dg.multiprocess_executor
    # Dagster's implicit asset job takes the location's executor: the default's
    assert defs.resolve_implicit_global_asset_job_def().executor_def.name == "celery"
