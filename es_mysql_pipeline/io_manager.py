"""Publishes staged files under a UPath root: a local folder today, ``s3://…`` tomorrow."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Any

import dagster as dg
from upath import UPath

from es_mysql_pipeline.staging import META_SUFFIX, STAGED_FILE_SUFFIX, StagedRecords


class StagingIOManager(dg.UPathIOManager):
    """Stores :class:`StagedRecords` handles; the data file moves, it is never re-read.

    A partition range (single-run backfill) is stored as one staged file named after the range,
    which the downstream step of the same run loads by the same name.
    """

    extension = STAGED_FILE_SUFFIX

    def dump_to_path(self, context: dg.OutputContext, obj: StagedRecords, path: UPath) -> None:
        tmp = path.with_name(path.name + ".tmp")
        meta_path = path.with_name(path.name + META_SUFFIX)
        if self.path_exists(meta_path):
            meta_path.unlink()  # the old staged file stops being "complete" before it is replaced
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

    def __init__(self, base_path: UPath) -> None:
        super().__init__(base_path=base_path)
        self.root = base_path  # public copy: the range path below is built from it

    # A single-run backfill hands one output several partitions; they are stored as one
    # range. Dagster 1.13 has no public hook for that (``handle_output`` insists on one path
    # per partition key), so the two public entry points take the range case themselves and
    # leave the one-partition case, and everything else, to ``UPathIOManager``.
    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        path = self._range_path(context)
        if path is None:
            super().handle_output(context, obj)
            return
        self.make_directory(path.parent)
        context.log.debug(self.get_writing_output_log_message(path))
        self.dump_to_path(context=context, obj=obj, path=path)
        context.add_output_metadata(
            {"path": dg.MetadataValue.path(str(path)), **self.get_metadata(context, obj)}
        )

    def load_partitions(self, context: dg.InputContext) -> Any:
        path = self._range_path(context)
        if path is None:
            return super().load_partitions(context)
        return self.load_from_path(context, path)

    def _range_path(self, context: dg.InputContext | dg.OutputContext) -> UPath | None:
        """``<root>/<asset>/<first>__<last><ext>`` for several partitions, else ``None``."""
        if not (context.has_asset_key and context.has_asset_partitions):
            return None
        keys = sorted(context.asset_partition_keys)
        if len(keys) <= 1:
            return None
        base = self.root.joinpath(*self.get_asset_relative_path(context).parts)
        path = self.get_path_for_partition(context, base, f"{keys[0]}__{keys[-1]}")
        return path.with_suffix(path.suffix + self.extension)


class StagingIOManagerResource(dg.ConfigurableIOManagerFactory):
    """The configurable face of :class:`StagingIOManager`."""

    base_path: str = "staging"

    def create_io_manager(self, context: dg.InitResourceContext) -> StagingIOManager:
        return StagingIOManager(base_path=UPath(self.base_path))


def _is_local(path: UPath) -> bool:
    return getattr(path, "protocol", "") in ("", "file", "local")
