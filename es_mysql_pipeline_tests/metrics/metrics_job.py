"""A small two-step asset job with known counts, wired like the real one (hooks + sensor)."""

# No "from __future__ import annotations": Dagster reads the Config annotation of `loaded`.

import dagster as dg

from es_mysql_pipeline.hooks import PIPELINE_METRICS_HOOKS
from es_mysql_pipeline.metrics.pushgateway import PushgatewayResource
from es_mysql_pipeline.metrics.recorder import get_recorder
from es_mysql_pipeline.sensors import PIPELINE_ID_TAG, build_pipeline_metrics_sensor

PROCESSED, INSERTED, FAILED, INSERT_SECONDS = 100, 90, 10, 0.3
#: 0.3 s lies in the (0.25, 0.5] bucket: histogram_quantile interpolates linearly.
P95_INSERT = 0.25 + (0.5 - 0.25) * 0.95


class FailConfig(dg.Config):
    fail: bool = False


@dg.asset(hooks=PIPELINE_METRICS_HOOKS)  # on the assets, as in build_assets
def fetched() -> int:
    recorder = get_recorder()
    recorder.records("processed", PROCESSED, "fetch")
    recorder.duration("fetch", 0.2)
    return PROCESSED


@dg.asset(hooks=PIPELINE_METRICS_HOOKS)
def loaded(config: FailConfig, fetched: int) -> None:
    recorder = get_recorder()
    recorder.state("running")
    recorder.records("failed", FAILED, "transform")
    recorder.records("inserted", INSERTED, "load")
    recorder.duration("insert", INSERT_SECONDS)
    recorder.last_record_timestamp(1_700_000_000)
    recorder.dead_letter("transform", FAILED)
    if config.fail:
        recorder.retry("load")
        recorder.error("ConnectionError", "load")
        raise RuntimeError("sink went away after the first batch")
    recorder.state("stopped")
    recorder.success()


metrics_job = dg.define_asset_job("metrics_job", selection=[fetched, loaded])
#: A user's own job over the same assets: its runs count too (issue 11).
user_job = dg.define_asset_job("user_job", selection=[fetched, loaded])


@dg.asset
def unrelated() -> None:
    """Not one of the watched assets: its runs are not counted."""


unrelated_job = dg.define_asset_job("unrelated_job", selection=[unrelated])
metrics_sensor = build_pipeline_metrics_sensor((fetched.key, loaded.key), name="metrics_sensor")
#: One sensor over two pipelines, and one sensor per pipeline (issue 26's two shapes).
both_sensor = build_pipeline_metrics_sensor(
    (fetched.key, loaded.key), name="both_sensor", pipeline_ids=("a", "b")
)
a_sensor = build_pipeline_metrics_sensor(
    (fetched.key, loaded.key), name="a_sensor", pipeline_ids=("a",)
)
b_sensor = build_pipeline_metrics_sensor(
    (fetched.key, loaded.key), name="b_sensor", pipeline_ids=("b",)
)


def make_defs(pushgateway: PushgatewayResource) -> dg.Definitions:
    return dg.Definitions(
        assets=[fetched, loaded, unrelated],
        jobs=[metrics_job, user_job, unrelated_job],
        sensors=[metrics_sensor, both_sensor, a_sensor, b_sensor],
        resources={"pushgateway": pushgateway},
    )


def run(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    fail: bool = False,
    job_name: str = "metrics_job",
) -> bool:
    job = defs.resolve_job_def(job_name)
    config = {"ops": {"loaded": {"config": {"fail": fail}}}} if job_name != "unrelated_job" else {}
    return job.execute_in_process(
        instance=instance, run_config=config, raise_on_error=False
    ).success


def run_tagged(defs: dg.Definitions, instance: dg.DagsterInstance, pipeline_id: str) -> bool:
    """A run of ``metrics_job`` tagged as one of pipeline ``pipeline_id``."""
    return (
        defs.resolve_job_def("metrics_job")
        .execute_in_process(instance=instance, tags={PIPELINE_ID_TAG: pipeline_id})
        .success
    )


def tick_said(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    cursor: str | None,
    sensor_name: str = "metrics_sensor",
) -> tuple[str, str]:
    """One sensor evaluation as the daemon does it; the new cursor and the skip reason."""
    sensor = defs.resolve_sensor_def(sensor_name)
    with dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"pushgateway": (defs.resources or {})["pushgateway"]},
    ) as context:
        data = sensor.evaluate_tick(context)
        assert context.cursor is not None and not data.run_requests
        return context.cursor, data.skip_message or ""


def tick(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None) -> str:
    """One sensor evaluation as the daemon does it; returns the new cursor."""
    return tick_said(defs, instance, cursor)[0]
