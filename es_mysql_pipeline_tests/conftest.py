"""Shared fixtures for real services. Locally a missing service skips with its reason;
under ``CI=true`` it fails, so CI never goes green by skipping."""

from __future__ import annotations

import importlib
import os
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa

from es_mysql_pipeline_tests.support.mysql import MYSQL_URL, drop_table, engine_for

if TYPE_CHECKING:
    import dagster as dg

pytest_plugins = [
    "es_mysql_pipeline_tests.fixtures.es",
    "es_mysql_pipeline_tests.fixtures.prometheus",
]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need_service(reason: str) -> None:
    """Skip locally, fail in CI."""
    if IN_CI:
        pytest.fail(f"required service missing under CI=true: {reason}")
    pytest.skip(reason)


def need_module(name: str, why: str) -> Any:
    """Import ``name``; skip locally, fail in CI when it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        need_service(f"{name} is not installed: {why}")


@pytest.fixture(scope="session")
def mysql_url() -> str:
    """The MariaDB test database (root, empty password, database ``test``)."""
    try:
        with engine_for(MYSQL_URL) as engine, engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        need_service(f"MariaDB not reachable at {MYSQL_URL}: {exc.__class__.__name__}")
    return MYSQL_URL


@pytest.fixture
def mysql_table(mysql_url: str) -> Iterator[str]:
    """A fresh table name in the test database, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    drop_table(mysql_url, name)


@pytest.fixture
def sqlite_url(tmp_path: os.PathLike[str]) -> str:
    return f"sqlite:///{os.path.join(str(tmp_path), 'test.sqlite')}"


@pytest.fixture(params=["sqlite", "mysql"])
def sql_target(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> Iterator[str]:
    """Run a test against SQLite and against MariaDB; yields the URL (table: ``records_t``)."""
    if request.param == "sqlite":
        yield f"sqlite:///{os.path.join(str(tmp_path), 'test.sqlite')}"
        return
    url = request.getfixturevalue("mysql_url")
    table = request.getfixturevalue("mysql_table")
    yield f"{url}#{table}"


def split_target(target: str) -> tuple[str, str]:
    """``url#table`` → (url, table); SQLite targets use table ``records``."""
    url, _, table = target.partition("#")
    return url, table or "records"


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    """A Dagster instance of its own (temporary storage) for runs and sensor ticks."""
    import dagster as dg  # here: most tests never need Dagster loaded

    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture(autouse=True)
def _isolated_scratch(tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Stages and dead letters of one test never meet another's."""
    monkeypatch.setenv("ES_MYSQL_PIPELINE_SCRATCH", os.path.join(str(tmp_path), "scratch"))


#: Modules that share one session-scoped server: on one xdist worker it starts once.
_SHARED_GROUPS = {
    "es_mysql_pipeline_tests/e2e/test_ui.py": "dagster_dev",
    "es_mysql_pipeline_tests/e2e/test_graphql.py": "dagster_dev",
}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``pytest -n N --dist loadgroup`` (``make test``): each module runs whole on one
    worker, so its module-scoped servers start once, and the modules with slow tests are
    handed out first, so no long module starts last while the other worker idles."""
    if not config.pluginmanager.hasplugin("xdist") or config.getoption("dist", "no") != "loadgroup":
        return
    slow_modules = {item.nodeid.split("::")[0] for item in items if item.get_closest_marker("slow")}
    for item in items:
        module = item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(_SHARED_GROUPS.get(module, module)))
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in slow_modules)
