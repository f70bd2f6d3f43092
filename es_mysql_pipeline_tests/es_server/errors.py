"""Error responses shaped like Elasticsearch's, including the search-phase wrapper."""

from __future__ import annotations

from typing import Any


class EsError(Exception):
    """An error response; ``body`` is the full JSON error as real ES sends it."""

    def __init__(self, status: int, etype: str, reason: str, **extra: Any) -> None:
        super().__init__(reason)
        cause = {"type": etype, "reason": reason, **extra}
        self.status = status
        self.body: dict[str, Any] = {
            "error": {"root_cause": [cause], **cause},
            "status": status,
        }
        self.headers: dict[str, str] = {}


def _search_phase_error(status: int, etype: str, reason: str) -> EsError:
    """Shard-level failures are wrapped like ES does: root cause inside the phase error."""
    err = EsError(status, etype, reason)
    err.body["error"] = {
        "root_cause": [{"type": etype, "reason": reason}],
        "type": "search_phase_execution_exception",
        "reason": "all shards failed",
        "phase": "query",
        "grouped": True,
        "caused_by": {"type": etype, "reason": reason},
    }
    return err
