"""The stages of a YAML pipeline (run-scoped): one per run, the finished runs' replaced, a
running run's kept, and a step whose upstream never ran refused in one line."""

from __future__ import annotations

import threading
from pathlib import Path

import dagster as dg
import pytest

from es_mysql_pipeline.component import PipelinePlan, find_pipeline
from es_mysql_pipeline.metrics.pushgateway import PushgatewayResource
from es_mysql_pipeline_tests.helpers import event_rows, write_csv
from es_mysql_pipeline_tests.support.failures import step_failure_message

DAY = "2024-03-01"
YAML = """\
type: es_mysql_pipeline.EsMysqlPipelines
attributes:
  data_dir: {data}
  pipelines:
    - name: events
      source: {{path: {csv}}}
      sink: {{sqlite: {db}, table: events}}
      partitions: {partitions}
      settings: {{analyzer: "es_mysql_pipeline_tests.test_io_manager:held_analyzer"}}
"""


def pipeline(tmp_path: Path, partitions: str) -> PipelinePlan:
    csv = write_csv(tmp_path / "in.csv", event_rows(5, day=DAY))
    text = YAML.format(
        data=tmp_path / "data", csv=csv, db=tmp_path / "db.sqlite", partitions=partitions
    )
    (tmp_path / "defs.yaml").write_text(text, encoding="utf-8")
    return find_pipeline(tmp_path / "defs.yaml", "events")


def materialize(
    plan: PipelinePlan,
    instance: dg.DagsterInstance,
    partition: str | None = None,
    selection: list[str] | None = None,
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        plan.assets(),
        selection=[dg.AssetKey(["events", s]) for s in selection] if selection else None,
        resources={**plan.resources(), "pushgateway": PushgatewayResource()},
        partition_key=partition,
        instance=instance,
        raise_on_error=False,
    )


def stages(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


#: Set by a test: the analyzer of a run in another thread says it is in its transform
#: (``ENTERED``), then waits on ``HOLD``: a run in progress, doing nothing in between.
HOLD: threading.Event | None = None
ENTERED = threading.Event()


def held_analyzer(row: dict[str, object]) -> dict[str, object]:
    if HOLD is not None and threading.current_thread() is not threading.main_thread():
        ENTERED.set()
        assert HOLD.wait(30), "never released"
    return {}


def test_an_unpartitioned_pipeline_stages_per_run_and_keeps_the_last(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    plan = pipeline(tmp_path, "{type: none}")
    folder = tmp_path / "data" / "staging" / "events" / "raw" / "all"
    first = materialize(plan, instance)
    assert first.success
    assert stages(folder) == [f"{first.run_id}.stage", f"{first.run_id}.stage.meta.json"]
    second = materialize(plan, instance)
    assert second.success
    assert stages(folder) == [f"{second.run_id}.stage", f"{second.run_id}.stage.meta.json"]


def test_a_load_of_a_day_never_fetched_fails_naming_the_upstream(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    plan = pipeline(tmp_path, "{type: daily, start: '2024-03-01'}")
    result = materialize(plan, instance, DAY, selection=["loaded"])
    assert not result.success
    restarts = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_RESTARTED]
    assert restarts == []  # not retried: it would fail the same way again
    message = step_failure_message(result)
    assert "events/clean/2024-03-01" in message
    assert message.endswith(
        "is missing or incomplete (no .meta.json); "
        "re-materialize the upstream asset for this partition"
    )


def test_a_run_in_progress_keeps_its_stage_when_another_run_of_the_day_ends(
    tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = pipeline(tmp_path, "{type: daily, start: '2024-03-01'}")
    folder = tmp_path / "data" / "staging" / "events" / "raw" / DAY
    hold = threading.Event()
    monkeypatch.setattr(f"{__name__}.HOLD", hold)
    ENTERED.clear()
    held: list[dg.ExecuteInProcessResult] = []
    # a daemon thread, joined with a time limit: if A hangs, this test fails, not the suite
    thread = threading.Thread(
        target=lambda: held.append(materialize(plan, instance, DAY)), daemon=True
    )
    thread.start()
    try:
        # run A has staged its raw records and waits in its transform (logging nothing: two
        # runs logging at once in one process can deadlock in Dagster's logging set-up)
        assert ENTERED.wait(60)
        (run_a,) = instance.get_runs()
        assert not run_a.is_finished
        assert f"{run_a.run_id}.stage.meta.json" in stages(folder)
        later = materialize(plan, instance, DAY)  # run B of the same day, start to end
        assert later.success
        # B's stages replaced none of A's: A is still running
        assert f"{run_a.run_id}.stage.meta.json" in stages(folder)
        assert f"{run_a.run_id}.stage" in stages(folder)
    finally:
        hold.set()
        thread.join(60)
    assert held and held[0].success, "run A did not finish"
