"""Rich progress bars shared by long jobs, so every command reports rate, elapsed time and ETA the same way.

On a terminal (or in Jupyter) a bar redraws in place. Anywhere else (output redirected to a log file, a batch
job) rich draws nothing until the bar stops, so a 17-minute encode once looked dead in its log until it ended;
there every bar built here prints one plain line per task at a steady interval instead (`LogProgress`).
"""
from __future__ import annotations

import math
import threading
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable, Iterator, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

LOG_INTERVAL = 30.0
"""Seconds between progress lines on a non-terminal: often enough to show life, rare enough for a log."""


class RateColumn(ProgressColumn):
    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} {self.unit}/s" if speed else f"- {self.unit}/s", style="progress.data.speed")


class LogProgress(Progress):
    """A `Progress` that draws nothing live and instead prints, every `interval` seconds and once when it
    stops, a line per task: done/total, percent, rate, elapsed, time left, and the task's numeric fields."""

    def __init__(self, *columns: ProgressColumn | str, console: Console, interval: float) -> None:
        super().__init__(*columns, console=console, disable=True)
        self.interval = interval
        self.unit = next((c.unit for c in columns if isinstance(c, RateColumn)), "")
        self._stopped = threading.Event()
        self._ticker: threading.Thread | None = None

    def add_task(self, *args, **kwargs) -> TaskID:
        """A task's first line is printed as it starts (a step that runs minutes must not wait `interval` to show
        life), then every `interval` seconds."""
        task = super().add_task(*args, **kwargs)
        if self._ticker is not None:
            self._print_lines()
        return task

    def start(self) -> None:
        if self._ticker is None:
            self._stopped.clear()
            self._ticker = threading.Thread(target=self._tick, name="progress-log", daemon=True)
            self._ticker.start()

    def stop(self) -> None:
        if self._ticker is not None:
            self._stopped.set()
            self._ticker.join()
            self._ticker = None
            self._print_lines()

    def _tick(self) -> None:
        while not self._stopped.wait(self.interval):
            self._print_lines()

    def _print_lines(self) -> None:
        with self._lock:
            lines = [log_line(task, self.unit) for task in self.tasks if task.visible]
        for line in lines:
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)


def log_line(task: Task, unit: str = "") -> str:
    """One task's state as plain text, e.g. `encoding: 1,200/5,000 texts (24%), 85.3/s, elapsed 0:00:14,
    left 0:00:45`."""
    unit = f" {unit}" if unit else ""
    total = f"/{task.total:,.0f}{unit} ({100 * task.completed / task.total:.0f}%)" if task.total else unit
    rate = task.finished_speed or task.speed or (task.completed / task.elapsed if task.elapsed else None)
    parts = [f"{task.description}: {task.completed:,.0f}{total}",
             f"{rate:,.1f}/s" if rate else "-/s", f"elapsed {_clock(task.elapsed)}"]
    if not task.finished and task.total and rate:
        parts.append(f"left {_clock((task.total - task.completed) / rate)}")
    parts += [f"{name} {value:.4g}" for name, value in task.fields.items()
              if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)]
    return ", ".join(parts)


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "-:--:--"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


_ON_STDERR: ContextVar[bool] = ContextVar("embedstore_bars_on_stderr", default=False)


@contextmanager
def bars_on_stderr() -> Iterator[None]:
    """Inside, every bar built here draws (or logs) on stderr: for a job whose results are its standard output
    (`predict` prints a line per text), so that a pipe or a file of results never holds a progress line, and for
    the bars deep in what it calls (an encode's) without a stream argument through every signature between."""
    token = _ON_STDERR.set(True)
    try:
        yield
    finally:
        _ON_STDERR.reset(token)


def make_progress(*columns: ProgressColumn | str, enabled: bool = True, stderr: bool = False,
                  expand: bool = False, file: TextIO | None = None, interval: float = LOG_INTERVAL) -> Progress:
    """The one place a `Progress` is built; callers choose the columns. `stderr` (or being inside
    `bars_on_stderr`) keeps the bar out of stdout, where a command may be printing JSON; `file` sends it
    elsewhere. When that stream is not a terminal the bar is a `LogProgress` printing a line to it every
    `interval` seconds."""
    console = Console(file=file) if file is not None else Console(stderr=stderr or _ON_STDERR.get())
    if enabled and not (console.is_terminal or console.is_jupyter):
        return LogProgress(*columns, console=console, interval=interval)
    return Progress(*columns, console=console, disable=not enabled, expand=expand)


def watched(progress: bool | None) -> bool:
    """The Python API's `progress=None`: bars and step lines when a person is watching (standard output is a
    terminal, or a notebook), none in a script whose output goes to a file or a pipe. The README's Python example
    once ran for minutes without a line because every function defaulted to silence."""
    if progress is not None:
        return progress
    console = Console()
    return console.is_terminal or console.is_jupyter


LONG_INPUT = 500
"""Texts from which a call of varying length (predictions) shows progress by default (`watched_long`): about 5 s
of e5-small on two CPU cores (2,000 texts took 14-18 s in benchmarks/encode.py), the length of step that should
say it is running; fewer are answered before a bar would tell anything."""


def watched_long(progress: bool | None, items: int) -> bool:
    """`watched` for a call whose input may be a handful of texts or a file's worth: None shows progress to a person
    watching only when there are `LONG_INPUT` items or more; True and False decide as given."""
    return progress if progress is not None else items >= LONG_INPUT and watched(None)


def progress_bar(unit: str, *, enabled: bool = True) -> Progress:
    """Items of `unit` processed: count, rate, elapsed time, ETA."""
    return make_progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                         RateColumn(unit), TimeElapsedColumn(), TimeRemainingColumn(), enabled=enabled)


def step_lines(*, enabled: bool = True) -> Callable[[str], None]:
    """A function printing one stderr line as each step of a job starts, with the seconds since the first: for
    jobs made of a few long steps without a countable unit (an export, a graph build), where a bar would sit at
    0 % for minutes."""
    import sys
    import time

    start = time.perf_counter()

    def step(message: str) -> None:
        if enabled:
            print(f"[{time.perf_counter() - start:6.1f} s] {message}", file=sys.stderr, flush=True)

    return step


_STEP: ContextVar[Callable[[str], None] | None] = ContextVar("embedstore_step", default=None)


@contextmanager
def reporting_steps(enabled: bool = True) -> Iterator[Callable[[str], None]]:
    """Inside, `note_step` prints a `step_lines` line: a job with progress on lets the slow steps deep in what it
    calls (an ONNX graph's export and check, the engines' measurement) say they have started, without a progress
    argument through every signature between them."""
    step = step_lines(enabled=enabled)
    token = _STEP.set(step if enabled else None)
    try:
        yield step
    finally:
        _STEP.reset(token)


def note_step(message: str) -> None:
    """One stderr line as a slow step starts, when a caller is `reporting_steps`; nothing otherwise."""
    step = _STEP.get()
    if step is not None:
        step(message)
