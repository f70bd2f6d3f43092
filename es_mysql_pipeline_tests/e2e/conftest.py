"""A real ``dagster dev`` (webserver + daemon) for the end-to-end tests, and what they check.

One server per session: it starts on a free 127.0.0.1 port with a temporary ``DAGSTER_HOME``
and a temporary ``ES_MYSQL_PIPELINE_DATA`` (the SQLite sink), and its whole process group is
killed afterwards. Each test empties the sink first, so "exactly these days" is exact.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
import sqlalchemy as sa

from es_mysql_pipeline.records import parse_timestamp
from es_mysql_pipeline_tests.conftest import need_service
from es_mysql_pipeline_tests.helpers import table_rows
from es_mysql_pipeline_tests.support.ports import free_port
from es_mysql_pipeline_tests.support.sample import expected_rows

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO / "artifacts"
LOCATION = "es_mysql_pipeline.definitions"
TABLE = "records"
#: Bounds on every wait; generous for a loaded CI box, still far below pytest's patience.
START_TIMEOUT = 120.0
RUN_TIMEOUT = 120.0
#: The backfill daemon loops every 30 s: pick-up, run, then completion on a later tick.
BACKFILL_TIMEOUT = 150.0
#: Variables that would point the server at another source, sink or gateway.
_FOREIGN_ENV = (
    "DB_URL",
    "DB_TABLE",
    "DB_PASSWORD",
    "WRITE_MODE",
    "CSV_FILE",
    "OUTPUT_DIR",
    "STAGING_PATH",
    "PIPELINE_ID",
    "PUSHGATEWAY_URL",
    "ES_MYSQL_PIPELINE_START_DATE",
    "ES_MYSQL_PIPELINE_END_DATE",
    "ES_MYSQL_PIPELINE_ENV",
    "ES_MYSQL_PIPELINE_DEFS",
)

#: Debian's Chromium, headless, with nothing that phones home.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MS = 1000
T = TypeVar("T")

_DAGSTER_YAML = """\
telemetry:
  enabled: false
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1
"""

_READY_QUERY = """
{
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries { name loadStatus locationOrLoadError { __typename } }
    }
  }
  instance { daemonHealth { allDaemonStatuses { daemonType healthy } } }
}
"""


@dataclass(frozen=True)
class DagsterDev:
    """A running ``dagster dev`` and the SQLite sink its runs load into."""

    host: str
    port: int
    home: Path
    data: Path
    log: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def sink_url(self) -> str:
        return f"sqlite:///{self.data / 'es_mysql_pipeline.sqlite'}"

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST a GraphQL query; raise on transport or GraphQL errors."""
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        req = urllib.request.Request(
            f"{self.url}/graphql", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            payload: dict[str, Any] = json.load(resp)
        if payload.get("errors"):
            raise AssertionError(f"GraphQL errors: {payload['errors']}")
        data: dict[str, Any] = payload["data"]
        return data

    def clear_sink(self) -> None:
        """Delete every row from the sink table (if a run created it already)."""
        engine = sa.create_engine(self.sink_url)
        try:
            with engine.begin() as conn:
                if sa.inspect(conn).has_table(TABLE):
                    conn.execute(sa.text(f"DELETE FROM {TABLE}"))
        finally:
            engine.dispose()

    def assert_sink_holds_exactly(self, days: set[str]) -> int:
        """The sink holds the sample's good rows of ``days``, byte for byte, and nothing else."""
        expected = expected_rows(days)
        assert expected, f"the sample has no rows for {sorted(days)}"
        actual = table_rows(self.sink_url, TABLE)
        extra = sorted(set(actual) - set(expected))
        missing = sorted(set(expected) - set(actual))
        assert not extra and not missing, (
            f"sink vs sample for {sorted(days)}: {len(extra)} unexpected ids "
            f"(e.g. {extra[:3]}), {len(missing)} missing (e.g. {missing[:3]})"
        )
        for rid, src in expected.items():
            got = actual[rid]
            for key, value in src.items():
                if key == "timestamp":
                    assert got[key] == parse_timestamp(value).replace(tzinfo=None), rid
                else:
                    assert got[key] == value, (rid, key)
        return len(actual)

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Until GraphQL says the code location is LOADED and the daemons are healthy: a
        browser test asserts nothing before (a reload of the location may be under way)."""
        deadline = time.monotonic() + timeout
        reason = _not_ready_reason(self)
        while reason is not None:
            if time.monotonic() > deadline:
                pytest.fail(f"dagster dev not ready after {timeout:.0f}s ({reason})")
            time.sleep(1.0)
            reason = _not_ready_reason(self)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _not_ready_reason(server: DagsterDev) -> str | None:
    """Why the server cannot take runs and backfills yet, or None when it can."""
    try:
        data = server.graphql(_READY_QUERY)
    except (OSError, urllib.error.URLError, AssertionError, ValueError) as exc:
        return f"webserver not answering: {exc.__class__.__name__}: {exc}"
    entries = data["workspaceOrError"].get("locationEntries") or []
    loaded = [
        e
        for e in entries
        if e["name"] == LOCATION
        and e["loadStatus"] == "LOADED"
        and (e["locationOrLoadError"] or {}).get("__typename") == "RepositoryLocation"
    ]
    if not loaded:
        return f"code location not loaded: {entries}"
    daemons = {
        d["daemonType"]: d["healthy"] for d in data["instance"]["daemonHealth"]["allDaemonStatuses"]
    }
    if not (daemons.get("BACKFILL") and daemons.get("QUEUED_RUN_COORDINATOR")):
        return f"daemons not healthy yet: {daemons}"
    return None


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the whole process group, then SIGKILL whatever is left after a grace period."""
    pgid = proc.pid  # start_new_session=True: the leader's pid is the group id
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0)):
        if not _group_alive(pgid):
            break
        os.killpg(pgid, sig)
        deadline = time.monotonic() + grace
        while _group_alive(pgid) and time.monotonic() < deadline:
            proc.poll()  # reap the leader so it does not linger as a zombie
            time.sleep(0.2)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


