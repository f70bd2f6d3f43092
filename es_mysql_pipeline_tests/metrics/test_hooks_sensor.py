"""Step hooks and the run-status sensor, evaluated as Dagster does, against a real Pushgateway."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import dagster as dg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from es_mysql_pipeline.hooks import record_step_metrics, record_step_metrics_on_success
from es_mysql_pipeline.metrics.catalog import PrometheusRecorder, sample_key
from es_mysql_pipeline.metrics.pushgateway import PushgatewayResource
from es_mysql_pipeline.metrics.recorder import set_recorder
from es_mysql_pipeline.metrics.run_totals import (
    RECORD_MARKER,
    MetricsCursor,
    PipelineTotals,
    StepRecord,
    StepSnapshot,
    family_of,
    fold_run,
)
from es_mysql_pipeline.sensors import forget_kept_totals
from es_mysql_pipeline_tests.fixtures.prometheus import PushgatewayServer

from .held_gateway import held_gateway
from .metrics_job import (
    FAILED,
    INSERTED,
    PROCESSED,
    fetched,
    make_defs,
    run,
    run_tagged,
    tick,
    tick_said,
)


def gateway_samples(pg: PushgatewayServer, name: str, **labels: str) -> list[float]:
    out = []
    for family in text_string_to_metric_families(pg.metrics_text()):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                out.append(s.value)
    return out


def test_hooks_push_nothing_the_sensor_pushes_each_step_to_its_own_group(
    pushgateway: PushgatewayServer, instance: dg.DagsterInstance
) -> None:
    defs = make_defs(PushgatewayResource(url=pushgateway.url, pipeline_id="h"))
    assert not run(defs, instance, fail=True)
    # The step hooks only wrote into the run's event log: no group yet.
    assert gateway_samples(pushgateway, "pipeline_step_success") == []
    tick(defs, instance, None)
    assert gateway_samples(
        pushgateway, "pipeline_step_records", step="fetched", result="processed"
    ) == [PROCESSED]
    # Each step shows only its own increments, in its own group.
    assert gateway_samples(
        pushgateway, "pipeline_step_records", step="loaded", result="failed"
    ) == [FAILED]
    assert (
        gateway_samples(pushgateway, "pipeline_step_records", step="loaded", result="processed")
        == []
    )
    assert gateway_samples(pushgateway, "pipeline_step_success", step="fetched") == [1]
    assert gateway_samples(pushgateway, "pipeline_step_success", step="loaded") == [0]
    assert gateway_samples(
        pushgateway, "pipeline_state", step="loaded", pipeline_state="error"
    ) == [1]
    # Gauges that are always 0 at the end of a step are not pushed (issue 28).
    assert gateway_samples(pushgateway, "pipeline_queue_depth") == []
    assert gateway_samples(pushgateway, "pipeline_active_workers") == []
    info = gateway_samples(pushgateway, "pipeline_info", step="loaded", pipeline_id="h")
    assert info == [1]
    durations = gateway_samples(pushgateway, "pipeline_step_duration_seconds", step="loaded")
    assert len(durations) == 1 and 0 <= durations[0] < 60
    # Monotonic totals are never in a step group (a fresh process would reset them).
    assert gateway_samples(pushgateway, "pipeline_records_processed_total", step="fetched") == []
    assert gateway_samples(pushgateway, "pipeline_records_processed_total", stage="fetch") == [
        PROCESSED
    ]


def test_hooks_with_pushing_off_do_nothing() -> None:
    with dg.build_hook_context(
        resources={"pushgateway": PushgatewayResource()}, op=fetched.op
    ) as ctx:
        record_step_metrics_on_success(ctx)  # no recorder, no url: returns quietly


def test_sensor_counts_each_run_once_across_failures_and_restarts(
    pushgateway: PushgatewayServer, instance: dg.DagsterInstance
) -> None:
    defs = make_defs(PushgatewayResource(url=pushgateway.url, pipeline_id="s"))
    cursor = tick(defs, instance, None)
    assert gateway_samples(pushgateway, "pipeline_records_processed_total", stage="fetch") == [0]
    assert run(defs, instance)
    assert run(defs, instance)
    assert not run(defs, instance, fail=True)
    cursor = tick(defs, instance, cursor)
    cursor = tick(defs, instance, cursor)  # nothing new: nothing counted twice
    # Exactly one series (the sensor's group; no step group pushes totals), exact totals.
    assert gateway_samples(pushgateway, "pipeline_records_processed_total", stage="fetch") == [
        3 * PROCESSED
    ]
    assert gateway_samples(pushgateway, "pipeline_records_inserted_total", stage="load") == [
        3 * INSERTED
    ]
    assert gateway_samples(pushgateway, "pipeline_records_failed_total", stage="transform") == [
        3 * FAILED
    ]
    assert gateway_samples(pushgateway, "pipeline_runs_total", result="success") == [2]
    assert gateway_samples(pushgateway, "pipeline_runs_total", result="failure") == [1]
    assert gateway_samples(pushgateway, "pipeline_insert_duration_seconds_count") == [3]
    assert gateway_samples(pushgateway, "pipeline_run_duration_seconds_count") == [3]
    assert gateway_samples(pushgateway, "pipeline_last_run_success") == [0]
    # The last success survives the failed run: the sensor's group keeps it (one series),
    # the step group of the failed run has none.
    assert len(gateway_samples(pushgateway, "pipeline_last_success_timestamp_seconds")) == 1
    assert gateway_samples(pushgateway, "pipeline_step_success", step="loaded") == [0]

    # "Daemon restart": a new evaluation starts from the stored cursor only (the totals
    # kept in the process are gone); the Pushgateway lost its state too.
    forget_kept_totals()
    pushgateway.wipe()
    run_record_crash = instance.create_run_for_job(defs.resolve_job_def("metrics_job"))
    instance.report_run_failed(run_record_crash)  # crashed before any step or hook ran
    assert run(defs, instance)
    cursor = tick(defs, instance, cursor)
    assert gateway_samples(pushgateway, "pipeline_records_processed_total", stage="fetch") == [
        4 * PROCESSED
    ]
    assert gateway_samples(pushgateway, "pipeline_runs_total", result="success") == [3]
    assert gateway_samples(pushgateway, "pipeline_runs_total", result="failure") == [2]
    assert MetricsCursor.from_json(cursor).runs_counted == 5
    assert len(cursor) < 300  # the UI shows it: watermarks and counts only (issue 27)
    # The step groups are refilled too (the newest execution of each step).
    assert gateway_samples(pushgateway, "pipeline_step_success", step="loaded") == [1]
    forget_kept_totals()
    pushgateway.wipe()
    tick(defs, instance, cursor)  # no new run: the same groups, from the cursor alone
    assert gateway_samples(pushgateway, "pipeline_step_success", step="loaded") == [1]
    assert gateway_samples(pushgateway, "pipeline_step_records", step="fetched") == [PROCESSED]


def test_a_run_canceled_before_it_started_is_the_last_run_without_a_duration(
    pushgateway: PushgatewayServer, instance: dg.DagsterInstance
) -> None:
    defs = make_defs(PushgatewayResource(url=pushgateway.url, pipeline_id="q"))
    assert run(defs, instance)
    cursor = tick(defs, instance, None)
    [duration] = gateway_samples(pushgateway, "pipeline_last_run_duration_seconds")
    queued = instance.create_run_for_job(defs.resolve_job_def("metrics_job"))
    instance.report_run_canceled(queued)  # canceled in the queue: it never started
    tick(defs, instance, cursor)
    assert gateway_samples(pushgateway, "pipeline_runs_total", result="canceled") == [1]
    assert gateway_samples(pushgateway, "pipeline_last_run_success") == [0]
    # No duration to show for it: the last one measured stays, and no run duration is added.
    assert gateway_samples(pushgateway, "pipeline_last_run_duration_seconds") == [duration]
    assert gateway_samples(pushgateway, "pipeline_run_duration_seconds_count") == [1]


def test_a_run_deleted_while_a_tick_reads_it_is_left_out(
    pushgateway: PushgatewayServer, instance: dg.DagsterInstance
) -> None:
    """Deleting a run (the UI's "Delete") drops its record, then its event log: a tick in
    between reads the run's end event but finds no run. It counts the other runs and goes on."""
    defs = make_defs(PushgatewayResource(url=pushgateway.url, pipeline_id="gone"))
    assert run(defs, instance) and run(defs, instance)
    instance.run_storage.delete_run(instance.get_runs()[0].run_id)  # delete_run's first half
    cursor, said = tick_said(defs, instance, None)
    assert said.startswith("pushed totals of 1 run(s) (1 new this tick) for pipeline gone")
    assert gateway_samples(pushgateway, "pipeline_runs_total", result="success") == [1]
    assert MetricsCursor.from_json(cursor).runs_counted == 1


def test_sensor_counts_runs_of_our_assets_whatever_their_job(
    pushgateway: PushgatewayServer, instance: dg.DagsterInstance
) -> None:
    """Issue 11: a user's job over our assets is counted (once); a job of other assets is not."""
    defs = make_defs(PushgatewayResource(url=pushgateway.url, pipeline_id="any"))
    assert run(defs, instance, job_name="user_job")
    assert run(defs, instance, job_name="metrics_job")
    assert run(defs, instance, job_name="unrelated_job")
    cursor = tick(defs, instance, None)
    cursor = tick(defs, instance, cursor)  # nothing new: nothing counted twice
    assert gateway_samples(pushgateway, "pipeline_runs_total", result="success") == [2]
    assert gateway_samples(pushgateway, "pipeline_records_processed_total", stage="fetch") == [
        2 * PROCESSED
    ]
    assert MetricsCursor.from_json(cursor).runs_counted == 2


def series(pg: PushgatewayServer) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    """Every series the Pushgateway exposes (name and labels)."""
    return {
        (s.name, tuple(sorted(s.labels.items())))
        for family in text_string_to_metric_families(pg.metrics_text())
        for s in family.samples
    }


def test_concurrent_runs_of_a_step_keep_the_newest_in_its_group_and_count_both(
    pushgateway: PushgatewayServer, instance: dg.DagsterInstance
) -> None:
    """Issue 11: run A's step `loaded` fails while its push is still in flight (a slow
    network: the pusher stopped waiting, the request did not); run B of the same steps
    ends later and succeeds; then A's request lands. The step group must show B, the
    newer execution, not whichever push arrived last; both runs count once in the totals;
    the sensor reads B's success before A's failure, so `last run` must go by end time
    too; and the number of series stays the same however many runs there are."""
    direct = make_defs(PushgatewayResource(url=pushgateway.url, pipeline_id="c"))
    with held_gateway(pushgateway.url) as held:
        slow = make_defs(PushgatewayResource(url=held.url, pipeline_id="c", timeout_seconds=0.2))
        assert not run(slow, instance, fail=True)  # run A
        assert run(direct, instance)  # run B
        held.release()  # whatever run A sent lands now
    cursor = tick(direct, instance, None)

    runs = instance.get_runs()  # newest first
    run_ids = {r.run_id for r in runs}
    b_end = max(
        e.timestamp
        for e in instance.all_logs(runs[0].run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
        if e.step_key == "loaded"
    )
    # The step group shows run B's execution of `loaded` (the newer one), once.
    assert gateway_samples(pushgateway, "pipeline_step_success", step="loaded") == [1]
    assert gateway_samples(
        pushgateway, "pipeline_state", step="loaded", pipeline_state="error"
    ) == [0]
    assert gateway_samples(
        pushgateway, "pipeline_step_records", step="loaded", result="inserted"
    ) == [INSERTED]
    (end,) = gateway_samples(pushgateway, "pipeline_step_end_timestamp_seconds", step="loaded")
    assert abs(end - b_end) < 1
    assert gateway_samples(pushgateway, "pipeline_last_run_success") == [1]
    # Both runs' values are in the totals, each counted once; A's failure is not lost.
    assert gateway_samples(pushgateway, "pipeline_runs_total", result="success") == [1]
    assert gateway_samples(pushgateway, "pipeline_runs_total", result="failure") == [1]
    assert gateway_samples(pushgateway, "pipeline_records_processed_total", stage="fetch") == [
        2 * PROCESSED
    ]
    assert gateway_samples(pushgateway, "pipeline_records_inserted_total", stage="load") == [
        2 * INSERTED
    ]
    assert gateway_samples(pushgateway, "pipeline_retries_total", stage="load") == [1]  # A's
    assert MetricsCursor.from_json(cursor).runs_counted == 2

    # Bounded: one group per step, no run id anywhere, no new series with more runs.
    assert {
        labels["step"]
        for family in text_string_to_metric_families(pushgateway.metrics_text())
        for s in family.samples
        for labels in [s.labels]
        if "step" in labels
    } == {"fetched", "loaded"}
    before = series(pushgateway)
    for fail in (True, False, True, False):
        run(direct, instance, fail=fail)
    cursor = tick(direct, instance, cursor)
    after = series(pushgateway)
    assert after == before
    run_ids |= {r.run_id for r in instance.get_runs()}
    text = pushgateway.metrics_text()
    assert not any(run_id in text for run_id in run_ids)
    assert "run_id" not in text
    assert MetricsCursor.from_json(cursor).runs_counted == 6
    assert gateway_samples(pushgateway, "pipeline_step_success", step="loaded") == [1]


def test_fold_run_keeps_what_ended_last_whatever_the_order() -> None:
    def snapshot(step: str, end: float, ok: float) -> StepSnapshot:
        key = sample_key("pipeline_step_success", {"pipeline_id": "x"})
        return StepSnapshot(step, end, {"pipeline_step_success": {key: ok}})

    cursor = PipelineTotals()
    # Read in the sensor's order: the later run's success first, the earlier failure next.
    fold_run(cursor, "p", "success", 20.0, 120.0, [], [snapshot("loaded", 119.0, 1.0)])
    fold_run(cursor, "p", "failure", 5.0, 100.0, [], [snapshot("loaded", 99.0, 0.0)])
    assert cursor.last_run_success == 1 and cursor.last_run_duration == 20.0
    assert cursor.steps["loaded"].end == 119.0
    fold_run(cursor, "p", "failure", 3.0, 130.0, [], [snapshot("loaded", 129.0, 0.0)])
    assert cursor.last_run_success == 0 and cursor.steps["loaded"].end == 129.0
    assert cursor.runs_counted == 3
    small = MetricsCursor({"RUN_SUCCESS": 7}, 4, {"p": 2})
    assert MetricsCursor.from_json(small.to_json()) == small
    # A version 1 cursor (totals inside) gives its watermarks and counts; the totals are
    # recomputed from the event log.
    old = '{"v":1,"after":{"RUN_SUCCESS":7},"totals":{"k":3.0},"last_success":null,'
    old += '"last_run_duration":null,"last_run_success":1,"push_failures":2,"runs_counted":4}'
    assert MetricsCursor.from_json(old, "p") == small
    # Metadata that is not a snapshot is ignored, not fatal.
    assert StepRecord.from_message(RECORD_MARKER + '{"step": "x"}') is None
    assert StepRecord.from_message(RECORD_MARKER + '"garbage"') is None
    # So is a message that is not a step record.
    assert StepRecord.from_message("step x finished") is None
    assert StepRecord.from_message(None) is None
    record = StepRecord(snapshot("loaded", 5.0, 1.0), {"k": 2.0})
    assert StepRecord.from_message(record.to_message("for people")) == record


@pytest.mark.parametrize("restart", [False, True])
def test_sensor_survives_a_down_pushgateway_and_the_next_tick_pushes(
    restart: bool, pushgateway: PushgatewayServer, instance: dg.DagsterInstance
) -> None:
    down = make_defs(
        PushgatewayResource(url="http://127.0.0.1:9", pipeline_id="d", timeout_seconds=0.5)
    )
    assert run(down, instance)
    cursor, said = tick_said(down, instance, None)
    read = MetricsCursor.from_json(cursor)
    assert read.push_failures == {"d": 1} and read.runs_counted == 1
    assert "push to http://127.0.0.1:9 failed" in said
    assert "the next tick pushes them again" in said
    # What the tick said is true: the next tick (after a restart too) pushes the run.
    if restart:
        forget_kept_totals()
    up = make_defs(PushgatewayResource(url=pushgateway.url, pipeline_id="d"))
    cursor, said = tick_said(up, instance, cursor)
    assert said.startswith(
        f"pushed totals of 1 run(s) (0 new this tick) for pipeline d to {pushgateway.url}"
    )
    assert gateway_samples(pushgateway, "pipeline_records_processed_total", stage="fetch") == [
        PROCESSED
    ]
    assert gateway_samples(pushgateway, "pipeline_runs_total", result="success") == [1]
    assert gateway_samples(pushgateway, "pipeline_pushgateway_failures_total") == [1]
    assert gateway_samples(pushgateway, "pipeline_step_success", step="loaded") == [1]


def test_fold_run_is_pure_and_ignores_foreign_families() -> None:
    delta = {
        sample_key(
            "pipeline_records_processed_total", {"pipeline_id": "other", "stage": "fetch"}
        ): 7.0,
        sample_key("pipeline_active_workers", {"pipeline_id": "x"}): 3.0,
    }
    cursor = PipelineTotals()
    fold_run(cursor, "p", "success", 12.0, 1000.0, [delta])
    assert (
        cursor.totals[
            sample_key("pipeline_records_processed_total", {"pipeline_id": "p", "stage": "fetch"})
        ]
        == 7
    )
    assert not any("active_workers" in k for k in cursor.totals)
    # A step record written before issue 28 holds always-zero live gauges: never pushed.
    old = {"pipeline_active_workers": {"w": 0.0}, "pipeline_step_success": {"s": 1.0}}
    data = {"step": "loaded", "end": 1.0, "families": old, "delta": {}}
    record = StepRecord.from_message(RECORD_MARKER + json.dumps(data))
    assert record is not None
    assert record.snapshot.families == {"pipeline_step_success": {"s": 1.0}}
    assert cursor.last_success == 1000.0 and cursor.last_run_duration == 12.0
    assert MetricsCursor.from_json('{"v": 0}') == MetricsCursor()


def test_each_tick_says_what_it_pushed_and_the_hooks_say_what_they_recorded(
    pushgateway: PushgatewayServer, instance: dg.DagsterInstance
) -> None:
    """Issue 27: never a bare "0 runs requested"; the step's log line names its counts."""
    defs = make_defs(PushgatewayResource(url=pushgateway.url, pipeline_id="w"))
    cursor, said = tick_said(defs, instance, None)
    assert said == (
        f"pushed totals of 0 run(s) (0 new this tick) for pipeline w to {pushgateway.url}, "
        "with 0 step group(s)"
    )
    assert run(defs, instance) and run(defs, instance)
    cursor, said = tick_said(defs, instance, cursor)
    assert said == (
        f"pushed totals of 2 run(s) (2 new this tick) for pipeline w to {pushgateway.url}, "
        "with 2 step group(s)"
    )
    cursor, said = tick_said(defs, instance, cursor)
    assert said.startswith("pushed totals of 2 run(s) (0 new this tick)")
    lines = [
        e.message
        for e in instance.all_logs(instance.get_runs()[0].run_id)
        if e.step_key == "loaded" and "recorded for the metrics sensor" in e.message
    ]
    assert len(lines) == 1
    assert lines[0].splitlines()[0] == (
        f"step loaded recorded for the metrics sensor: inserted {INSERTED} (load), "
        f"failed {FAILED} (transform)"
    )
    off = make_defs(PushgatewayResource())
    assert tick_said(off, instance, cursor)[1].startswith(
        "nothing pushed: pushgateway.url is empty (set PUSHGATEWAY_URL)"
    )


def test_runs_from_before_pushing_was_on_are_not_counted(
    pushgateway: PushgatewayServer, instance: dg.DagsterInstance
) -> None:
    """Issue 27: a run whose steps ran with PUSHGATEWAY_URL unset has no counts to fold; it
    is not counted as a run (and the tick says so). A run that crashed before any step is
    a real failure with no records, and counts."""
    assert run(make_defs(PushgatewayResource(pipeline_id="u")), instance)  # pushing off
    defs = make_defs(PushgatewayResource(url=pushgateway.url, pipeline_id="u"))
    crashed = instance.create_run_for_job(defs.resolve_job_def("metrics_job"))
    instance.report_run_failed(crashed)
    assert run(defs, instance)
    cursor, said = tick_said(defs, instance, None)
    assert gateway_samples(pushgateway, "pipeline_runs_total", result="success") == [1]
    assert gateway_samples(pushgateway, "pipeline_runs_total", result="failure") == [1]
    assert gateway_samples(pushgateway, "pipeline_records_processed_total", stage="fetch") == [
        PROCESSED
    ]
    assert "1 finished run(s) not counted: their steps recorded no metrics" in said
    assert MetricsCursor.from_json(cursor).runs_counted == 2


def test_each_run_counts_once_under_its_own_pipeline(
    pushgateway: PushgatewayServer, instance: dg.DagsterInstance
) -> None:
    """Issue 26/28: runs tagged with their pipeline fold into that pipeline's totals, whether
    one sensor covers every pipeline or each pipeline has its own; retiring a pipeline
    deletes its groups, and a sensor that no longer covers it does not bring them back."""
    defs = make_defs(PushgatewayResource(url=pushgateway.url, pipeline_id="a"))
    assert run_tagged(defs, instance, "a")
    assert run_tagged(defs, instance, "b") and run_tagged(defs, instance, "b")
    assert run(defs, instance)  # no tag: the resource's pipeline_id ("a")
    cursor, said = tick_said(defs, instance, None, "both_sensor")
    assert successes(pushgateway, "a") == [2]
    assert successes(pushgateway, "b") == [2]
    assert gateway_samples(
        pushgateway, "pipeline_records_processed_total", pipeline_id="b", stage="fetch"
    ) == [2 * PROCESSED]
    assert "pushed totals of 2 run(s) (2 new this tick) for pipeline a" in said
    assert "pushed totals of 2 run(s) (2 new this tick) for pipeline b" in said
    assert len(cursor) < 300
    # One sensor per pipeline: each counts its own runs once and leaves the others.
    _, said_a = tick_said(defs, instance, None, "a_sensor")
    _, said_b = tick_said(defs, instance, None, "b_sensor")
    assert "pushed totals of 2 run(s)" in said_a and "2 run(s) of other pipelines" in said_a
    assert "pushed totals of 2 run(s)" in said_b and "2 run(s) of other pipelines" in said_b
    assert successes(pushgateway, "b") == [2]
    assert {"a", "b"} == {
        labels["pipeline_id"] for labels in PushgatewayResource(url=pushgateway.url).groups()
    }
    # Pipeline b is gone: retire its groups (totals and steps); the one sensor left covers a.
    pg = PushgatewayResource(url=pushgateway.url)
    assert pg.retire("b") == 3
    tick_said(defs, instance, None, "a_sensor")
    assert gateway_samples(pushgateway, "pipeline_runs_total", pipeline_id="b") == []
    assert gateway_samples(pushgateway, "pipeline_step_success", pipeline_id="b") == []
    assert successes(pushgateway, "a") == [2]


def test_retire_from_a_shell(pushgateway: PushgatewayServer, instance: dg.DagsterInstance) -> None:
    defs = make_defs(PushgatewayResource(url=pushgateway.url, pipeline_id="old"))
    assert run(defs, instance)
    tick(defs, instance, None)
    assert gateway_samples(pushgateway, "pipeline_step_success", pipeline_id="old") == [1, 1]
    proc = shell(pushgateway.url, "retire", "old")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"deleted 3 group(s) of pipeline old from {pushgateway.url}\n"
    assert 'pipeline_id="old"' not in pushgateway.metrics_text()
    proc = shell(pushgateway.url, "retire")
    assert proc.returncode == 2 and "retire PIPELINE_ID [JOB]" in proc.stderr
    assert "Traceback" not in proc.stderr


def shell(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "es_mysql_pipeline.metrics.pushgateway", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_alert_tests_feed_only_series_the_pipeline_pushes(
    pushgateway: PushgatewayServer, instance: dg.DagsterInstance
) -> None:
    """Issue 28: every input series of deploy/alerts_test.yml is one the pipeline produces
    (same name, same label names, same values of the bounded labels)."""
    import yaml

    from es_mysql_pipeline_tests.fixtures.prometheus import REPO

    defs = make_defs(PushgatewayResource(url=pushgateway.url, pipeline_id="p1"))
    assert run(defs, instance) and not run(defs, instance, fail=True)
    tick(defs, instance, None)
    pushed = series(pushgateway)
    tests = yaml.safe_load((REPO / "deploy" / "alerts_test.yml").read_text())["tests"]
    fed = [s["series"] for t in tests for s in t["input_series"]]
    assert fed
    for text in fed:
        (family,) = text_string_to_metric_families(text.replace("'", "") + " 0\n")
        (sample,) = family.samples
        free = {"pipeline_id", "step", "job", "instance"}  # values the deployment chooses
        matches = [
            labels
            for name, labels in pushed
            if name == sample.name
            and {k for k, _ in labels} - {"job", "instance"} == set(sample.labels) - {"job"}
            and all(dict(labels).get(k) == v for k, v in sample.labels.items() if k not in free)
        ]
        assert matches, f"{text} is not a series the pipeline pushes"


def successes(pg: PushgatewayServer, pipeline_id: str) -> list[float]:
    return gateway_samples(pg, "pipeline_runs_total", pipeline_id=pipeline_id, result="success")


@pytest.fixture
def prometheus_recorder() -> Iterator[PrometheusRecorder]:
    recorder = PrometheusRecorder("h")
    previous = set_recorder(recorder)
    yield recorder
    set_recorder(previous)


def test_a_hook_records_under_the_op_name_outside_a_step(
    prometheus_recorder: PrometheusRecorder, instance: dg.DagsterInstance
) -> None:
    pg = PushgatewayResource(url="http://127.0.0.1:9", pipeline_id="h")
    with dg.build_hook_context(resources={"pushgateway": pg}, op=fetched.op) as ctx:
        assert not record_step_metrics(ctx, success=True)  # no instance: nothing to write to
    with dg.build_hook_context(
        resources={"pushgateway": pg}, op=fetched.op, instance=instance, run_id="r1", job_name="j"
    ) as ctx:
        assert record_step_metrics(ctx, success=False)
    (event,) = [e for e in instance.all_logs("r1") if e.dagster_event is not None]
    assert event.dagster_event.step_key == "fetched"  # type: ignore[union-attr]
    assert event.message.startswith(
        "step fetched recorded for the metrics sensor: no records\n"
        "es_mysql_pipeline step record v1: "
    )


def test_a_hook_that_cannot_record_warns_and_lets_the_run_go_on(
    prometheus_recorder: PrometheusRecorder,
    instance: dg.DagsterInstance,
    capfd: pytest.CaptureFixture[str],
) -> None:
    pg = PushgatewayResource(url="http://127.0.0.1:9", pipeline_id="h")
    with dg.build_hook_context(
        resources={"pushgateway": pg}, op=fetched.op, instance=instance
    ) as ctx:
        assert not record_step_metrics(ctx, success=True)  # the context has no run id
    assert "pipeline metrics of this step were not recorded: DagsterInvalidPropertyError(" in (
        capfd.readouterr().err
    )


def test_only_the_pipelines_own_samples_have_a_family() -> None:
    assert family_of("pipeline_records_processed_total") == "pipeline_records_processed"
    assert family_of("pipeline_fetch_duration_seconds_bucket") == "pipeline_fetch_duration_seconds"
    assert family_of("process_cpu_seconds_total") is None
