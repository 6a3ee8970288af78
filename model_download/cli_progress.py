"""Progress bars for the terminal: one bar per model, bytes done of total."""

from __future__ import annotations

import threading

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.progress import Progress as Bars

from model_download.progress import Progress


def byte_bars(console: Console, enabled: bool = True, **options) -> Bars:
    """Rich bars of bytes: description, bar, done of total, speed, time left."""
    return Bars(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
        **options,
    )


class RichProgress(Progress):
    """Draws download progress with rich; usable as a context manager around the pulls."""

    def __init__(self, console: Console, enabled: bool = True) -> None:
        self._bars = byte_bars(console, enabled, transient=False)
        self._tasks: dict[str, TaskID] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> RichProgress:
        self._bars.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._bars.__exit__(*exc_info)

    def start(self, label: str, total: int) -> None:
        with self._lock:
            self._tasks[label] = self._bars.add_task(label, total=total)

    def advance(self, label: str, nbytes: int) -> None:
        with self._lock:
            task = self._tasks.get(label)
        if task is not None:
            self._bars.advance(task, nbytes)

    def finish(self, label: str, ok: bool) -> None:
        with self._lock:
            task = self._tasks.get(label)
        if task is not None and not ok:
            self._bars.update(task, description=f"{label} [red](failed)[/red]")
