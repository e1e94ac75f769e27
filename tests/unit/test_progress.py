"""Long work shows progress in a log file or a container too: periodic lines, not a silent bar."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from rich.progress import Progress

from federation.progress import LineProgress, progress

pytestmark = pytest.mark.unit


def test_a_terminal_gets_a_bar_and_a_log_gets_lines_with_counts_and_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(progress(Console(file=io.StringIO(), force_terminal=True)), Progress)
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    bar = progress(console)
    assert isinstance(bar, LineProgress)
    clock = iter(float(t) for t in range(0, 1000, 10))
    monkeypatch.setattr("federation.progress.time.monotonic", lambda: next(clock))
    with LineProgress(console, interval_s=30) as lines:
        task = lines.add_task("embedding documents", total=12)
        for _ in range(12):
            lines.advance(task)
    printed = out.getvalue().splitlines()
    # Every 30 s a line, and one when the work ends: what, how far, how fast.
    assert len(printed) >= 3 and printed[-1].startswith("embedding documents: 12/12 (")
    assert all("/s, " in line or " s each, " in line for line in printed)
