"""Issue 26 item 6: a defs.yaml with three pipelines, loaded by the real ``dagster dev``.

An Elasticsearch index (the wire-level test server) into a MariaDB table daily, a CSV into
another MariaDB table hourly, and JSON Lines into SQLite with a late-data window (an
automation condition, not a schedule). GraphQL lists three groups, nine assets and their
schedules and automation sensor; a Chromium screenshot of the asset graph shows the three
groups (kept in ``artifacts/``).
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from es_mysql_pipeline_tests.conftest import need_service
from es_mysql_pipeline_tests.e2e.conftest import LOCATION, START_TIMEOUT, running_dagster_dev
from es_mysql_pipeline_tests.es_server import EsTestServer
from es_mysql_pipeline_tests.fixtures.es import EsTarget

if TYPE_CHECKING:
    from playwright.sync_api import Page

    from es_mysql_pipeline_tests.e2e.conftest import DagsterDev

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MARIADB = "mysql+pymysql://root@127.0.0.1:3306/test"
PIPELINES = ("orders", "clicks", "events")
STEPS = ("raw", "clean", "loaded")
MS = 1000

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
def pipelines_dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterDev]:
    """``dagster dev`` with ``ES_MYSQL_PIPELINE_DEFS`` pointing at the three pipelines."""
    _mariadb_up()
    root = tmp_path_factory.mktemp("pipelines_dev")
    with EsTestServer() as es:
        target = EsTarget(es.url, es)
        target.seed(
            "orders",
            (
                (f"o{i}", {"timestamp": f"2024-01-02T{i % 24:02d}:00:00Z", "total": i})
                for i in range(20)
            ),
        )
        defs = write_defs(root, es.url, uuid.uuid4().hex[:8])
        with running_dagster_dev(root, ES_MYSQL_PIPELINE_DEFS=str(defs)) as server:
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
    assert groups == {p: {f"{p}/{s}" for s in STEPS} for p in PIPELINES}
    nodes = {"/".join(n["assetKey"]["path"]): n for n in repo["assetNodes"]}
    assert set(nodes) == {f"{p}/{s}" for p in PIPELINES for s in STEPS}
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
        "pipeline_metrics_sensor": "STANDARD",
    }


def wait_loaded_in_browser(page: Page) -> None:
    """The UI has its own view of the workspace: a page can still say "Loading
    es_mysql_pipeline.definitions…" after GraphQL reported the location loaded (issue 27
    item 8). Wait for that to go, reloading now and then, within the start timeout."""
    from playwright.sync_api import expect

    loading = page.get_by_text(re.compile(r"^Loading .*definitions"))
    deadline = time.monotonic() + START_TIMEOUT
    while loading.count() and time.monotonic() < deadline:
        page.wait_for_timeout(1000)
        if loading.count():
            page.reload()
    expect(loading).to_have_count(0)


def test_asset_graph_shows_three_groups(
    pipelines_dev: DagsterDev, chromium: str, artifacts: Path
) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect, sync_playwright

    from es_mysql_pipeline_tests.e2e.test_ui import CHROMIUM_ARGS

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(
                base_url=pipelines_dev.url, viewport={"width": 1400, "height": 900}
            )
            context.set_default_timeout(30 * MS)
            page = context.new_page()
            page.add_locator_handler(
                page.get_by_role("button", name="Skip", exact=True), lambda btn: btn.click()
            )
            page.goto("/asset-groups")
            wait_loaded_in_browser(page)
            # The first-visit modal comes up a moment after the page: wait for it (when it
            # comes), dismiss it, so that it does not cover the graph in the screenshot.
            skip = page.get_by_role("button", name="Skip", exact=True)
            with contextlib.suppress(PlaywrightTimeout):
                skip.wait_for(timeout=8 * MS)
                skip.click()
            expect(page.get_by_role("dialog")).to_have_count(0)
            # Each group is in the sidebar and a node of the graph (collapsed: its name and
            # its 3 assets).
            for group in PIPELINES:
                names = page.get_by_text(group, exact=True)
                expect(names.first).to_be_visible()
                expect(names.last).to_be_visible()
            page.wait_for_timeout(1500)  # let the graph settle after zoom-to-fit
            page.screenshot(path=str(artifacts / "ui-three-pipelines.png"))
        finally:
            browser.close()
