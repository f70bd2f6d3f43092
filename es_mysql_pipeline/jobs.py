"""A code location whose runs execute their steps on celery workers (the ``distributed``
extra; serve it with ``dagster api grpc -m es_mysql_pipeline.jobs``).

Every run of the assets uses the celery executor (broker ``DAGSTER_CELERY_BROKER_URL``,
results ``DAGSTER_CELERY_BACKEND_URL``). A run launched without the targets in its tags
(the implicit asset job) gets the run worker's before the first step, and each step on a
worker checks its own against them (``es_mysql_pipeline.targets``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dagster as dg

# dagster-celery takes its retry mode as a class dagster does not export; take it from
# dagster-celery's own executor module, as its celery_executor does.
from dagster_celery.executor import CELERY_CONFIG, CeleryExecutor, RetryMode

from es_mysql_pipeline import definitions as base
from es_mysql_pipeline.component import celery_config


class CeleryRecordingTargets(CeleryExecutor):
    """The celery executor, adding the run worker's targets to an untagged run first."""

    def execute(self, plan_context: Any, execution_plan: Any) -> Iterator[Any]:
        run = plan_context.dagster_run
        missing = {k: v for k, v in base.launch_tags().items() if k not in run.tags}
        if missing:
            plan_context.instance.add_run_tags(run.run_id, missing)
        yield from super().execute(plan_context, execution_plan)


@dg.executor(
    name="celery_checked_targets",
    config_schema=CELERY_CONFIG,
    requirements=dg.multiple_process_executor_requirements(),
)
def celery_checked_targets(init_context: dg.InitExecutorContext) -> dg.Executor:
    config = init_context.executor_config
    given = {k: config.get(k) for k in ("broker", "backend", "config_source", "include")}
    retries = RetryMode.from_config(config["retries"])  # type: ignore[arg-type]
    return CeleryRecordingTargets(**given, retries=retries)


EXECUTOR = celery_checked_targets.configured(celery_config(), name="celery")

defs = base.env_defs(executor=EXECUTOR)
