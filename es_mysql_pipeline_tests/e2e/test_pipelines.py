"""Issues 26 (item 6) and 27 (item 8): a defs.yaml with three pipelines in the real ``dagster dev``.

An Elasticsearch index (the wire-level test server) into a MariaDB table daily, a CSV into
another MariaDB table hourly, and JSON Lines into SQLite with a late-data window (an
automation condition, not a schedule); the metrics sensor pushes to a real Pushgateway.
GraphQL lists three groups, their assets, schedules and automation sensor. Through GraphQL
launches (not in-process): one partition of each pipeline, then a three-day single-run
backfill of ``orders`` that leaves the others untouched and gives each day its own row
count. Chromium then reads the asset, run, check and sensor pages after that backfill and
the asset graph with its three groups; screenshots are kept in ``artifacts/``.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from es_mysql_pipeline_tests.conftest import need_service
from es_mysql_pipeline_tests.e2e.conftest import (
    BACKFILL_TIMEOUT,
    LOCATION,
    RUN_TIMEOUT,
    browser_page,
    goto,
    poll,
    running_dagster_dev,
)
from es_mysql_pipeline_tests.es_server import EsTestServer
from es_mysql_pipeline_tests.fixtures.es import EsTarget

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page

    from es_mysql_pipeline_tests.e2e.conftest import DagsterDev
    from es_mysql_pipeline_tests.fixtures.prometheus import PushgatewayServer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MARIADB = "mysql+pymysql://root@127.0.0.1:3306/test"
PIPELINES = ("orders", "clicks", "events")
STEPS = ("raw", "clean", "loaded")
#: Each pipeline's assets: its chain, and the count of records no partition holds.
ASSETS = {p: tuple(f"{p}/{s}" for s in (*STEPS, "unplaced")) for p in PIPELINES}
REPOSITORY = "__repository__"
SENSOR = "pipeline_metrics_sensor"
#: orders: 3, 7 and 10 documents on the first three days, so that a range's total (20)
#: repeated on each day cannot pass for a day's own count.
ORDERS_PER_DAY = {"2024-01-01": 3, "2024-01-02": 7, "2024-01-03": 10}
#: The one partition run of each pipeline, and the rows that partition holds.
ONE_PARTITION = {
    "orders": ("2024-01-02", 7),
    "clicks": ("2024-01-02-05:00", 2),  # c5 and c29
    "events": ("2024-01-02", 30),
}
BACKFILL_DAYS = list(ORDERS_PER_DAY)
FINISHED_RUN = {"SUCCESS", "FAILURE", "CANCELED"}

LISTING = """
{
  repositoriesOrError {
    __typename
    ... on RepositoryConnection {
      nodes {
        location { name }
        assetGroups { groupName assetKeys { path } }
        assetNodes { assetKey { path } groupName tags { key value }
                     partitionDefinition { description } automationCondition { label } }
        schedules { name cronSchedule executionTimezone }
        sensors { name sensorType }
      }
    }
  }
}
"""

LAUNCH_RUN = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
    ... on PipelineNotFoundError { message }
  }
}
"""

RUN = """
query Run($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run {
      status
      tags { key value }
      eventConnection(afterCursor: null) {
        events {
          __typename
          ... on AssetCheckEvaluationEvent {
            evaluation {
              checkName success
              description
              metadataEntries { label ... on TextMetadataEntry { text } }
            }
          }
        }
      }
    }
  }
}
"""

LAUNCH_BACKFILL = """
mutation Backfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on PartitionSetNotFoundError { message }
    ... on UnauthorizedError { message }
  }
}
"""

BACKFILL_RUNS = """
query BackfillRuns($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status runs { id status tags { key value } } }
    ... on PythonError { message }
  }
}
"""

MATERIALIZATIONS = """
query Materializations($key: AssetKeyInput!) {
  assetOrError(assetKey: $key) {
    __typename
    ... on Asset {
      assetMaterializations(limit: 1000) {
        runId
        partition
        metadataEntries {
          __typename label
          ... on IntMetadataEntry { intValue }
          ... on TextMetadataEntry { text }
          ... on PathMetadataEntry { path }
        }
      }
    }
  }
}
"""

SENSOR_TICKS = """
query Ticks($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor {
      sensorState { status ticks(limit: 10) { status timestamp skipReason error { message } } }
    }
  }
}
"""


def _mariadb_up() -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(MARIADB)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        need_service(f"MariaDB at 127.0.0.1:3306 is not reachable ({exc.__class__.__name__})")
    finally:
        engine.dispose()


