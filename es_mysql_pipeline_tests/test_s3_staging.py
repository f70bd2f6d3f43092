"""Stages and dead letters on S3 (a moto server): a worker on another machine sees them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from es_mysql_pipeline.dead_letter import DeadLetterWriter, read_dead_letters
from es_mysql_pipeline.io_manager import StagingIOManagerResource
from es_mysql_pipeline.resources.settings import PipelineSettings
from es_mysql_pipeline.resources.sources import FileSource
from es_mysql_pipeline_tests.helpers import make_resources, run_unpartitioned
from es_mysql_pipeline_tests.support.ports import free_port

moto_server = pytest.importorskip("moto.server")
s3fs = pytest.importorskip("s3fs")
BUCKET = "pipeline"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A moto S3 server with one bucket; every s3fs client in this process points at it."""
    import fsspec.config

    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    url = f"http://127.0.0.1:{port}"
    import requests

    requests.post(f"{url}/moto-api/reset", timeout=10)  # moto's state outlives a server
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("FSSPEC_S3_ENDPOINT_URL", url)  # subprocesses: fsspec reads it at import
    monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": url})
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem(endpoint_url=url)
    fs.mkdir(BUCKET)
    try:
        yield fs
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()


def test_dead_letter_writer_publishes_on_close_and_leaves_nothing_on_failure(s3: Any) -> None:
    base = f"s3://{BUCKET}/data/dead_letter"
    dead = DeadLetterWriter(base, "transform", "2024-01-01")
    assert dead.path == f"{base}/transform/2024-01-01.jsonl"
    dead.write({"id": "a"}, "bad time")
    assert not s3.exists(dead.path)  # nothing visible before close
    assert dead.close() == dead.path
    assert s3.exists(dead.path)
    assert [e["record"] for e in read_dead_letters(dead.path)] == [{"id": "a"}]

    with pytest.raises(RuntimeError), DeadLetterWriter(base, "transform", "2024-01-02") as failed:
        failed.write({"id": "b"}, "bad time")
        raise RuntimeError("the step failed")
    assert not s3.exists(failed.path)

    again = DeadLetterWriter(base, "transform", "2024-01-01")  # a clean re-run
    assert again.close() is None
    assert not s3.exists(dead.path)
    s3.invalidate_cache()
    assert s3.find(f"{BUCKET}/data") == []  # no temp names left


def test_csv_run_writes_stages_and_dead_letters_to_s3(s3: Any, tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text(
        "id,timestamp,msg\n"
        "e1,2024-01-01T00:00:00Z,one\n"
        "e2,not-a-time,two\n"
        "e3,2024-01-01T00:00:01Z,three\n",
        encoding="utf-8",
    )
    resources = make_resources(str(tmp_path), source=FileSource(path=str(src)))
    resources["settings"] = PipelineSettings(dead_letter_dir=f"s3://{BUCKET}/data/dead_letter")
    resources["io_manager"] = StagingIOManagerResource(base_path=f"s3://{BUCKET}/data/staging")
    result = run_unpartitioned(resources)
    assert result.success
    s3.invalidate_cache()
    keys = s3.find(f"{BUCKET}/data")
    assert any(k.startswith(f"{BUCKET}/data/staging/") for k in keys), keys
    dead = [k for k in keys if k.startswith(f"{BUCKET}/data/dead_letter/")]
    assert dead == [f"{BUCKET}/data/dead_letter/transform/all.jsonl"], keys
    with s3.open(dead[0], "r", encoding="utf-8") as fh:
        entries = [json.loads(line) for line in fh]
    assert [e["record"]["id"] for e in entries] == ["e2"]
    assert not (tmp_path / "s3:").exists() and not (tmp_path / "dead_letter").exists()
