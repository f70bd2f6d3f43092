"""Reading a finished run back: a step's metadata, and the one line its failure is told in."""

from __future__ import annotations

import dagster as dg

from es_mysql_pipeline.cli.report import failure_message, step_metadata


class DriverError(Exception):
    """What a library raises deep down."""


@dg.asset
def counted() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"records_processed": 3})


@dg.asset
def crashes() -> None:
    try:
        raise DriverError("first line\nthe last line says why")
    except DriverError as exc:
        raise RuntimeError("wrapped by the step") from exc


def test_metadata_of_a_step_and_of_one_that_did_not_run() -> None:
    result = dg.materialize([counted])
    assert step_metadata(result, "counted") == {"records_processed": 3}
    assert step_metadata(result, "loaded_records") == {}


def test_an_unexpected_error_is_told_by_the_last_line_of_its_innermost_cause() -> None:
    result = dg.materialize([crashes], raise_on_error=False)
    assert not result.success
    assert failure_message(result) == ("the last line says why", False)


def test_a_run_without_a_failed_step_still_gets_a_message() -> None:
    result = dg.materialize([counted])
    assert failure_message(result) == ("the run failed", False)
