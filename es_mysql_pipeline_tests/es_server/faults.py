"""Fault injection and the counters tests and the benchmark read."""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass
class Fault:
    """One injected fault; ``match`` is a regex on ``METHOD path``; fires ``count`` times."""

    kind: str  # "status" | "drop" | "delay" | "expire" | "shards"
    count: int
    match: str | None = None
    after: int = 0
    status: int = 503
    retry_after: str | None = None
    delay: float = 0.0
    fired: int = 0

    def wants(self, line: str) -> bool:
        if self.count <= 0 or (self.match and not re.search(self.match, line)):
            return False
        if self.after > 0:
            self.after -= 1
            return False
        self.count -= 1
        self.fired += 1
        return True


@dataclass
class Stats:
    """Counters for tests and the benchmark."""

    requests: int = 0
    by_endpoint: dict[str, int] = field(default_factory=dict)
    #: wall time spent answering requests (a slow reader on the other end counts too)
    serving_seconds: float = 0.0
    #: CPU time of the threads answering requests: the server's own cost
    serving_cpu_seconds: float = 0.0
    faults_fired: int = 0
    stale_pit_ids: int = 0
    pits_opened: int = 0
    pits_closed: int = 0
    #: the (id, max) of every slice searched
    slices_seen: set[tuple[int, int]] = field(default_factory=set)
