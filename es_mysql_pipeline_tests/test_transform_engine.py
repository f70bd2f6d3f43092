"""The transform's worker processes write exactly what the in-process mapping writes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from es_mysql_pipeline.dead_letter import DeadLetterWriter, read_dead_letters
from es_mysql_pipeline.errors import RejectedRecordsError
from es_mysql_pipeline.identifiers import column_name
from es_mysql_pipeline.mapping import FieldMapping, load_analyzer
from es_mysql_pipeline.staging import StagedFileWriter, StagedRecords, StagingError
from es_mysql_pipeline.transform_engine import (
    PARALLEL_MIN_ROWS,
    BatchMapper,
    RejectTally,
    frame_runs,
    map_parallel,
    new_staged_file,
    reject_hint,
    worker_count,
)

ANALYZER = "es_mysql_pipeline_tests.test_transform_engine:tag_analyzer"


def tag_analyzer(row: dict[str, Any]) -> dict[str, Any]:
    if row["id"].endswith("7"):
        raise ValueError("sevens fail")
    return {"Tag Name": f"t-{row['id']}"}


def raw_stage(n: int, frame: int = 100) -> StagedRecords:
    records: list[dict[str, Any]] = []
    for i in range(n):
        rec: dict[str, Any] = {
            "id": f"r{i}",
            "@timestamp": f"2024-01-0{1 + i % 5}T00:00:{i % 60:02d}.123456Z",
            "msg": "ünï ✓",
        }
        if i % 97 == 0:
            rec["@timestamp"] = "not a time"  # rejected
        if i % 13 == 0:
            rec["user"] = {"geo": {"country": "DE"}, "tags": ["a"]}  # nested path
        records.append(rec)
    with StagedFileWriter("id", "@timestamp") as w:
        for i in range(0, n, frame):
            w.write(records[i : i + frame])
        return w.finish()


def serial(stage: StagedRecords, mapping: FieldMapping, dl: Path) -> tuple[Any, ...]:
    dead = DeadLetterWriter(str(dl), "transform", "all")
    mapper = BatchMapper(mapping, load_analyzer(ANALYZER), dead)
    with dead, new_staged_file(mapping) as out:
        for batch in stage.batches(100):
            out.write(mapper.map(batch))
        result = out.finish()
        path = dead.close()
    return result, path, mapper.analysis_ok, mapper.analysis_failed, mapper.unseen


def parallel(stage: StagedRecords, mapping: FieldMapping, dl: Path, **kw: Any) -> tuple[Any, ...]:
    dead = DeadLetterWriter(str(dl), "transform", "all")
    progress: list[int] = []
    with dead, new_staged_file(mapping) as out:
        ok, failed, unseen = map_parallel(
            stage, mapping, ANALYZER, 2, out, dead, lambda done, _: progress.append(done), **kw
        )
        result = out.finish()
        path = dead.close()
    return result, path, ok, failed, unseen, progress


@pytest.fixture(autouse=True)
def _scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ES_MYSQL_PIPELINE_SCRATCH", str(tmp_path / "scratch"))


def rows_of(stage: StagedRecords) -> list[dict[str, Any]]:
    return [r for b in stage.batches(1000) for r in b]


def test_parallel_output_equals_serial(tmp_path: Path) -> None:
    stage = raw_stage(3_000)
    mapping = FieldMapping("id", "@timestamp", casts={"user_geo_country": "string"})
    s_out, s_dead, s_ok, s_failed, s_unseen = serial(stage, mapping, tmp_path / "s")
    p_out, p_dead, p_ok, p_failed, p_unseen, progress = parallel(stage, mapping, tmp_path / "p")

    assert rows_of(p_out) == rows_of(s_out)  # same rows, same order
    assert p_out.rows == s_out.rows == 3_000 - 31
    assert {k: (v.type, v.max_bytes) for k, v in p_out.columns.items()} == {
        k: (v.type, v.max_bytes) for k, v in s_out.columns.items()
    }
    assert list(p_out.columns) == list(s_out.columns)
    strip = [{k: v for k, v in e.items() if k != "at"} for e in read_dead_letters(s_dead)]
    assert strip == [{k: v for k, v in e.items() if k != "at"} for e in read_dead_letters(p_dead)]
    assert len(strip) == 31
    assert (p_ok, p_failed) == (s_ok, s_failed) and p_failed > 0
    assert rows_of(p_out)[0][column_name("Tag Name")] == "t-r1"
    assert p_unseen == s_unseen == {}
    assert progress == sorted(progress) and progress[-1] == 3_000 and len(progress) > 2
    left = {str(p) for p in (tmp_path / "scratch").rglob("*") if p.is_file()}
    assert left == {stage.path, s_out.path, p_out.path}  # no part is left behind


def test_unseen_named_column_is_reported_once_per_stage(tmp_path: Path) -> None:
    stage = raw_stage(1_000)
    mapping = FieldMapping(
        "id", "@timestamp", casts={"no_such": "int", "user_geo_country": "string"}
    )
    *_, unseen, _ = parallel(stage, mapping, tmp_path)
    assert unseen == {"no_such": "casts['no_such']"}  # user_geo_country is seen in some runs


def test_stop_between_runs_leaves_no_parts(tmp_path: Path) -> None:
    stage = raw_stage(2_000)
    mapping = FieldMapping("id", "@timestamp")
    dead = DeadLetterWriter(str(tmp_path / "dl"), "transform", "all")

    def stop(done: int, _rejected: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), dead, new_staged_file(mapping) as out:
        map_parallel(stage, mapping, None, 2, out, dead, stop)
    left = {str(p) for p in (tmp_path / "scratch").rglob("*") if p.is_file()}
    assert left == {stage.path}  # parts of finished and running runs are gone
    assert not (tmp_path / "dl" / "transform" / "all.jsonl").exists()


def test_worker_errors_reach_the_step(tmp_path: Path) -> None:
    stage = raw_stage(500)
    mapping = FieldMapping("id", "@timestamp")
    dead = DeadLetterWriter(str(tmp_path / "dl"), "transform", "all")
    from es_mysql_pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match=r"no\.such"), dead, new_staged_file(mapping) as out:
        map_parallel(stage, mapping, "no.such:fn", 2, out, dead, lambda *_: None)


def slow_analyzer(row: dict[str, Any]) -> None:
    """Marks the worker it runs in (a file named for its pid), then keeps it busy."""
    Path(os.environ["WORKER_PIDS"], str(os.getpid())).touch()
    time.sleep(0.05)


_KILLED_PARENT = """
import signal
import sys
from es_mysql_pipeline.dead_letter import DeadLetterWriter
from es_mysql_pipeline.mapping import FieldMapping
from es_mysql_pipeline.transform_engine import map_parallel, new_staged_file
from es_mysql_pipeline_tests.test_transform_engine import raw_stage