def orders_docs() -> Iterator[tuple[str, dict[str, Any]]]:
    n = 0
    for day, count in ORDERS_PER_DAY.items():
        for _ in range(count):
            yield f"o{n}", {"timestamp": f"{day}T{n % 24:02d}:00:00Z", "total": n}
            n += 1


def write_defs(root: Path, es_url: str, suffix: str) -> Path:
    """Three pipelines, their source files under ``root``; tables unique to this session."""
    clicks = root / "clicks.csv"
    clicks.write_text(
        "click_id,timestamp,page\n"
        + "".join(f"c{i},2024-01-02T{i % 24:02d}:10:00Z,/p{i % 5}\n" for i in range(48))
    )
    events = root / "events.jsonl"
    events.write_text(
        "".join(
            json.dumps({"id": f"e{i}", "timestamp": f"2024-01-02T{i % 24:02d}:00:00Z", "n": i})
            + "\n"
            for i in range(30)
        )
    )
    defs = root / "defs.yaml"
    defs.write_text(
        f"""\
type: es_mysql_pipeline.EsMysqlPipelines
attributes:
  connections:
    search: {{type: elasticsearch, hosts: ["{es_url}"]}}
    app_db: {{type: mysql, url: "{MARIADB}"}}
  pipelines:
    - name: orders
      source: {{connection: search, index: orders}}
      sink: {{connection: app_db, table: e2e_orders_{suffix}}}
      partitions: {{type: daily, start: "2024-01-01"}}
      schedule: "15 0 * * *"
    - name: clicks
      source: {{path: "{clicks}", id_field: click_id}}
      sink: {{connection: app_db, table: e2e_clicks_{suffix}}}
      partitions: {{type: hourly, start: "2024-01-01-00:00"}}
      schedule: "5 * * * *"
    - name: events
      source: {{path: "{events}"}}
      sink: {{sqlite: "{root / "events.sqlite"}", table: events}}
      partitions: {{type: daily, start: "2024-01-01"}}
      schedule: "30 1 * * *"
      lag: 2d
"""
    )
    return defs


@pytest.fixture(scope="module")
def pipelines_dev(
    tmp_path_factory: pytest.TempPathFactory, pushgateway_server: PushgatewayServer
) -> Iterator[DagsterDev]:
    """``dagster dev`` with ``ES_MYSQL_PIPELINE_DEFS`` pointing at the three pipelines, and
    the metrics sensor pushing to a real Pushgateway."""
    _mariadb_up()
    root = tmp_path_factory.mktemp("pipelines_dev")
    with EsTestServer() as es:
        EsTarget(es.url, es).seed("orders", orders_docs())
        defs = write_defs(root, es.url, uuid.uuid4().hex[:8])
        with running_dagster_dev(
            root, ES_MYSQL_PIPELINE_DEFS=str(defs), PUSHGATEWAY_URL=pushgateway_server.url
        ) as server:
            yield server


def listing(server: DagsterDev) -> dict[str, Any]:
    nodes = server.graphql(LISTING)["repositoriesOrError"]["nodes"]
    (repo,) = [n for n in nodes if n["location"]["name"] == LOCATION]
    return dict(repo)


def test_graphql_lists_three_pipelines(pipelines_dev: DagsterDev) -> None:
    repo = listing(pipelines_dev)
    groups = {
        g["groupName"]: {"/".join(k["path"]) for k in g["assetKeys"]} for g in repo["assetGroups"]
    }
    assert groups == {p: set(ASSETS[p]) for p in PIPELINES}
    nodes = {"/".join(n["assetKey"]["path"]): n for n in repo["assetNodes"]}
    assert set(nodes) == {key for p in PIPELINES for key in ASSETS[p]}
    for key, node in nodes.items():
        tags = {t["key"]: t["value"] for t in node["tags"]}
        assert tags.get("es_mysql_pipeline/pipeline_id") == key.split("/")[0], key
    assert "hourly" in nodes["clicks/raw"]["partitionDefinition"]["description"].lower()
    assert "daily" in nodes["orders/raw"]["partitionDefinition"]["description"].lower()
    # events: no schedule, an automation condition re-loading the last two days
    assert nodes["events/loaded"]["automationCondition"] is not None
    assert nodes["orders/loaded"]["automationCondition"] is None
    schedules = {s["name"]: s["cronSchedule"] for s in repo["schedules"]}
    assert schedules == {"orders_schedule": "15 0 * * *", "clicks_schedule": "5 * * * *"}
    sensors = {s["name"]: s["sensorType"] for s in repo["sensors"]}
    # an AutomationConditionSensorDefinition is of type AUTO_MATERIALIZE in GraphQL
    assert sensors == {
        "events_automation": "AUTO_MATERIALIZE",
        SENSOR: "STANDARD",
    }


