"""A pipeline's YAML reaches the deletes, the delete marker, the version field and refresh."""

from __future__ import annotations

from pathlib import Path

import pytest

from es_mysql_pipeline.component import PipelinesConfigError, find_pipeline

YAML = """\
type: es_mysql_pipeline.EsMysqlPipelines
attributes:
  pipelines:
    - name: orders
      source: {{path: {csv}}}
      sink: {{sqlite: {db}, table: orders, options: {{version_field: updated_at}}}}
      write_mode: {mode}
      partitions: {{type: {partitions}}}
      settings: {{deletes: soft, delete_marker: "status=deleted"}}
"""


def write(tmp_path: Path, mode: str, partitions: str) -> Path:
    (tmp_path / "in.csv").write_text("id,timestamp,updated_at\n", encoding="utf-8")
    path = tmp_path / "defs.yaml"
    text = YAML.format(
        csv=tmp_path / "in.csv", db=tmp_path / "db.sqlite", mode=mode, partitions=partitions
    )
    path.write_text(text, encoding="utf-8")
    return path


def test_the_yaml_sets_deletes_marker_version_and_refresh(tmp_path: Path) -> None:
    plan = find_pipeline(write(tmp_path, "refresh", "none"), "orders")
    sink = plan.sink
    settings = plan.settings
    assert (sink.write_mode, sink.version_field) == ("refresh", "updated_at")
    assert (settings.deletes, settings.delete_marker) == ("soft", "status=deleted")
    upsert = find_pipeline(write(tmp_path, "upsert", "daily, start: '2024-01-01'"), "orders")
    assert upsert.sink.write_mode == "upsert"


def test_refresh_of_a_partitioned_pipeline_fails_at_load(tmp_path: Path) -> None:
    with pytest.raises(PipelinesConfigError, match="refresh replaces the whole table"):
        find_pipeline(write(tmp_path, "refresh", "daily, start: '2024-01-01'"), "orders")