if __name__ == "__main__":
    # Like the CLI: the parent takes the signals (a handler; workers don't inherit it).
    signal.signal(signal.SIGINT, lambda *_: None)
    signal.signal(signal.SIGTERM, lambda *_: None)
    mapping = FieldMapping("id", "@timestamp")
    dead = DeadLetterWriter(sys.argv[1], "transform", "all")
    with dead, new_staged_file(mapping) as out:
        map_parallel(raw_stage(2_000), mapping, sys.argv[2], 2, out, dead, lambda *_: None)
"""


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status  # a zombie has exited; nobody may reap it here


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_workers_outlive_a_group_signal_but_not_a_killed_parent(sig: int, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    pids.mkdir()
    env = {**os.environ, "WORKER_PIDS": str(pids)}
    analyzer = "es_mysql_pipeline_tests.test_transform_engine:slow_analyzer"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_PARENT, str(tmp_path / "dl"), analyzer],
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while len(list(pids.iterdir())) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, "no workers started"
            time.sleep(0.05)
        workers = [int(p.name) for p in pids.iterdir()]
        # Ctrl+C (or SIGTERM) to the whole group: the workers leave stopping to the parent.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        time.sleep(1.0)
        assert all(_alive(pid) for pid in workers), "a worker died of the group's signal"
        proc.kill()  # the parent killed outright: nobody shuts the pool down
        proc.wait()
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in workers if _alive(pid)], "workers outlived their parent"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def test_worker_count() -> None:
    assert worker_count(0, PARALLEL_MIN_ROWS - 1) == 1
    assert worker_count(3, PARALLEL_MIN_ROWS) == 3
    assert worker_count(0, PARALLEL_MIN_ROWS) == min(os.cpu_count() or 1, 4)
    assert worker_count(1, 10**9) == 1


def test_transform_step_uses_workers_and_matches_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through Dagster: a stage above the threshold goes through the worker processes."""
    import dagster as dg

    import es_mysql_pipeline.assets.transform as transform_asset
    from es_mysql_pipeline.assets import build_assets

    calls: list[int] = []

    def spy(*args: Any) -> Any:
        calls.append(args[3])
        return map_parallel(*args)

    monkeypatch.setattr(transform_asset, "map_parallel", spy)
    from es_mysql_pipeline.io_manager import StagingIOManagerResource
    from es_mysql_pipeline.resources.settings import PipelineSettings
    from es_mysql_pipeline.resources.sinks import JsonlSink
    from es_mysql_pipeline.resources.sources import FileSource

    n = PARALLEL_MIN_ROWS + 1_234
    src = tmp_path / "in.csv"
    with src.open("w", encoding="utf-8") as fh:
        fh.write("id,timestamp,msg\n")
        for i in range(n):
            fh.write(f'e{i},2024-01-01T00:00:00.{i % 1000000:06d}Z,"m, {i}"\n')
        fh.write("bad,not-a-time,x\n")
    out = tmp_path / "out.jsonl"
    result = dg.materialize(
        build_assets(None),
        resources={
            "source": FileSource(path=str(src)),
            "sink": JsonlSink(path=str(out)),
            "settings": PipelineSettings(
                dead_letter_dir=str(tmp_path / "dl"), transform_processes=2
            ),
            "io_manager": StagingIOManagerResource(base_path=str(tmp_path / "staging")),
        },
    )
    assert result.success
    assert calls == [2]
    meta = {
        k: v.value
        for e in result.get_asset_materialization_events()
        if e.asset_key.path[-1] == "clean_records"
        for k, v in e.materialization.metadata.items()
    }
    assert meta["clean_records"] == n and meta["rejected_records"] == 1
    with out.open(encoding="utf-8") as fh:
        ids = [json.loads(line)["id"] for line in fh]
    assert len(ids) == n and set(ids) == {f"e{i}" for i in range(n)}  # load workers interleave


