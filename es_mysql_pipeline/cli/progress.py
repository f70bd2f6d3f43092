"""What a person at the terminal sees while a long run works."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any


class Progress:
    """A one-line progress bar on a terminal, a log line every few seconds otherwise."""

    def __init__(self, enabled: bool, stream: Any = sys.stderr) -> None:
        self.tty = enabled and stream.isatty()
        self.enabled = enabled
        self.stream = stream
        self.started = time.monotonic()
        self.last = 0.0 if self.tty else self.started
        self.lock = threading.Lock()

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        with self.lock:
            if now - self.last < (0.2 if self.tty else 5.0):
                return
            self.last = now
            rate = done / max(now - self.started, 1e-6)
            if total:
                frac = min(done / total, 1.0)
                bar = "#" * int(frac * 30)
                text = f"{stage:9s} [{bar:30s}] {done:>10,}/{total:,} {rate:,.0f}/s"
            else:
                text = f"{stage:9s} {done:>10,} records {rate:,.0f}/s"
            if self.tty:
                self.stream.write("\r" + text + " " * 4)
            else:
                self.stream.write(text + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\r" + " " * 80 + "\r")
            self.stream.flush()
