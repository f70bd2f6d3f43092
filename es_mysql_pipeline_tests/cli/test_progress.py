"""The progress line: redrawn in place on a terminal, a log line every few seconds elsewhere."""

from __future__ import annotations

import io

import pytest

from es_mysql_pipeline.cli import progress as progress_module
from es_mysql_pipeline.cli.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(progress_module.time, "monotonic", clock)
    return clock


def test_a_terminal_gets_a_bar_redrawn_at_most_five_times_a_second(clock: Clock) -> None:
    out = Terminal()
    bar = Progress(True, out)
    clock.now += 2.0
    bar("load", 500, 1000)
    bar_half = "[" + "#" * 15 + " " * 15 + "]"
    assert out.getvalue() == f"\rload      {bar_half}        500/1,000 250/s    "
    clock.now += 0.1
    bar("load", 600, 1000)  # too soon: not redrawn
    assert out.getvalue().count("\r") == 1
    clock.now += 0.2
    bar("load", 2000, 1000)  # more than the total: a full bar
    assert out.getvalue().endswith("[" + "#" * 30 + "]      2,000/1,000 870/s    ")
    bar.close()
    assert out.getvalue().endswith("\r" + " " * 80 + "\r")


def test_elsewhere_a_line_every_five_seconds_and_no_bar_without_a_total(clock: Clock) -> None:
    out = io.StringIO()
    log = Progress(True, out)
    clock.now += 1.0
    log("fetch", 100, None)  # the first line waits five seconds too
    assert out.getvalue() == ""
    clock.now += 4.0
    log("fetch", 1000, None)
    assert out.getvalue() == "fetch          1,000 records 200/s\n"
    log.close()  # nothing to clear
    assert out.getvalue() == "fetch          1,000 records 200/s\n"


def test_disabled_writes_nothing(clock: Clock) -> None:
    out = Terminal()
    quiet = Progress(False, out)
    clock.now += 10.0
    quiet("load", 1, 2)
    quiet.close()
    assert out.getvalue() == ""