@contextlib.contextmanager
def running_dagster_dev(root: Path, **env_vars: str) -> Iterator[DagsterDev]:
    """``dagster dev -w workspace.yaml`` on a free port with ``env_vars``, ready for runs
    and backfills: the code location has finished loading (GraphQL says so) and the
    daemons are healthy."""
    home, data = root / "dagster_home", root / "data"
    home.mkdir(exist_ok=True)
    data.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text(_DAGSTER_YAML)
    server = DagsterDev("127.0.0.1", free_port(), home, data, root / "dagster-dev.log")
    env = {k: v for k, v in os.environ.items() if k not in _FOREIGN_ENV}
    env.update(
        DAGSTER_HOME=str(home),
        ES_MYSQL_PIPELINE_DATA=str(data),
        ES_MYSQL_PIPELINE_SCRATCH=str(root / "scratch"),
        PYTHONUNBUFFERED="1",
        **env_vars,
    )
    cmd = [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml"]
    cmd += ["-h", server.host, "-p", str(server.port)]
    with open(server.log, "wb") as log:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        reason: str | None = "not polled yet"
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"dagster dev exited with {proc.returncode}:\n{server.log_tail()}")
            reason = _not_ready_reason(server)
            if reason is None:
                break
            time.sleep(1.0)
        else:
            pytest.fail(
                f"dagster dev not ready after {START_TIMEOUT:.0f}s ({reason}):\n{server.log_tail()}"
            )
        yield server
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def dagster_dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterDev]:
    """The environment-variable deployment (``ES_MYSQL_PIPELINE_ENV=local``): one pipeline."""
    with running_dagster_dev(
        tmp_path_factory.mktemp("dagster_dev"), ES_MYSQL_PIPELINE_ENV="local"
    ) as server:
        yield server


@pytest.fixture
def server(dagster_dev: DagsterDev) -> DagsterDev:
    """The session's server with an empty sink, so each test sees only its own days."""
    dagster_dev.clear_sink()
    return dagster_dev


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium: skipped locally when missing, a failure under ``CI=true``."""
    if not os.access(CHROMIUM, os.X_OK):
        need_service(f"{CHROMIUM} not installed (apt-get install chromium); no browser download")
    return CHROMIUM


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where screenshots go (git-ignored)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def poll(what: str, timeout: float, fetch: Callable[[], T], done: Callable[[T], bool]) -> T:
    """Call ``fetch`` until ``done`` says so, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    value = fetch()
    while not done(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still {value!r} after {timeout:.0f}s")
        time.sleep(1.0)
        value = fetch()
    return value


def wait_loaded_in_browser(page: Page, timeout: float = START_TIMEOUT) -> None:
    """The UI has its own view of the workspace: a page can still say "Loading
    es_mysql_pipeline.definitions…" after GraphQL reported the location loaded (issue 27
    item 8). Wait for that to go, reloading now and then, so that a page still loading
    never fails a test."""
    from playwright.sync_api import expect

    loading = page.get_by_text(re.compile(r"Loading .*definitions"))
    page.wait_for_load_state("domcontentloaded")
    deadline = time.monotonic() + timeout
    while loading.count() and time.monotonic() < deadline:
        page.wait_for_timeout(1000)
        if loading.count():
            page.reload()
    expect(loading).to_have_count(0)


def goto(page: Page, path: str) -> None:
    """Open ``path`` and wait out the page's own "Loading …definitions" (the test's
    fixture has waited for GraphQL to report the location loaded)."""
    page.goto(path)
    wait_loaded_in_browser(page)


@pytest.fixture(scope="session")
def browser(chromium: str) -> Iterator[Browser]:
    """Debian's Chromium through Playwright; never a downloaded browser."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@contextlib.contextmanager
def browser_page(browser: Browser, server: DagsterDev, last_shot: Path) -> Iterator[Page]:
    """A fresh page on ``server`` once its code location is loaded (GraphQL); the page's
    last state is saved to ``last_shot`` either way."""
    server.wait_ready()
    # the instance's "seen" flag for the first-visit community modal, which would
    # otherwise cover whatever page comes up first
    server.graphql("mutation SetNuxSeen { setNuxSeen }")
    context = browser.new_context(base_url=server.url, viewport={"width": 1400, "height": 900})
    context.set_default_timeout(30 * MS)
    page = context.new_page()
    # The first-visit "Join the Dagster community" modal covers the page: dismiss it whenever.
    page.add_locator_handler(
        page.get_by_role("button", name="Skip", exact=True), lambda btn: btn.click()
    )
    try:
        yield page
    finally:
        try:
            page.screenshot(path=str(last_shot), full_page=True)
        finally:
            context.close()
