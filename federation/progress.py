"""Progress of long work: a live bar on a terminal, periodic lines everywhere else.

A rich progress bar shows nothing until the end when its output is a log file or a
container's stdout; :func:`progress` then gives a :class:`LineProgress` that prints one line
per task every ``interval_s`` seconds (counts, rate, elapsed) and a last line when the work ends.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import Progress, ProgressColumn, TaskID

LINE_INTERVAL_S = 30.0


@dataclass
class _Task:
    description: str
    total: float | None
    completed: float = 0.0
    started: float = field(default_factory=lambda: time.monotonic())
    printed: float = field(default_factory=lambda: time.monotonic())


class LineProgress:
    """The part of rich's :class:`~rich.progress.Progress` our commands use, printed as periodic lines."""

    def __init__(self, console: Console, *, interval_s: float = LINE_INTERVAL_S) -> None:
        self.console = console
        self.interval_s = interval_s
        self._tasks: dict[TaskID, _Task] = {}

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        for task in self._tasks.values():
            self._print(task)

    @property
    def tasks(self) -> dict[TaskID, _Task]:
        """The tasks by id (each with ``description``, ``total`` and ``completed``)."""
        return self._tasks

    def add_task(self, description: str, total: float | None = None, **_: Any) -> TaskID:
        """Start a task (printed at the next interval)."""
        task_id = TaskID(len(self._tasks))
        self._tasks[task_id] = _Task(description, total)
        return task_id

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        """Count ``advance`` more units done."""
        self.update(task_id, advance=advance)

    def update(
        self,
        task_id: TaskID,
        *,
        description: str | None = None,
        total: float | None = None,
        completed: float | None = None,
        advance: float | None = None,
        **_: Any,
    ) -> None:
        """Change a task; prints its line when ``interval_s`` has passed since the last one."""
        task = self._tasks[task_id]
        if description is not None:
            task.description = description
        if total is not None:
            task.total = total
        if completed is not None:
            task.completed = completed
        if advance is not None:
            task.completed += advance
        if time.monotonic() - task.printed >= self.interval_s:
            self._print(task)

    def _print(self, task: _Task) -> None:
        task.printed = time.monotonic()
        elapsed = task.printed - task.started
        done = f"{task.completed:g}" + (f"/{task.total:g}" if task.total is not None else "")
        rate = task.completed / elapsed if elapsed > 0 else 0.0
        slow = 0 < rate < 1  # slow units (training rounds): seconds each reads better than 0.0/s
        pace = f"{elapsed / task.completed:.0f} s each" if slow else f"{rate:.1f}/s"
        self.console.print(f"{task.description}: {done} ({pace}, {elapsed:.0f} s)", highlight=False)


def progress(console: Console, *columns: str | ProgressColumn, **options: Any) -> Progress | LineProgress:
    """A rich progress bar when ``console`` is a terminal, else :class:`LineProgress` lines."""
    if console.is_terminal:
        return Progress(*columns, console=console, **options)
    return LineProgress(console)
