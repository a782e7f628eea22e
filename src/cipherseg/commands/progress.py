"""Rich progress bars for the CLI: one bar per protocol stage."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

console = Console(stderr=False)

_LABELS = {
    "encrypt": "encrypting customer blocks",
    "init": "k-means++ with secure selection",
    "iterate": "encrypted Lloyd iterations",
}


class StageProgress:
    """Context manager showing a bar per stage; ``callback`` feeds it from the protocol."""

    def __init__(self) -> None:
        self._progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
            MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=False,
        )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> StageProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._progress.__exit__(exc_type, exc, tb)

    def stage(self, key: str, description: str, total: int | None = 1) -> None:
        if key not in self._tasks:
            self._tasks[key] = self._progress.add_task(description, total=total)

    def done(self, key: str) -> None:
        task = self._tasks[key]
        total = self._progress.tasks[task].total or 1
        self._progress.update(task, completed=total)

    def callback(self, stage: str, done: int, total: int) -> None:
        self.stage(stage, _LABELS.get(stage, stage), total)
        self._progress.update(self._tasks[stage], completed=done, total=total)
