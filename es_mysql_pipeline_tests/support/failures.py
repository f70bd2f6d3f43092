"""What a failed Dagster run says, read from its step-failure events (duck-typed, so this
module does not import Dagster)."""

from __future__ import annotations

from typing import Any

NO_STEP_FAILURE = "(the run failed without a step failure)"


def step_failure_message(
    result: Any, *, last_line: bool = False, default: str = NO_STEP_FAILURE
) -> str:
    """The user-facing message of the first failed step: the ``dg.Failure`` description, else
    the innermost error's message (only its last line with ``last_line``); ``default`` when no
    step failed."""
    for event in result.get_step_failure_events():
        data = event.step_failure_data
        if data.user_failure_data is not None and data.user_failure_data.description:
            return str(data.user_failure_data.description)
        err = data.error
        while err is not None and err.cause is not None:
            err = err.cause
        if err is None:
            return "(no message)"
        message: str = err.message.strip()
        return message.splitlines()[-1] if last_line and message else message
    return default
