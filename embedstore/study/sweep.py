"""Run a sweep's cells: in local processes or on a Ray cluster (`embedstore.study.execution`), resumably, and safe against being killed at any moment.

The results file (JSONL) is the sweep's only state. Each finished cell is appended as one JSON line by one
`os.write` on an O_APPEND descriptor followed by `fsync`, and only the parent process writes, so a kill
(even `kill -9`) can at worst leave one unterminated last line, which readers ignore and the next run cuts
off before appending. A re-run skips every cell that already has an "ok" record computed in the same context,
and retries the ones that failed. The engine knows nothing of what a context is: the study layer hands it a
function from cell to context id (see `embedstore.study.context`).

Record written per cell::

    {"cell": {...asdict(cell)}, "cell_id": "...", "context": "...", "status": "ok",
     "metrics": {...from the runner},
     "predictions": {"file": "<cell_id>-<context>.safetensors", "test_ids": "...", "rows": n},
     "provenance": {...from the runner, "wall_time_s", "embedstore_version", "hostname", "written_at"
                    (`base.provenance.stamp`), "sweep", "model"}}

"predictions" is there when the runner returned per-test-row predictions: the driver writes them to
`<results>.predictions/` (`study.predictions`) before it appends the record that names them, so a record never
names a file that is not there (a kill in between leaves only an unnamed file, overwritten by the re-run).

A failed cell has "status": "error", a one-line "error" and its "traceback" instead of "metrics". The report
reads the runner's provenance keys "model_fingerprint" and "store_key" when present.
"""
from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column

from embedstore.study import predictions
from embedstore.study.cells import Cell, SweepConfig, expand
from embedstore.base.atomic import check_writable, write_bytes
from embedstore.base.errors import ConfigError, InputError
from embedstore.base.lock import WriterLock
from embedstore.base.progress import make_progress
from embedstore.study.execution import Executor, LocalExecutor, Runner, to_json
from embedstore.study.methods import TEXT_HEAD_METHODS, head_metrics
from embedstore.base.provenance import read_provenance, stamp

CellContext = Callable[[Cell], str]
"""A cell's context id: a hash of what shapes its result but is not part of the cell (model weights, data
files, settings behind a name). A finished record with another context is stale and runs again."""



@dataclass(frozen=True)
class SweepSummary:
    """What a sweep did (or, for a dry run, would do); the results file holds the records themselves."""

    name: str
    results: Path
    cells: tuple[Cell, ...]
    skipped: tuple[Cell, ...]
    to_run: tuple[Cell, ...]
    ok: tuple[Cell, ...]
    errors: tuple[tuple[Cell, str], ...]
    interrupted: bool
    dry_run: bool

    def __str__(self) -> str:
        """A short human summary, for the CLI to print."""
        head = f"{self.name}: {len(self.cells)} cells, {len(self.skipped)} already finished"
        if self.dry_run:
            return f"{head}, {len(self.to_run)} to run (dry run; nothing was run)"
        lines = [f"{head}, {len(self.ok)} ok, {len(self.errors)} failed -> {self.results}"]
        if self.interrupted:
            not_run = len(self.to_run) - len(self.ok) - len(self.errors)
            lines.append(f"interrupted: {not_run} cells not run; run the sweep again to resume")
        lines += [f"failed: {cell.describe()}: {message}" for cell, message in self.errors]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """The summary as `--json` prints it: the counts, the results file, each failure with its cell."""
        return {"name": self.name, "results": str(self.results), "cells": len(self.cells),
                "already_finished": len(self.skipped), "to_run": len(self.to_run), "ok": len(self.ok),
                "failed": [{"id": cell.id, "cell": cell.describe(), "error": message} for cell, message in self.errors],
                "interrupted": self.interrupted, "dry_run": self.dry_run}