def test_asset_graph_shows_three_groups(
    pipelines_dev: DagsterDev, browser: Browser, artifacts: Path
) -> None:
    from playwright.sync_api import expect

    last = artifacts / "ui-three-pipelines-last.png"
    with browser_page(browser, pipelines_dev, last) as page:
        goto(page, "/asset-groups")
        expect(page.get_by_role("dialog")).to_have_count(0)
        # Each group is in the sidebar and a node of the graph (collapsed: its name and
        # its assets).
        for group in PIPELINES:
            names = page.get_by_text(group, exact=True)
            expect(names.first).to_be_visible()
            expect(names.last).to_be_visible()
        page.wait_for_timeout(1500)  # let the graph settle after zoom-to-fit
        page.screenshot(path=str(artifacts / "ui-three-pipelines.png"))


# -- one partition of each pipeline, then a backfill of one --------------------------------


@dataclass(frozen=True)
class Launched:
    """What the module's launches left: run ids, and every asset's materializations
    before and after the backfill."""

    partition_runs: dict[str, str]
    backfill_id: str
    backfill_run: dict[str, Any]
    before: dict[str, list[dict[str, Any]]]
    after: dict[str, list[dict[str, Any]]]


def _path(key: str) -> dict[str, list[str]]:
    return {"path": key.split("/")}


def materializations(server: DagsterDev) -> dict[str, list[dict[str, Any]]]:
    """Every asset's materializations, newest first."""
    found: dict[str, list[dict[str, Any]]] = {}
    for key in (k for p in PIPELINES for k in ASSETS[p]):
        asset = server.graphql(MATERIALIZATIONS, {"key": _path(key)})["assetOrError"]
        found[key] = asset.get("assetMaterializations") or []
    return found


def run_status(server: DagsterDev, run_id: str) -> str:
    run = server.graphql(RUN, {"runId": run_id})["runOrError"]
    assert run["__typename"] == "Run", run
    return str(run["status"])


