"""Publishes staged files under a UPath root: a local folder or ``s3://…``."""

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

    A partition range (single-run backfill) is one staged file named after the range.
    With ``run_scoped`` (the YAML pipelines) a stage is ``<asset>/<partition>/<run id>.stage``,
    so two runs of one partition never read each other's stages; a step whose upstream ran
    earlier takes the newest complete stage of the partition, and a later run's stage
    replaces those of finished runs.
    """

    extension = STAGED_FILE_SUFFIX

    def __init__(self, base_path: UPath, run_scoped: bool = False) -> None:
        super().__init__(base_path=base_path)
        self.run_scoped = run_scoped

    def dump_to_path(self, context: dg.OutputContext, obj: StagedRecords, path: UPath) -> None:
        tmp = path.with_name(path.name + ".tmp")
        meta_path = path.with_name(path.name + META_SUFFIX)
        if self.path_exists(meta_path):
            meta_path.unlink()  # the old staged file stops being "complete" before it is replaced
        if getattr(path, "protocol", "") in ("", "file", "local"):  # a rename, if it can
            shutil.move(obj.path, str(tmp.path))
            os.replace(str(tmp.path), str(path.path))
        else:
            tmp.fs.put_file(obj.path, tmp.path)
            tmp.rename(path)
            os.unlink(obj.path)
        handle = dataclasses.replace(obj, path=str(path))
        meta_path.write_text(json.dumps(handle.to_json()), encoding="utf-8")
        if self.run_scoped:
            remove_finished_stages(context, path)

    def load_from_path(self, context: dg.InputContext, path: UPath) -> StagedRecords:
        meta_path = path.with_name(path.name + META_SUFFIX)
        if self.run_scoped and not self.path_exists(meta_path):
            meta_path = newest_complete_stage(path.parent) or meta_path
        if not self.path_exists(meta_path):
            raise dg.Failure(
                f"staged data {path} is missing or incomplete (no {META_SUFFIX}); "
                "re-materialize the upstream asset for this partition",
                allow_retries=False,  # a retry finds it missing too
            )
        return StagedRecords.from_json(json.loads(meta_path.read_text(encoding="utf-8")))

    def get_metadata(self, context: dg.OutputContext, obj: Any) -> dict[str, Any]:
        return {"staged_rows": obj.rows} if isinstance(obj, StagedRecords) else {}

    def get_asset_relative_path(self, context: dg.InputContext | dg.OutputContext) -> UPath:
        path = super().get_asset_relative_path(context)
        if self.run_scoped and not context.has_asset_partitions:
            return path / "all" / _run_id(context)
        return path

    def get_path_for_partition(
        self, context: dg.InputContext | dg.OutputContext, path: UPath, partition: str
    ) -> UPath:
        if self.run_scoped:
            return path / partition / _run_id(context)
        return super().get_path_for_partition(context, path, partition)

    # UPathIOManager refuses an output of several partitions (a single-run backfill); the
    # two public entry points store such a range as one stage and leave the rest to it.
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
        base = self._base_path.joinpath(*self.get_asset_relative_path(context).parts)
        path = self.get_path_for_partition(context, base, f"{keys[0]}__{keys[-1]}")
        return path.with_name(path.name + self.extension)


class StagingIOManagerResource(dg.ConfigurableIOManagerFactory):
    """The configurable face of :class:`StagingIOManager`."""

    base_path: str = "staging"
    #: Name each stage after its run too (see :class:`StagingIOManager`).
    run_scoped: bool = False

    def create_io_manager(self, context: dg.InitResourceContext) -> StagingIOManager:
        return StagingIOManager(base_path=UPath(self.base_path), run_scoped=self.run_scoped)


def _run_id(context: dg.InputContext | dg.OutputContext) -> str:
    """This run for an output; for an input, the run that produced it."""
    if isinstance(context, dg.OutputContext):
        return context.run_id
    return context.upstream_output.run_id  # type: ignore[union-attr]


def newest_complete_stage(folder: UPath) -> UPath | None:
    """The sidecar of the newest complete stage in ``folder`` (one per run), if any."""
    try:
        metas = [p for p in folder.iterdir() if p.name.endswith(META_SUFFIX)]
    except (FileNotFoundError, NotADirectoryError):
        return None
    return max(metas, key=lambda p: p.stat().st_mtime, default=None)


def remove_finished_stages(context: dg.OutputContext, path: UPath) -> None:
    """Drop the stages of finished runs beside ``path``: a running run keeps its own."""
    instance = context.step_context.instance
    for meta in path.parent.iterdir():
        if not meta.name.endswith(META_SUFFIX) or meta.name.startswith(path.name):
            continue
        stage = meta.with_name(meta.name[: -len(META_SUFFIX)])
        run = instance.get_run_by_id(stage.name[: -len(STAGED_FILE_SUFFIX)])
        if run is not None and not run.is_finished:
            continue
        # the sidecar first: the stage stops being complete before it goes; missing_ok: a
        # run of the partition finishing at the same time may have removed them already
        meta.unlink(missing_ok=True)
        stage.unlink(missing_ok=True)
