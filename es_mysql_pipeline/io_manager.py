"""Publishes staged files under a UPath root: a local folder today, ``s3://…`` tomorrow."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Any

import dagster as dg
from upath import UPath

from es_mysql_pipeline.staging import META_SUFFIX, STAGE_SUFFIX, StagedRecords


class StagingIOManager(dg.UPathIOManager):
    """Stores :class:`StagedRecords` handles; the data file moves, it is never re-read.

    A partition range (single-run backfill) is stored as one stage named after the range,
    which the downstream step of the same run loads by the same name.
    """

    extension = STAGE_SUFFIX

    def dump_to_path(self, context: dg.OutputContext, obj: StagedRecords, path: UPath) -> None:
        tmp = path.with_name(path.name + ".tmp")
        meta_path = path.with_name(path.name + META_SUFFIX)
        if self.path_exists(meta_path):
            meta_path.unlink()  # the old stage stops being "complete" before it is replaced
        if _is_local(path):
            os.makedirs(str(path.parent.path), exist_ok=True)
            shutil.move(obj.path, str(tmp.path))
            os.replace(str(tmp.path), str(path.path))
        else:
            with open(obj.path, "rb") as src, tmp.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            tmp.rename(path)
            os.unlink(obj.path)
        handle = dataclasses.replace(obj, path=str(path))
        meta_path.write_text(json.dumps(handle.to_json()), encoding="utf-8")

    def load_from_path(self, context: dg.InputContext, path: UPath) -> StagedRecords:
        meta_path = path.with_name(path.name + META_SUFFIX)
        if not self.path_exists(meta_path):
            raise dg.Failure(
                f"staged data {path} is missing or incomplete (no {META_SUFFIX}); "
                "re-materialize the upstream asset for this partition"
            )
        return StagedRecords.from_json(json.loads(meta_path.read_text(encoding="utf-8")))

    def get_metadata(self, context: dg.OutputContext, obj: Any) -> dict[str, Any]:
        return {"staged_rows": obj.rows} if isinstance(obj, StagedRecords) else {}

    def load_partitions(self, context: dg.InputContext) -> Any:
        if len(context.asset_partition_keys) <= 1:
            return super().load_partitions(context)
        (path,) = self._get_paths_for_partitions(context).values()
        return self.load_from_path(context, path)

    # Single-run backfills hand one output several partitions; store them as one range.
    def _get_paths_for_partitions(
        self, context: dg.InputContext | dg.OutputContext
    ) -> dict[str, UPath]:
        keys = sorted(context.asset_partition_keys)
        if len(keys) <= 1:
            return super()._get_paths_for_partitions(context)
        base = self._get_path_without_extension(context)
        name = f"{keys[0]}__{keys[-1]}"
        return {name: self._with_extension(self.make_safe_partition_path(base, name))}


class StagingIOManagerResource(dg.ConfigurableIOManagerFactory):
    """The configurable face of :class:`StagingIOManager`."""

    base_path: str = "staging"

    def create_io_manager(self, context: dg.InitResourceContext) -> StagingIOManager:
        return StagingIOManager(base_path=UPath(self.base_path))


def _is_local(path: UPath) -> bool:
    return getattr(path, "protocol", "") in ("", "file", "local")