def run_sweep(
    config: SweepConfig,
    runner: Runner,
    context: CellContext,
    *,
    workers: int = 2,
    executor: Executor | None = None,
    dry_run: bool = False,
    progress: bool = True,
) -> SweepSummary:
    """Run every unfinished cell of `config` and append one record per cell to `config.results`.

    A cell is finished when the file holds an "ok" record of it whose context is `context(cell)`; the record
    written carries that id, so a later run can tell.

    `executor` says where cells run (see `embedstore.study.execution`); by default a `LocalExecutor(workers)`:
    workers=1 runs cells in this process, more start that many spawned processes. Whatever the executor, this
    process alone writes the results file. A KeyboardInterrupt stops the workers (cancels remote tasks), keeps
    every finished record and returns with `interrupted=True`. Raises ConfigError when another sweep is writing
    the same results file.
    """
    executor = executor if executor is not None else LocalExecutor(workers)
    cells = expand(config)
    contexts = {cell.id: context(cell) for cell in cells}
    if dry_run:
        existing = read_results(config.results) if config.results.exists() else []
        skipped, to_run = _partition(config, cells, contexts, existing)
        return SweepSummary(config.name, config.results, tuple(cells), skipped, to_run, (), (), False, True)

    with appending(config.results) as (records, append):
        skipped, to_run = _partition(config, cells, contexts, records)
        ok: list[Cell] = []
        errors: list[tuple[Cell, str]] = []
        interrupted = False
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            # the last finished cell takes what width is left and is cut short, so the bar never squeezes
            TextColumn("{task.fields[last]}", table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1)),
        )
        with make_progress(*columns, enabled=progress, stderr=True, expand=True) as bar:
            task = bar.add_task(config.name, total=len(to_run), last="")

            def record(cell: Cell, outcome: dict[str, Any]) -> None:
                if outcome.get("predictions") is not None:
                    outcome["predictions"] = predictions.write(config.results, cell.id, contexts[cell.id],
                                                               outcome["predictions"])
                append(_make_record(config, cell, contexts[cell.id], outcome))
                if outcome["status"] == "ok":
                    ok.append(cell)
                    last = f"ok {escape(cell.describe())}"
                else:
                    errors.append((cell, outcome["error"]))
                    last = f"[red]error[/] {escape(cell.describe())}"
                    if progress:  # error text may hold brackets, which rich would read as markup
                        bar.console.print(
                            f"[red]error[/] {escape(cell.describe())}: {escape(outcome['error'])}", highlight=False
                        )
                bar.update(task, advance=1, last=last)

            try:
                executor.run(to_run, runner, config, record)
            except KeyboardInterrupt:
                interrupted = True
    return SweepSummary(
        config.name, config.results, tuple(cells), skipped, to_run, tuple(ok), tuple(errors), interrupted, False
    )


