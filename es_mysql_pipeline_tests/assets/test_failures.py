"""The assets' RetryPolicy retries connection-class faults only; the rest fail at once."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from es_mysql_pipeline.assets import build_assets
from es_mysql_pipeline.assets import failures as retry
from es_mysql_pipeline.errors import ConfigError
from es_mysql_pipeline.resources.sources import FileSource
from es_mysql_pipeline_tests.helpers import make_resources, run_unpartitioned
from es_mysql_pipeline_tests.support.failures import step_failure_message

CSV = "id,timestamp,msg\ne1,2024-01-01T00:00:00Z,one\n"


class _FailingSource(FileSource):
    """A CSV source whose check raises the exception class named by ``fault``."""

    fault: str

    def check(self) -> None:
        if self.fault == "assertion":
            raise AssertionError("daemonic processes are not allowed to have children")
        if self.fault == "value":
            raise ValueError("a bug")
        if self.fault == "connection":
            raise ConnectionResetError("connection reset by peer")
        raise ConfigError("ES_INDEX: index 'x' does not exist")


def _attempts(result: dg.ExecuteInProcessResult, step: str) -> int:
    starts = [
        e
        for e in result.all_events
        if e.step_key == step
        and e.event_type in (dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_RESTARTED)
    ]
    return len(starts)


def _run(tmp_path: Path, fault: str) -> dg.ExecuteInProcessResult:
    src = tmp_path / "in.csv"
    src.write_text(CSV, encoding="utf-8")
    resources = make_resources(str(tmp_path), source=_FailingSource(path=str(src), fault=fault))
    return run_unpartitioned(resources)


@pytest.mark.parametrize("fault", ["assertion", "value", "config"])
def test_deterministic_errors_fail_at_once_with_their_message(tmp_path: Path, fault: str) -> None:
    result = _run(tmp_path, fault)
    assert not result.success
    assert _attempts(result, "raw_records") == 1
    failure = result.failure_data_for_node("raw_records")
    assert failure is not None
    text = str(failure.error.message if failure.error else "")
    assert {"assertion": "daemonic", "value": "a bug", "config": "ES_INDEX"}[fault] in text


@pytest.mark.slow  # the policy's own backoff: about 2 s + 4 s
def test_connection_errors_are_retried_by_the_policy(tmp_path: Path) -> None:
    result = _run(tmp_path, "connection")
    assert not result.success
    assert _attempts(result, "raw_records") == 1 + retry.RETRY.max_retries


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (ConnectionRefusedError("refused"), True),
        (TimeoutError("timed out"), True),
        (TimeoutError("timed out"), True),
        (FileNotFoundError("no such file"), False),
        (PermissionError("denied"), False),
        (AssertionError("daemonic processes are not allowed to have children"), False),
        (KeyError("id"), False),
        (ValueError("bad"), False),
    ],
)
def test_is_transient_by_class(exc: BaseException, transient: bool) -> None:
    assert retry.is_transient(exc) is transient


def test_is_transient_follows_the_cause_chain() -> None:
    class OperationalError(Exception):  # the name SQLAlchemy and the DBAPIs use
        pass

    try:
        try:
            raise OperationalError("(2013, 'Lost connection to MySQL server during query')")
        except OperationalError as inner:
            raise RuntimeError("write failed") from inner
    except RuntimeError as outer:
        assert retry.is_transient(outer)


def test_a_window_with_a_start_but_no_end_fails_at_once_as_a_setting(tmp_path: Path) -> None:
    """A run configured in the launchpad with ``start`` alone: one line naming the setting,
    marked a config error, not retried (it would fail the same way again)."""
    src = tmp_path / "in.csv"
    src.write_text(CSV, encoding="utf-8")
    result = dg.materialize(
        build_assets(None),
        resources=make_resources(str(tmp_path), source=FileSource(path=str(src))),
        run_config={"ops": {"raw_records": {"config": {"start": "2024-01-01"}}}},
        raise_on_error=False,
    )
    assert not result.success
    assert _attempts(result, "raw_records") == 1
    assert step_failure_message(result) == "config start/end: give both (YYYY-MM-DD), or neither"
    (failure,) = result.get_step_failure_events()
    user = failure.step_failure_data.user_failure_data
    assert user is not None and user.metadata["error_kind"].value == "config"
