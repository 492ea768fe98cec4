"""Rich progress bars shared by long jobs, so every command reports rate, elapsed time and ETA the same way."""
from __future__ import annotations

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.text import Text


class RateColumn(ProgressColumn):
    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} {self.unit}/s" if speed else f"- {self.unit}/s", style="progress.data.speed")


def make_progress(*columns: ProgressColumn | str, enabled: bool = True, stderr: bool = False,
                  expand: bool = False) -> Progress:
    """The one place a `Progress` is built; callers choose the columns. `stderr` keeps the bar out of stdout,
    where a command may be printing JSON."""
    return Progress(*columns, console=Console(stderr=True) if stderr else None, disable=not enabled,
                    expand=expand)


def progress_bar(unit: str, *, enabled: bool = True) -> Progress:
    """Items of `unit` processed: count, rate, elapsed time, ETA."""
    return make_progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                         RateColumn(unit), TimeElapsedColumn(), TimeRemainingColumn(), enabled=enabled)