def _map_as_the_step_does(scratch: str, n: int, result_file: str) -> None:
    """Child side: choose the workers as the transform step does, map, and save the rows."""
    os.environ["ES_MYSQL_PIPELINE_SCRATCH"] = scratch
    stage = raw_stage(n)
    mapping = FieldMapping("id", "@timestamp")
    dead = DeadLetterWriter(os.path.join(scratch, "dl"), "transform", "all")
    workers = worker_count(2, stage.rows)
    with dead, new_staged_file(mapping) as out:
        if workers > 1:
            map_parallel(stage, mapping, ANALYZER, workers, out, dead, lambda *_: None)
        else:
            mapper = BatchMapper(mapping, load_analyzer(ANALYZER), dead)
            for batch in stage.batches(1000):
                out.write(mapper.map(batch))
        staged = out.finish()
        dead.close()
    with open(result_file, "w", encoding="utf-8") as fh:
        json.dump({"workers": workers, "rows": rows_of(staged), "rejected": dead.count}, fh)


def test_daemonic_process_maps_in_process(tmp_path: Path) -> None:
    """A celery prefork child is daemonic and may not start workers: it maps in-process,
    with the same output as serial, instead of failing with 'daemonic processes are not
    allowed to have children'."""
    import multiprocessing

    n = PARALLEL_MIN_ROWS + 500
    result_file = tmp_path / "child.json"
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(
        target=_map_as_the_step_does,
        args=(str(tmp_path / "child-scratch"), n, str(result_file)),
        daemon=True,
    )
    child.start()
    child.join(300)
    assert child.exitcode == 0, f"daemonic child failed with exit code {child.exitcode}"
    got = json.loads(result_file.read_text(encoding="utf-8"))
    assert got["workers"] == 1

    stage = raw_stage(n)
    s_out, s_dead, *_ = serial(stage, FieldMapping("id", "@timestamp"), tmp_path / "s")
    assert got["rows"] == json.loads(json.dumps(rows_of(s_out)))
    assert got["rejected"] == len(read_dead_letters(s_dead)) > 0


