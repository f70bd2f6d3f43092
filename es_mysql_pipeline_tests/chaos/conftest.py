"""Chaos fixtures: MariaDB is always running again after a scenario, source files are
generated once per session. Each test module sets ``pytestmark = [chaos, integration]``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from es_mysql_pipeline_tests.chaos import common


@pytest.fixture(scope="session", autouse=True)
def _mariadb_back_at_the_end() -> Iterator[None]:
    """Whatever a scenario did to the server, the session ends with MariaDB answering."""
    yield
    common.ensure_mariadb()


@pytest.fixture
def mariadb_restartable(mysql_url: str) -> Iterator[None]:
    """For tests that stop the server: it is started again even when the test fails."""
    try:
        yield
    finally:
        common.ensure_mariadb()


@pytest.fixture
def chaos_table(mysql_url: str) -> Iterator[str]:
    """A fresh table, dropped afterwards (after making sure the server is up)."""
    import uuid

    name = f"chaos_{uuid.uuid4().hex[:10]}"
    yield name
    common.ensure_mariadb()
    common.drop_table(name)


@pytest.fixture(scope="session")
def csv_factory(tmp_path_factory: pytest.TempPathFactory) -> CsvFactory:
    return CsvFactory(tmp_path_factory.mktemp("chaos-sources"))


class CsvFactory:
    """``csv_factory(rows, days, shuffle_ids=False)`` -> a cached source CSV path."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cache: dict[tuple[int, int, bool], Path] = {}

    def __call__(self, rows: int, days: int, shuffle_ids: bool = False) -> Path:
        key = (rows, days, shuffle_ids)
        if key not in self.cache:
            path = self.root / f"events-{rows}-{days}-{int(shuffle_ids)}.csv"
            self.cache[key] = common.write_events_csv(path, rows, days, shuffle_ids)
        return self.cache[key]


@pytest.fixture(scope="module")
def private_mariadb(
    mysql_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[common.PrivateMariaDB]:
    """A MariaDB of this module's own, to stop and kill; removed afterwards."""
    server = common.PrivateMariaDB(tmp_path_factory.mktemp("mariadb"))
    try:
        server.install()
        server.start()
    except Exception as exc:  # no mariadb-install-db: say why
        server.close()
        from es_mysql_pipeline_tests.conftest import need_service

        need_service(f"cannot create a private MariaDB: {exc}")
    try:
        yield server
    finally:
        server.close()