@contextmanager
def appending(results: Path) -> Iterator[tuple[list[dict[str, Any]], Callable[[dict[str, Any]], None]]]:
    """The results file under its writer lock, a killed run's partial last line cut off: yields the records it
    holds and a function that appends one record (one line, fsynced). The only way anything writes a results
    file, so every writer (a sweep, `study.backfill`) excludes the others and appends alike."""
    results.parent.mkdir(parents=True, exist_ok=True)
    lock = _lock(results).acquire()
    try:
        fd = os.open(results, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
    except BaseException:
        lock.release()
        raise
    held = [fd]  # the descriptor appended to, replaced when the file at the path is (`_still_the_file`)
    try:
        with warnings.catch_warnings():  # a partial last line is reported by _repair_tail, which cuts it
            warnings.simplefilter("ignore")
            records = read_results(results)  # a file that is not a results file is refused, unwritten
        _repair_tail(fd, results)

        def append(record: dict[str, Any]) -> None:
            held[0] = _still_the_file(held[0], results)
            _append_line(held[0], record)

        yield records, append
    finally:
        os.close(held[0])
        lock.release()


def _still_the_file(fd: int, path: Path) -> int:
    """`fd`, if the results path still names the file it is open on; else the file now at the path, opened for
    appending. Why: a results file replaced during a long sweep (a `git checkout` or `git stash` of a tracked
    results file, an editor's save) left every later record in the old, unlinked file: finished cells lost
    without a word. The records the new file lacks are not restored (the next run re-runs those cells); the
    warning says so."""
    try:
        now = os.stat(path)
    except FileNotFoundError:
        now = None
    held = os.fstat(fd)
    if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
        return fd
    warnings.warn(f"{path}: the results file was replaced while this run appended to it; appending to the file "
                  "now at that path (records the replacement lacks are not in it: the next run re-runs those cells)",
                  stacklevel=3)
    os.close(fd)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    _repair_tail(fd, path)
    return fd


def check_results_writable(path: Path) -> None:
    """Refuse, before anything is encoded, a results path this sweep could not append to: a directory that takes
    no new file, a file that cannot be opened for appending (nothing is written), or one that is not a results
    file. `run_sweep` checks the file again under its lock, before its first write."""
    check_writable(path)
    if path.is_file():
        try:
            open(path, "ab").close()
        except OSError as e:
            raise ConfigError(f"{path}: cannot append to the results file ({e.strerror or e}); expected a writable "
                              "file") from None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            read_results(path)


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """Every record of a results file, deduplicated (the last record of a cell wins).

    An unterminated last line that does not parse is what a killed writer leaves: it is ignored with a
    warning. Any other unreadable line means the file was damaged otherwise, and raises InputError.
    Provenance reads under today's names (`base.provenance.read_provenance`). Cell records (no "kind", or
    "kind": "cell") are keyed by cell_id; analysis records (e.g. "kind":
    "cosine") by (kind, cell_id) when they carry a cell_id, and are otherwise all kept.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such results file") from None
    records: dict[tuple[str, str], dict[str, Any]] = {}
    for lineno, record in _records(path, data):
        if record is None:
            continue
        kind = record.get("kind", "cell")
        if kind == "cell":
            if not isinstance(record.get("cell_id"), str) or record.get("status") not in ("ok", "error"):
                raise InputError(f"{path}:{lineno}: a cell record needs a string 'cell_id' and status 'ok' or 'error'")
            key = ("cell", record["cell_id"])
        else:
            key = (str(kind), str(record.get("cell_id", f"line {lineno}")))
        if isinstance(record.get("provenance"), dict):  # records of older versions read under today's names
            record["provenance"] = read_provenance(record["provenance"])
        if kind == "cell":
            _with_head_metrics(record)
        records[key] = record
    return list(records.values())


def _with_head_metrics(record: dict[str, Any]) -> None:
    """A text-head cell's record written before it said what its head trained gets it now (`methods.head_metrics`,
    the function the runners write it with), so readers never tell such records apart by their age."""
    cell, metrics = record.get("cell"), record.get("metrics")
    if isinstance(cell, dict) and isinstance(metrics, dict) and cell.get("method") in TEXT_HEAD_METHODS \
            and isinstance(cell.get("head"), str):
        record["metrics"] = {**head_metrics(cell["method"], cell["head"]), **metrics}


def upgrade_results(path: str | Path) -> int:
    """Rewrite the provenance of a results file's older records under today's names (`read_provenance`: a
    record that carried both `embedstore` and `embedstore_version` keeps the one field), in place, whole or not
    at all, under the sweep's lock; returns how many records changed (0: nothing to do, nothing written).

    Reading already maps the old names, so this changes nothing any reader sees: it only lets the files on
    disk carry one vocabulary. Every other line, and every other byte of a changed line, stays as written
    (cell ids, contexts and predictions are keyed by fields it does not touch), and running it again is a no-op.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such results file")
    with _lock(path):
        data = path.read_bytes()
        lines, changed = data.split(b"\n"), 0
        for lineno, record in _records(path, data):
            provenance = record.get("provenance") if record is not None else None
            if isinstance(provenance, dict) and (current := read_provenance(provenance)) != provenance:
                record["provenance"] = current
                lines[lineno - 1] = json.dumps(record, ensure_ascii=False).encode("utf-8")
                changed += 1
        if changed:
            write_bytes(path, b"\n".join(lines))
    return changed


def _records(path: Path, data: bytes) -> Iterator[tuple[int, dict[str, Any] | None]]:
    """(line number, its record) for each non-blank line of a results file; the record is None for an
    unterminated last line that does not parse (a killed writer's, warned of). Any other unreadable line is an
    InputError: the file was damaged otherwise."""
    lines = data.split(b"\n")
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError; nesting too deep
            record = None
        if not isinstance(record, dict):
            if lineno == len(lines):  # no newline after it: an interrupted write
                warnings.warn(f"{path}:{lineno}: ignoring a partial last line (an interrupted write)", stacklevel=3)
                yield lineno, None
                continue
            raise InputError(f"{path}:{lineno}: not a JSON object; the results file is damaged")
        yield lineno, record


