"""The source and sink a run was launched for, recorded as run tags and checked by each step.

A celery worker resolves the resources from its own environment: without this check, a
worker missing ``ES_MYSQL_PIPELINE_ENV`` would load the bundled sample into a local SQLite
file and the run would show SUCCESS. The launching code server (or, for an untagged run,
the run worker: ``es_mysql_pipeline.jobs``) tags the run; each step compares its own
targets. Only non-secret descriptions: a URL is rendered without its password.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import dagster as dg

from es_mysql_pipeline.errors import ConfigError

#: The prefix of the tags the pipeline sets itself (a user's tags may not use it).
TAG_PREFIX = "es_mysql_pipeline/"
SOURCE_TAG = f"{TAG_PREFIX}source"
SINK_TAG = f"{TAG_PREFIX}sink"
#: The sink table a run loads (shown in the UI; the load step's pool is named after it).
SINK_TABLE_TAG = f"{TAG_PREFIX}sink_table"
#: The pipeline a run (and an asset) belongs to: a YAML pipeline's name, metrics fold by it.
PIPELINE_TAG = f"{TAG_PREFIX}pipeline_id"

_SETTINGS = {
    SOURCE_TAG: "ES_MYSQL_PIPELINE_ENV and CSV_FILE (or ES_URL, ES_INDEX)",
    SINK_TAG: "ES_MYSQL_PIPELINE_ENV and DB_URL, DB_TABLE (or OUTPUT_DIR)",
}


def describe_target(resource: Any) -> str:
    """``kind:target`` of a source or sink, e.g. ``csv:/data/events.csv`` or
    ``mysql:mysql+pymysql://loader@db:3306/prod#events`` (never a password)."""
    described = resource.describe()
    path = getattr(resource, "path", None)  # a file's full path, not the basename shown in logs
    return f"{described['type']}:{path or described['target']}"


def target_tags(source: Any, sink: Any) -> dict[str, str]:
    """The run tags naming the targets (the sink's table as a tag of its own too)."""
    sink_target = describe_target(sink)
    return {
        SOURCE_TAG: describe_target(source),
        SINK_TAG: sink_target,
        SINK_TABLE_TAG: sink_target.split(":", 1)[1],
    }


def mismatch(tags: Mapping[str, str], key: str, resolved: str) -> str | None:
    """One line when this process resolved ``resolved`` but the run was launched for another
    target; None when they agree or the run carries no such tag (an in-process run)."""
    launched = tags.get(key)
    if launched is None or launched == resolved:
        return None
    what = key.rsplit("/", 1)[1]
    return (
        f"this worker resolved the {what} {resolved!r} but the run was launched for "
        f"{launched!r}: set {_SETTINGS[key]} on every worker as on the launching process"
    )


def verify_target(context: dg.AssetExecutionContext, key: str, resource: Any) -> None:
    """Fail the step (a setting: no retry) when its ``key`` target differs from the launch's."""
    try:
        tags = context.run.tags
    except Exception:  # dagster's DagsterInvalidPropertyError, not exported: invoked directly
        return  # (a test, a script): no launch to compare with
    line = mismatch(tags, key, describe_target(resource))
    if line is not None:
        raise ConfigError(line)


def pool_name(table_key: str) -> str:
    """The Dagster pool of the load steps into one table: ``deploy/dagster.yaml`` gives each
    pool one slot, so two loads never write one table at once."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", table_key.replace("#", "."))
