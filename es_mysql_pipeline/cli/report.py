"""Reading a finished run's outcome: its materialization metadata, its failure, the summary."""

from __future__ import annotations

from typing import Any

from es_mysql_pipeline import metadata_keys as keys


def step_metadata(result: Any, asset: str) -> dict[str, Any]:
    for event in result.get_asset_materialization_events():
        if event.asset_key.path[-1] == asset:
            return {k: v.value for k, v in event.materialization.metadata.items()}
    return {}


def failure_message(result: Any) -> tuple[str, bool]:
    """The failed step's one-line message, and whether it was a configuration error."""
    failures = result.get_step_failure_events()
    if not failures:
        return "the run failed", False
    data = failures[0].step_failure_data
    user = data.user_failure_data
    if user is not None and user.description:
        kind = user.metadata.get(keys.ERROR_KIND)
        return str(user.description), getattr(kind, "value", kind) == keys.CONFIG_ERROR_KIND
    err = data.error  # Dagster sets it on every step failure; the innermost cause says why
    while err.cause is not None:
        err = err.cause
    return err.message.strip().splitlines()[-1], False


def print_summary(
    raw: dict[str, Any], clean: dict[str, Any], load: dict[str, Any], elapsed: float
) -> None:
    """The steps' metadata as the seed script's summary."""
    processed = int(load.get(keys.PROCESSED, 0))
    rows: list[tuple[str, Any]] = [
        ("time field", raw.get(keys.TIMESTAMP_FIELD) or "none"),
        (keys.PROCESSED, processed),
        (keys.INSERTED, load.get(keys.INSERTED, 0)),
        (keys.UPDATED, load.get(keys.UPDATED, 0)),
        ("skipped (duplicates)", load.get(keys.SKIPPED, 0)),
        (keys.FAILED, load.get(keys.FAILED, 0)),
        *([(keys.DELETED, load[keys.DELETED])] if keys.DELETED in load else []),
        ("duration", f"{elapsed:.2f} s"),
        (
            "  fetch/transform/load",
            " / ".join(f"{m.get(keys.DURATION_SECONDS) or 0:.2f} s" for m in (raw, clean, load)),
        ),
        ("throughput", f"{processed / elapsed:,.0f} records/s" if elapsed > 0 else "-"),
    ]
    if load.get(keys.COLUMNS_ADDED) or load.get(keys.COLUMNS_WIDENED):
        rows.append(
            (
                "schema changes",
                f"{load.get(keys.COLUMNS_ADDED, 0)} columns added, "
                f"{load.get(keys.COLUMNS_WIDENED, 0)} widened",
            )
        )
    if load.get(keys.FIELDS_DISCARDED):
        rows.append(
            ("fields discarded", f"{load['fields_discarded']}: {load.get('discarded_fields', '')}")
        )
    for label, key in (
        ("dead letter (transform)", keys.TRANSFORM_DEAD_LETTER_PATH),
        ("dead letter (load)", keys.DEAD_LETTER_PATH),
    ):
        path = load.get(key)
        if path and path != keys.NOTHING:
            rows.append((label, path))
    width = max(len(k) for k, _ in rows)
    print("Summary")
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
