"""The UI's flows through Dagster's GraphQL API (``DagsterGraphQLClient``) on a live server.

A partition run of ``records_job`` and a three-day backfill of it, each checked in the sink.
Runs here use the in-process executor (run config) to be quick; the browser test keeps the
defaults a person gets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from dagster import DagsterRunStatus
from dagster_graphql import DagsterGraphQLClient

from es_mysql_pipeline_tests.e2e.conftest import BACKFILL_TIMEOUT, LOCATION, RUN_TIMEOUT, poll
from es_mysql_pipeline_tests.support.sample import expected_rows

if TYPE_CHECKING:
    from es_mysql_pipeline_tests.e2e.conftest import DagsterDev

pytestmark = [pytest.mark.slow]

JOB = "records_job"
REPOSITORY = "__repository__"
IN_PROCESS: dict[str, Any] = {"execution": {"config": {"in_process": {}}}}
ASSETS = {"raw_records", "clean_records", "loaded_records"}
FINISHED_RUN = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
FINISHED_BACKFILL = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}

RUN_EVENTS = """
query RunEvents($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run {
      status
      tags { key value }
      eventConnection(afterCursor: null) {
        events {
          __typename
          ... on MaterializationEvent {
            assetKey { path }
            partition
            metadataEntries { label ... on IntMetadataEntry { intValue } }
          }
          ... on AssetCheckEvaluationEvent { evaluation { checkName success } }
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
    ... on PythonError { message stack }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { invalidOutputName }
    ... on PartitionSetNotFoundError { message }
    ... on UnauthorizedError { message }
  }
}
"""

BACKFILL_STATUS = """
query BackfillStatus($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      status
      partitionNames
      error { message }
      runs { id status tags { key value } }
    }
    ... on PythonError { message }
  }
}
"""


@pytest.fixture
def client(server: DagsterDev) -> DagsterGraphQLClient:
    return DagsterGraphQLClient(server.host, port_number=server.port, timeout=60)


def run_events(client: DagsterGraphQLClient, run_id: str) -> dict[str, Any]:
    run: dict[str, Any] = client._execute(RUN_EVENTS, {"runId": run_id})["runOrError"]
    assert run["__typename"] == "Run", run
    return run


def assert_run_loaded(client: DagsterGraphQLClient, run_id: str, days: list[str]) -> None:
    """All three assets materialized for ``days`` in this one run, and the check passed."""
    run = run_events(client, run_id)
    events = run["eventConnection"]["events"]
    materialized = {
        ("/".join(e["assetKey"]["path"]), e["partition"])
        for e in events
        if e["__typename"] == "MaterializationEvent"
    }
    assert materialized == {(a, d) for a in ASSETS for d in days}, materialized
    checks = [e["evaluation"] for e in events if e["__typename"] == "AssetCheckEvaluationEvent"]
    assert checks and all(c["checkName"] == "rows_reconciled" and c["success"] for c in checks)


def test_partition_run_through_graphql(client: DagsterGraphQLClient, server: DagsterDev) -> None:
    run_id = client.submit_job_execution(
        JOB,
        repository_location_name=LOCATION,
        repository_name=REPOSITORY,
        run_config=IN_PROCESS,
        tags={"dagster/partition": "2024-01-01"},
    )
    status = poll(
        f"run {run_id}",
        RUN_TIMEOUT,
        lambda: client.get_run_status(run_id),
        lambda s: s in FINISHED_RUN,
    )
    assert status == DagsterRunStatus.SUCCESS, server.log_tail()
    assert_run_loaded(client, run_id, ["2024-01-01"])
    server.assert_sink_holds_exactly({"2024-01-01"})


def test_three_day_backfill_through_graphql_is_one_run(
    client: DagsterGraphQLClient, server: DagsterDev
) -> None:
    days = ["2024-01-02", "2024-01-03", "2024-01-04"]
    params = {
        "selector": {
            "partitionSetName": f"{JOB}_partition_set",
            "repositorySelector": {
                "repositoryLocationName": LOCATION,
                "repositoryName": REPOSITORY,
            },
        },
        "partitionNames": days,
        "runConfigData": IN_PROCESS,
        "title": "e2e graphql backfill",
    }
    launched = client._execute(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]

    def fetch() -> dict[str, Any]:
        result: dict[str, Any] = client._execute(BACKFILL_STATUS, {"id": backfill_id})
        return result["partitionBackfillOrError"]

    backfill = poll(
        f"backfill {backfill_id}",
        BACKFILL_TIMEOUT,
        fetch,
        lambda b: b.get("status") in FINISHED_BACKFILL,
    )
    assert backfill["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), (backfill, server.log_tail())
    assert sorted(backfill["partitionNames"]) == days

    # Single-run backfill policy: one run over the range, not one per day.
    (run,) = backfill["runs"]
    assert run["status"] == "SUCCESS", run
    tags = {t["key"]: t["value"] for t in run["tags"]}
    assert tags["dagster/asset_partition_range_start"] == days[0], tags
    assert tags["dagster/asset_partition_range_end"] == days[-1], tags
    assert tags["dagster/backfill"] == backfill_id, tags
    assert_run_loaded(client, run["id"], days)
    server.assert_sink_holds_exactly(set(days))
    # What the asset's partitions page shows: each day its own rows; the run's counts once
    loads = [
        e
        for e in run_events(client, run["id"])["eventConnection"]["events"]
        if e["__typename"] == "MaterializationEvent" and e["assetKey"]["path"] == ["loaded_records"]
    ]
    entries = {
        e["partition"]: {m["label"]: m.get("intValue") for m in e["metadataEntries"]} for e in loads
    }
    assert {d: m["dagster/row_count"] for d, m in entries.items()} == {
        d: len(expected_rows({d})) for d in days
    }
    assert [d for d, m in entries.items() if "processed" in m] == [days[0]]