def launch_partition(server: DagsterDev, pipeline: str, partition: str) -> str:
    """What the UI's "Materialize" of one partition sends: ``launchRun`` of the job."""
    params = {
        "selector": {
            "repositoryLocationName": LOCATION,
            "repositoryName": REPOSITORY,
            "jobName": f"{pipeline}_job",
        },
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": partition}]},
        "mode": "default",
    }
    launched = server.graphql(LAUNCH_RUN, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return str(launched["run"]["runId"])


def launch_backfill(server: DagsterDev, pipeline: str, days: list[str]) -> str:
    """What the asset graph's "Materialize all…" over a range sends."""
    params = {
        "assetSelection": [_path(f"{pipeline}/{step}") for step in STEPS],
        "partitionNames": days,
        "title": f"e2e backfill of {pipeline}",
    }
    launched = server.graphql(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    return str(launched["backfillId"])


def backfill_runs(server: DagsterDev, backfill_id: str) -> list[dict[str, Any]]:
    backfill = server.graphql(BACKFILL_RUNS, {"id": backfill_id})["partitionBackfillOrError"]
    assert backfill["__typename"] == "PartitionBackfill", backfill
    return list(backfill["runs"])


@pytest.fixture(scope="module")
def launched(pipelines_dev: DagsterDev) -> Launched:
    """One partition of each pipeline (all three at once), then a three-day backfill of
    ``orders``; each waited for through GraphQL."""
    server = pipelines_dev
    runs = {p: launch_partition(server, p, key) for p, (key, _) in ONE_PARTITION.items()}
    for pipeline, run_id in runs.items():
        status = poll(
            f"{pipeline} run {run_id}",
            RUN_TIMEOUT,
            lambda r=run_id: run_status(server, r),  # type: ignore[misc]
            lambda s: s in FINISHED_RUN,
        )
        assert status == "SUCCESS", (pipeline, server.log_tail())
    before = materializations(server)
    backfill_id = launch_backfill(server, "orders", BACKFILL_DAYS)
    # the backfill daemon picks it up within its 30 s loop; its run then goes quickly
    found = poll(
        f"backfill {backfill_id}",
        BACKFILL_TIMEOUT,
        lambda: backfill_runs(server, backfill_id),
        lambda rs: bool(rs) and all(r["status"] in FINISHED_RUN for r in rs),
    )
    assert len(found) == 1, f"a single-run backfill made {len(found)} runs: {found}"
    return Launched(runs, backfill_id, found[0], before, materializations(server))


def _by_run(mats: list[dict[str, Any]], run_id: str) -> dict[str, dict[str, Any]]:
    """The materializations of ``run_id``, by partition, as {label: value}."""
    return {
        m["partition"]: {
            e["label"]: e.get("intValue", e.get("text", e.get("path")))
            for e in m["metadataEntries"]
        }
        for m in mats
        if m["runId"] == run_id
    }


def test_one_partition_of_each_pipeline(pipelines_dev: DagsterDev, launched: Launched) -> None:
    """Each partition run materialized its own pipeline's chain, for its partition, with
    that partition's rows; and nothing of another pipeline."""
    for pipeline, run_id in launched.partition_runs.items():
        key, rows = ONE_PARTITION[pipeline]
        for asset, mats in launched.before.items():
            got = _by_run(mats, run_id)
            if asset in ASSETS[pipeline][:3]:
                assert set(got) == {key}, (pipeline, asset, got)
            else:
                assert not got, f"run of {pipeline} materialized {asset}: {got}"
        loaded = _by_run(launched.before[f"{pipeline}/loaded"], run_id)[key]
        assert loaded["dagster/row_count"] == rows, (pipeline, loaded)
        assert loaded["inserted"] == rows, (pipeline, loaded)


def test_backfill_of_one_pipeline_leaves_the_others_untouched(
    pipelines_dev: DagsterDev, launched: Launched
) -> None:
    run = launched.backfill_run
    assert run["status"] == "SUCCESS", (run, pipelines_dev.log_tail())
    tags = {t["key"]: t["value"] for t in run["tags"]}
    assert tags["dagster/backfill"] == launched.backfill_id, tags
    assert tags["dagster/asset_partition_range_start"] == BACKFILL_DAYS[0], tags
    assert tags["dagster/asset_partition_range_end"] == BACKFILL_DAYS[-1], tags

    for asset, after in launched.after.items():
        new = after[: len(after) - len(launched.before[asset])]
        if asset in ASSETS["orders"][:3]:
            assert {m["runId"] for m in new} == {run["id"]}, (asset, new)
            assert sorted(m["partition"] for m in new) == BACKFILL_DAYS, (asset, new)
        else:
            # other pipelines (and orders' unplaced count): not one new materialization
            assert after == launched.before[asset], f"{asset} changed: {new}"

    # each day's load carries that day's own row count, not the range's total
    loaded = _by_run(launched.after["orders/loaded"], run["id"])
    assert {day: m["dagster/row_count"] for day, m in loaded.items()} == ORDERS_PER_DAY
    # the run's counts once, on its first day, said to be the range's
    first, *rest = BACKFILL_DAYS
    assert loaded[first]["processed"] == sum(ORDERS_PER_DAY.values()), loaded[first]
    assert "the whole run" in str(loaded[first]["counts_cover"]), loaded[first]
    for day in rest:
        assert "processed" not in loaded[day], (day, loaded[day])
        assert f"counted on {first}" in str(loaded[day]["counts_cover"]), loaded[day]

    # the check passed and names the run's days
    events = pipelines_dev.graphql(RUN, {"runId": run["id"]})["runOrError"]["eventConnection"]
    (check,) = [
        e["evaluation"] for e in events["events"] if e["__typename"] == "AssetCheckEvaluationEvent"
    ]
    assert check["checkName"] == "rows_reconciled" and check["success"], check
    meta = {m["label"]: m.get("text") for m in check["metadataEntries"]}
    assert meta["partitions"] == "2024-01-01 to 2024-01-03 (3 days in one run)", meta


# -- the pages a user reads after that backfill, in Chromium --------------------------------


def sensor_reason(server: DagsterDev, needle: str) -> str:
    """The newest tick's skip reason once it matches ``needle`` (the sensor ticks every
    30 s; a tick before the backfill's run ended does not count it yet)."""
    selector = {
        "repositoryLocationName": LOCATION,
        "repositoryName": REPOSITORY,
        "sensorName": SENSOR,
    }

    def newest() -> str:
        sensor = server.graphql(SENSOR_TICKS, {"selector": selector})["sensorOrError"]
        assert sensor["__typename"] == "Sensor", sensor
        ticks = sensor["sensorState"]["ticks"]
        return str(ticks[0]["skipReason"] or ticks[0]["error"]) if ticks else "(no tick yet)"

    return poll(f"{SENSOR} tick", 75, newest, lambda reason: bool(re.search(needle, reason)))


def metadata_row(page: Page, label: str) -> Locator:
    """The value cell of the metadata table row labelled ``label``."""
    row = page.locator("tr").filter(has=page.get_by_text(label, exact=True)).first
    return row.locator("td").nth(1)


def assert_no_none_path(page: Page) -> None:
    """ "(none)" is text, never a path with a copy button (issue 27 item 6)."""
    from playwright.sync_api import expect

    paths = page.locator("a[title='Copy to clipboard']")
    expect(paths.filter(has_text="(none)")).to_have_count(0)


def shot(page: Page, path: Path) -> None:
    page.screenshot(path=str(path))


def test_pages_after_the_backfill(
    pipelines_dev: DagsterDev,
    launched: Launched,
    browser: Browser,
    artifacts: Path,
    pushgateway_server: PushgatewayServer,
) -> None:
    """Asset, run, check and sensor pages after the backfill of ``orders``: what they
    say, read as a user reads it; a screenshot of each in ``artifacts/``."""
    from playwright.sync_api import expect

    server = pipelines_dev
    run_id = launched.backfill_run["id"]
    # the sensor has folded the backfill's run: two runs of orders, whichever tick it is
    pushed = re.compile(
        r"pushed totals of 2 run\(s\) \(\d+ new this tick\) for pipeline orders to "
        + re.escape(pushgateway_server.url)
    )
    with browser_page(browser, server, artifacts / "ui-after-backfill-last.png") as page:
        # asset page, the backfill's last day: its own row count, where its counts are
        goto(page, "/assets/orders/loaded?view=partitions&partition=2024-01-03")
        expect(page.get_by_text("Latest materialization")).to_be_visible()
        expect(page.locator(f"a[href^='/runs/{run_id}']").first).to_be_visible()
        expect(metadata_row(page, "dagster/row_count")).to_have_text("10")
        expect(metadata_row(page, "counts_cover")).to_contain_text(
            "counted on 2024-01-01, for the whole run: 2024-01-01 to 2024-01-03"
        )
        expect(metadata_row(page, "dead_letter_path")).to_have_text("(none)")
        assert_no_none_path(page)
        shot(page, artifacts / "ui-backfill-asset.png")

        # run page: one run over the range, succeeded, the check passed
        goto(page, f"/runs/{run_id}")
        expect(page.get_by_text("Success", exact=True).first).to_be_visible()
        expect(page.get_by_text("rows_reconciled on orders / loaded").first).to_be_visible()
        expect(page.get_by_text(re.compile(r"^Succeeded \(3\)$"))).to_be_visible()
        expect(page.get_by_text("ASSET_MATERIALIZATION").first).to_be_visible()
        # the staged file's path is a path (copy button); no "(none)" is
        expect(page.locator("a[title='Copy to clipboard']").first).to_be_visible()
        assert_no_none_path(page)
        shot(page, artifacts / "ui-backfill-run.png")

        # check page: passed, and names the run's days
        goto(page, "/assets/orders/loaded?view=checks")
        expect(page.get_by_text("Latest execution")).to_be_visible()
        expect(page.get_by_text("Passed", exact=True)).to_be_visible()
        days = "2024-01-01 to 2024-01-03 (3 days in one run)"
        expect(metadata_row(page, "partitions")).to_contain_text(days)
        expect(page.get_by_text(f"the sink holds 20 rows for {days}")).to_be_visible()
        shot(page, artifacts / "ui-backfill-check.png")

        # sensor page: the newest tick says what it pushed, in its dialog and its logs
        sensor_reason(server, pushed.pattern)
        goto(page, f"/locations/{LOCATION}/sensors/{SENSOR}")
        newest = page.locator("tr").filter(has=page.get_by_role("button", name="View logs"))
        newest = newest.first
        newest.get_by_role("button", name="0 runs requested").click()
        dialog = page.get_by_role("dialog")
        expect(dialog.get_by_text("Skip reason:")).to_be_visible()
        expect(dialog).to_contain_text(pushed)
        shot(page, artifacts / "ui-sensor-tick.png")
        dialog.get_by_role("button", name="Close").click()
        expect(dialog).to_have_count(0)
        newest.get_by_role("button", name="View logs").click()
        expect(dialog.get_by_text(pushed)).to_be_visible()
        shot(page, artifacts / "ui-sensor-logs.png")
        dialog.get_by_role("button", name="Done").click()
        # the cursor shown stays small
        cursor = page.locator("tr", has=page.get_by_text("Cursor", exact=True)).first
        assert len(cursor.inner_text()) < 200, cursor.inner_text()