def test_one_reason_for_most_records_stops_the_run_naming_the_setting() -> None:
    tally = RejectTally()
    for i in range(600):
        tally.add(f"missing or empty id field 'id' (line {i})")
    tally.check(600, 0.5)  # too few records to call it a pattern
    for i in range(500):
        tally.add(f"timestamp field 'ts': not an ISO 8601 timestamp: 'x{i}'")
    tally.check(1100, 0.6)  # the most common reason is only 55 %
    tally.check(1100, None)  # no limit set
    with pytest.raises(RejectedRecordsError) as info:
        tally.check(1100, 0.5)
    assert str(info.value) == (
        "stopped after 1,100 records: 600 of them failed with the same reason (more than "
        "max_failed_ratio 0.5): missing or empty id field 'id' (line 0); set the id field "
        "(--id_column) to the field holding each record's key"
    )
    assert reject_hint("timestamp field 'ts': bad").startswith("; set the time field")
    assert reject_hint("cast of 'n' to int failed") == ""


def test_the_batch_path_marks_named_columns_seen_and_counts_the_analyzer(tmp_path: Path) -> None:
    mapping = FieldMapping("id", None, select=("a", "zzz"))
    dead = DeadLetterWriter(str(tmp_path / "dl"), "transform", "all")
    with dead:
        mapper = BatchMapper(mapping, None, dead)
        assert mapper.map({"id": ["1", "2"], "a": [1, 2], "b": [3, 4]}) == {
            "a": [1, 2],
            "id": ["1", "2"],
        }
        assert mapper.unseen == {"zzz": "select"}

        def analyzer(row: dict[str, Any]) -> dict[str, Any] | None:
            if row["id"] == "3":
                raise KeyError("boom")
            return {"extra": 1} if row["id"] == "1" else None

        mapper = BatchMapper(FieldMapping("id", None), analyzer, dead)
        rows = mapper.map([{"id": "1"}, {"id": "2"}, {"id": "3"}])
        assert rows == [{"id": "1", "extra": 1}, {"id": "2"}, {"id": "3"}]
        assert (mapper.analysis_ok, mapper.analysis_failed) == (2, 1)


def test_an_empty_stage_has_no_runs() -> None:
    with StagedFileWriter("id", None) as w:
        empty = w.finish()
    assert frame_runs(empty, 4) == []


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_while_joining_parts_leaves_no_part_behind(tmp_path: Path) -> None:
    stage = raw_stage(400)
    mapping = FieldMapping("id", "@timestamp")
    dead = DeadLetterWriter(str(tmp_path / "dl"), "transform", "all")
    out = new_staged_file(mapping)
    out._fh.close()
    out._fh = open("/dev/full", "wb", buffering=0)
    with pytest.raises(StagingError, match="free space on that disk"), dead:
        map_parallel(stage, mapping, None, 2, out, dead, lambda *_: None)
    left = {str(p) for p in (tmp_path / "scratch").rglob("*") if p.is_file()}
    assert left == {stage.path}  # the part that failed and those not joined are gone