def _partition(
    config: SweepConfig, cells: list[Cell], contexts: dict[str, str], records: Iterable[dict[str, Any]]
) -> tuple[tuple[Cell, ...], tuple[Cell, ...]]:
    """Split cells into (finished, to run); warn about finished cells whose context has changed."""
    finished = {
        record["cell_id"]: record.get("context")
        for record in records
        if record.get("kind", "cell") == "cell" and record["status"] == "ok"
    }
    skipped: list[Cell] = []
    to_run: list[Cell] = []
    stale = 0
    for cell in cells:
        if cell.id not in finished:
            to_run.append(cell)
        elif finished[cell.id] == contexts[cell.id]:
            skipped.append(cell)
        else:
            stale += 1
            to_run.append(cell)
    if stale:
        warnings.warn(
            f"{config.results}: {stale} finished cells were computed with another model, task definition or "
            "settings (their context changed); running them again",
            stacklevel=3,
        )
    return tuple(skipped), tuple(to_run)


def _make_record(config: SweepConfig, cell: Cell, context: str, outcome: dict[str, Any]) -> dict[str, Any]:
    """The full JSONL record: cell, ids, outcome and where/when/with what it was computed."""
    provenance = {
        **outcome.get("provenance", {}),
        "wall_time_s": outcome.get("wall_time_s"),  # None when the worker died mid-cell
        **stamp(),
        "hostname": outcome.get("hostname") or stamp()["hostname"],  # where the cell ran; None if its worker died
        "sweep": config.name,
        "model": config.model,
    }
    record: dict[str, Any] = {
        "cell": asdict(cell),
        "cell_id": cell.id,
        "context": context,
        "status": outcome["status"],
    }
    if outcome["status"] == "ok":
        record["metrics"] = outcome["metrics"]
        if outcome.get("predictions"):
            record["predictions"] = outcome["predictions"]
    else:
        record["error"] = outcome["error"]
        record["traceback"] = outcome["traceback"]
    record["provenance"] = provenance
    return record


def _append_line(fd: int, record: dict[str, Any]) -> None:
    """Append one record as one line with a single write, then fsync.

    json.dumps escapes newlines inside strings, so the record is exactly one line. A write to a regular file
    is not split by signals, so Ctrl-C lands before or after it; only a SIGKILL mid-write (or a full disk)
    can leave a partial line, which readers ignore and `_repair_tail` cuts before the next append. fsync
    makes a finished record survive a power cut too, not just a dead process.
    """
    data = memoryview((json.dumps(record, ensure_ascii=False, default=to_json) + "\n").encode("utf-8"))
    while data:  # a regular file takes the whole buffer at once; loop in case the OS says otherwise
        data = data[os.write(fd, data) :]
    os.fsync(fd)


def _lock(results: Path) -> WriterLock:
    """The lock on the results file itself: two sweeps appending to one file would duplicate work."""
    return WriterLock(results, lambda _: ConfigError(
        f"{results}: another sweep is writing this results file; wait for it or use another"), records_pid=False)


def _repair_tail(fd: int, path: Path) -> None:
    """Make the file end with a newline before appending, so a killed run's partial line stays separate.

    A partial last line that does not parse is cut off (with a warning); one that parses (only its newline
    was lost) is kept and terminated.
    """
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    start = data.rfind(b"\n") + 1
    try:
        json.loads(data[start:])
    except ValueError:
        if not data[start:].startswith(b'{"'):  # every record starts so: this is another kind of file
            raise InputError(f"{path}: ends in a line that is not the start of a results record (a JSON object); "
                             "not a results file, so it is left as it is: choose another results path") from None
        warnings.warn(f"{path}: removing a partial last line left by an interrupted run", stacklevel=3)
        os.ftruncate(fd, start)
        return
    os.write(fd, b"\n")


