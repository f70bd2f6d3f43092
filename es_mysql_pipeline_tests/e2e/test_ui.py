"""The Dagster UI as a person uses it, in headless Chromium: graph, one partition, a backfill.

Every launch goes through the daily job's asset graph and its **Materialize all…** dialog;
every outcome is read from the UI and then checked against the SQLite sink, row by row,
against the sample CSV.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from playwright.sync_api import Browser, Page, expect

from es_mysql_pipeline_tests.e2e.conftest import (
    BACKFILL_TIMEOUT,
    LOCATION,
    MS,
    REPO,
    RUN_TIMEOUT,
    browser_page,
    expected_rows,
    goto,
)

if TYPE_CHECKING:
    from es_mysql_pipeline_tests.e2e.conftest import DagsterDev

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ASSETS = ("raw_records", "clean_records", "loaded_records")
GROUP_PATH = f"/locations/{LOCATION}/asset-groups/records_pipeline"
#: The daily job's graph: its three assets (the group also holds the unplaced count,
#: which a partition's launch should not re-read).
JOB_PATH = f"/locations/{LOCATION}/jobs/records_job"
DOCS_SCREENSHOT = REPO / "docs" / "asset-graph.png"
#: Set to 1 to refresh the README's screenshot (it is otherwise only written when missing).
UPDATE_DOCS_ENV = "UPDATE_DOCS_SCREENSHOT"


@pytest.fixture
def page(
    browser: Browser, server: DagsterDev, artifacts: Path, request: pytest.FixtureRequest
) -> Iterator[Page]:
    """A fresh page on the server; its last state is saved as a screenshot either way."""
    with browser_page(browser, server, artifacts / f"{request.node.name}-last.png") as pg:
        yield pg


def open_asset_graph(page: Page) -> None:
    goto(page, GROUP_PATH)
    for name in ASSETS:
        expect(page.get_by_text(name, exact=True).first).to_be_visible()


def launch_from_graph(page: Page, selection: str) -> str:
    """The job's graph: Materialize all… → all partitions → type ``selection`` → launch;
    the toast's link."""
    goto(page, JOB_PATH)
    expect(page.get_by_text("View 3 assets")).to_be_visible()
    page.get_by_role("button", name="Materialize all…").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_text("Launch runs to materialize 3 assets")).to_be_visible()
    # The sample's days are older than the default "last 90 days" window.
    dialog.get_by_role("button", name="Show all partitions").click()
    box = dialog.locator("input[type=text]")
    box.fill(selection)
    box.press("Enter")
    launch = dialog.get_by_role("button", name=re.compile(r"^Launch (1 run|backfill)$"))
    expect(launch).to_be_enabled()
    launch.click()
    link = page.locator("a[href^='/runs/']", has_text=re.compile(r"^View$"))
    expect(link.first).to_be_visible(timeout=30 * MS)
    href = link.first.get_attribute("href")
    assert href, "the launch toast has no link"
    return href


def test_asset_graph_shows_the_three_assets(page: Page, artifacts: Path) -> None:
    open_asset_graph(page)
    expect(page.get_by_text("records_pipeline").first).to_be_visible()
    expect(page.get_by_role("button", name="Materialize all…")).to_be_visible()
    # The asset check is listed on loaded_records' node, once the node's live data arrives
    # (on a loaded CI machine it showed no check status past the default 5 s).
    passed = page.get_by_text(re.compile(r"^\d+ / 1 Passed$")).first
    expect(passed).to_be_visible(timeout=30 * MS)
    page.screenshot(path=str(artifacts / "ui-asset-graph.png"))


def test_materialize_one_partition_from_the_ui(
    page: Page, server: DagsterDev, artifacts: Path
) -> None:
    href = launch_from_graph(page, "2024-01-02")
    assert re.fullmatch(r"/runs/[0-9a-f-]{36}", href), href
    goto(page, href)
    expect(page.get_by_text("partition: 2024-01-02").first).to_be_visible()
    status = page.get_by_text(re.compile(r"^(Success|Failure|Canceled)$")).first
    expect(status).to_be_visible(timeout=RUN_TIMEOUT * MS)
    page.screenshot(path=str(artifacts / "ui-partition-run.png"))
    assert status.inner_text() == "Success", server.log_tail()

    loaded = server.assert_sink_holds_exactly({"2024-01-02"})
    assert loaded == len(expected_rows({"2024-01-02"})) > 0

    # The partition and its load metadata are visible on the asset's page.
    goto(page, "/assets/loaded_records?view=partitions&partition=2024-01-02")
    run_id = href.rsplit("/", 1)[-1]
    expect(page.get_by_text("Latest materialization")).to_be_visible()
    expect(page.locator(f"a[href^='/runs/{run_id}']").first).to_be_visible()
    for label in ("inserted", "rows_per_second", "dead_letter_path", "duration_seconds"):
        expect(page.get_by_text(label, exact=True).first).to_be_visible()
    inserted = page.get_by_text("inserted", exact=True).first.locator("xpath=ancestor::tr[1]")
    expect(inserted).to_contain_text(str(loaded))
    page.screenshot(path=str(artifacts / "ui-partition-metadata.png"))


def test_backfill_three_days_from_the_ui_runs_once(
    page: Page, server: DagsterDev, artifacts: Path
) -> None:
    days = {"2024-01-03", "2024-01-04", "2024-01-05"}
    href = launch_from_graph(page, "[2024-01-03...2024-01-05]")
    assert re.fullmatch(r"/runs/b/\w+", href), href
    goto(page, href)
    expect(page.get_by_text("3 partitions", exact=True).first).to_be_visible()
    status = page.locator("xpath=//div[text()='Status']/following-sibling::div[1]")
    # The page refreshes itself; wait for a final state (the daemon ticks every 30 s).
    expect(status).to_have_text(
        re.compile(r"^(?!In progress|Requested|Canceling).+"), timeout=BACKFILL_TIMEOUT * MS
    )
    page.screenshot(path=str(artifacts / "ui-backfill.png"))
    assert status.inner_text().strip() == "Succeeded", server.log_tail()
    # The job's outcome: all three partitions done.
    expect(page.get_by_text("100% completed")).to_have_count(1)

    server.assert_sink_holds_exactly(days)

    # Single-run backfill policy: the three days were loaded by exactly one run.
    goto(page, f"{href}?tab=runs")
    runs = page.locator("a[href^='/runs/']").filter(has_text=re.compile(r"^[0-9a-f]{8}$"))
    expect(runs.first).to_be_visible()
    expect(runs).to_have_count(1)
    page.screenshot(path=str(artifacts / "ui-backfill-runs.png"))

    save_asset_graph_screenshot(page, artifacts)


def save_asset_graph_screenshot(page: Page, artifacts: Path) -> None:
    """A small asset-graph picture for the README (written when missing or asked for)."""
    page.set_viewport_size({"width": 1100, "height": 600})
    open_asset_graph(page)
    expect(page.get_by_text(re.compile(r"^1 / 1 Passed$")).first).to_be_visible()
    page.wait_for_timeout(1500)  # let the graph settle after zoom-to-fit
    shot = artifacts / "asset-graph.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size < 150_000, f"{shot} is {shot.stat().st_size} bytes"
    if os.environ.get(UPDATE_DOCS_ENV) == "1" or not DOCS_SCREENSHOT.exists():
        DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, DOCS_SCREENSHOT)
