"""Where a sweep's cells run: the `Executor` interface, what every executor runs per cell, and the local one.

The sweep engine (`embedstore.study.sweep`) owns the results file and hands an executor the cells to run and a
`record` callback; the executor only decides where each cell runs and calls `record` in the driver, one cell at
a time, as outcomes arrive. So every executor shares resuming, deduplication and the report, and the driver
stays the single writer of results. Executors: `LocalExecutor` (this process, or a pool of spawned processes)
and `embedstore.study.ray_executor.RayExecutor` (Ray tasks on a cluster).
"""
from __future__ import annotations

import json
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from embedstore.base.errors import ConfigError
from embedstore.base.parent import exit_with_parent
from embedstore.base.provenance import hostname

if TYPE_CHECKING:  # the cells import the estimators (torch, scikit-learn): a caller starts its pool before those
    from embedstore.study.cells import Cell, SweepConfig

Runner = Callable[["Cell", "SweepConfig"], dict[str, Any]]
"""Runs one cell: returns {"metrics": {...}, "provenance": {...}} and optionally "predictions" (a
`study.predictions.RowPredictions.to_payload()`), all JSON-serialisable (numpy scalars are fine). With workers > 1 or on Ray it must be a picklable top-level function, because it runs in other processes."""

RecordSink = Callable[["Cell", dict[str, Any]], None]
"""Called in the driver with each cell's outcome (see `execute`) as soon as it is known."""

_THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class Executor(Protocol):
    """Runs cells somewhere and reports each outcome to `record` in the calling process.

    `run` returns when every cell has been recorded. On KeyboardInterrupt it stops (and, for remote workers,
    cancels) whatever is still running before re-raising, so nothing outlives the driver; outcomes already
    recorded stay recorded.
    """

    def run(self, cells: Sequence[Cell], runner: Runner, config: SweepConfig, record: RecordSink) -> None: ...


def execute(runner: Runner, cell: Cell, config: SweepConfig) -> dict[str, Any]:
    """Run one cell and return its outcome; never raises for a runner error, so one bad cell cannot stop a sweep.

    Runs where the cell runs (a worker process, a Ray task), so the result is made JSON-safe there and only
    plain data crosses back.
    """
    start = time.perf_counter()
    try:
        outcome = _checked_result(runner(cell, config))
    except Exception as exc:
        outcome = error_outcome(exc)
    outcome["wall_time_s"] = round(time.perf_counter() - start, 3)
    outcome["hostname"] = hostname()
    return outcome


def error_outcome(exc: BaseException) -> dict[str, Any]:
    """An error outcome: a one-line message for tables and logs, and the traceback for debugging."""
    message = " ".join(f"{type(exc).__name__}: {exc}".split())
    return {"status": "error", "error": message, "traceback": "".join(traceback.format_exception(exc))}


def to_json(value: object) -> object:
    """JSON fallback for numpy scalars/arrays (anything with `.tolist()`) and paths."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} value {value!r:.100} is not JSON-serialisable")


def check_picklable(runner: Runner, where: str) -> None:
    """Fail fast, with advice, when a runner cannot be sent to other processes (lambdas, closures)."""
    try:
        pickle.dumps(runner)
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        raise TypeError(
            f"runner {runner!r} cannot be pickled for {where} ({exc}); "
            "make it a top-level function of an importable module, or use workers=1"
        ) from None


def _checked_result(result: object) -> dict[str, Any]:
    """Validate a runner's return value against the runner contract and round-trip it through JSON."""
    if not isinstance(result, dict) or not isinstance(result.get("metrics"), dict):
        raise TypeError(f"runner must return {{'metrics': {{...}}, 'provenance': {{...}}}}, got {result!r:.200}")
    extra = set(result) - {"metrics", "provenance", "predictions"}
    if extra:
        raise TypeError(f"runner returned unexpected keys {sorted(extra)}; allowed: metrics, provenance, predictions")
    provenance = result.get("provenance", {})
    if not isinstance(provenance, dict):
        raise TypeError(f"runner's 'provenance' must be a dict, got {provenance!r:.200}")
    plain = json.loads(json.dumps({"metrics": result["metrics"], "provenance": provenance,
                                   "predictions": result.get("predictions")}, default=to_json))
    return {"status": "ok", **plain}


def crash_outcome(what: str = "a worker process died while this cell was running "
                               "(out of memory or a crash in native code?)") -> dict[str, Any]:
    """The outcome of a cell whose worker died; which of the running cells killed it may be unknown."""
    return {"status": "error", "error": what, "traceback": ""}


@dataclass(frozen=True)
class LocalExecutor:
    """Cells on this machine: in this process (workers=1: tracebacks and debuggers work as usual) or in that many
    spawned processes, each limited to cores // workers BLAS/torch threads so they do not oversubscribe the CPU."""

    workers: int = 2

    def __post_init__(self) -> None:
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise ConfigError(f"workers: {self.workers!r} must be a positive integer")

    def run(self, cells: Sequence[Cell], runner: Runner, config: SweepConfig, record: RecordSink) -> None:
        if self.workers == 1:
            for cell in cells:
                record(cell, execute(runner, cell, config))
        else:
            check_picklable(runner, "worker processes")
            _run_pool(cells, runner, config, self.workers, record)


def _run_pool(cells: Iterable[Cell], runner: Runner, config: SweepConfig, workers: int, record: RecordSink) -> None:
    """Run cells in spawned worker processes, keeping at most `workers` cells in flight, each chosen for the
    worker that is free (`_Schedule`).

    Submitting only as many cells as there are workers means that on an interrupt nothing but the running
    cells is lost, that the free worker is the one the next cell goes to (so cells can be chosen for it), and
    when a worker process dies (out of memory, segfault) the cells it may have been running are known: they
    are recorded as errors and a fresh pool carries on with the rest.
    """
    schedule = _Schedule(cells)
    workers = min(workers, len(schedule.waiting))  # no idle processes, and a bigger thread share for the ones that run
    while schedule.waiting:
        pool = _WARM.pop(workers, None) or _new_pool(workers)
        running: dict[Future[tuple[int, dict[str, Any]]], Cell] = {}
        free: list[int | None] = [None] * workers  # a fresh pool's workers: which process is which is not known yet
        broken = False
        try:
            while (schedule.waiting or running) and not broken:
                while free and (cell := schedule.next_for(free[-1])) is not None:
                    try:
                        running[pool.submit(_execute_here, runner, cell, config)] = cell
                    except BrokenProcessPool:
                        schedule.put_back(cell)  # it never started; the next pool runs it
                        broken = True
                        break
                    free.pop()
                if not running:  # nothing in flight: the pool broke at its first submit
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    cell = running.pop(future)
                    worker = None
                    try:
                        worker, outcome = future.result()
                    except BrokenProcessPool:
                        broken = True
                        outcome = crash_outcome()
                    except Exception as exc:  # raised outside the runner, e.g. it cannot be unpickled in a worker
                        outcome = error_outcome(exc)
                    schedule.done(cell, worker)
                    free.append(worker)
                    record(cell, outcome)
            for cell in running.values():  # only left over when the pool broke
                schedule.done(cell, None)
                record(cell, crash_outcome())
        except BaseException:
            _stop_workers(pool)
            raise
        pool.shutdown(wait=True)


def _execute_here(runner: Runner, cell: Cell, config: SweepConfig) -> tuple[int, dict[str, Any]]:
    """`execute` in a pool's worker, with the worker's pid: which process holds what the cell left in memory."""
    return os.getpid(), execute(runner, cell, config)


class _Schedule:
    """Which waiting cell a free worker of a local pool runs next, by `Cell.shared_work`.

    Why not in grid order: in the paper's grid (`benchmarks/sweep.py`, 8 aligners × 7 task sizes on 2 workers)
    each worker ran cells of every aligner, so each mapped the grid's rows through all 8 and diagnosed them, and
    a cell of an aligner could start fitting it again while its first cell was still fitting it (measured:
    docs/performance.md, "The cells' order on the workers"). In order of preference a free worker takes: the
    first cell of a key no worker has run (its costly step: the fits start first, so no worker waits on a long
    one at the end), a cell of the key it ran last, then of a key it ran before, a cell of no key, and a key
    another worker ran (only when nothing else is left, so neither idles). A key whose first cell is running
    waits for it: a second worker would repeat the fit. Within a rank, grid order. Where a cell runs changes
    nothing in its result (fits and heads are kept on disk by what they were fitted on; `study.experiments`),
    only which process pays for the mapping."""

    def __init__(self, cells: Iterable[Cell]) -> None:
        self.waiting: list[Cell] = list(cells)
        self._owners: dict[Any, set[int]] = {}  # key -> the workers that ran a cell of it
        self._first_running: set[Any] = set()  # keys whose first cell is in flight
        self._last: dict[int, Any] = {}  # worker -> the key of the last cell it ran

    def next_for(self, worker: int | None) -> Cell | None:
        """The waiting cell `worker` (a pid; None: not known yet) should run, taken off the list; None when every
        waiting cell waits for a first cell in flight."""
        best, best_rank = None, None
        for i, cell in enumerate(self.waiting):
            rank = self._rank(cell.shared_work, worker)
            if rank is not None and (best_rank is None or rank < best_rank):
                best, best_rank = i, rank
                if rank == 0:
                    break
        if best is None:
            return None
        cell = self.waiting.pop(best)
        if best_rank == 0:
            self._first_running.add(cell.shared_work)
        return cell

    def _rank(self, key: Any, worker: int | None) -> int | None:
        if key is None:
            return 3
        if key in self._first_running:
            return None
        owners = self._owners.get(key)
        if not owners:
            return 0
        if worker in owners:
            return 1 if self._last.get(worker) == key else 2
        return 4

    def put_back(self, cell: Cell) -> None:
        """A cell `next_for` gave that never started: first in line again, its key unclaimed."""
        self.waiting.insert(0, cell)
        self._first_running.discard(cell.shared_work)

    def done(self, cell: Cell, worker: int | None) -> None:
        """`cell` finished (ok or not) on `worker` (None: its worker died, or is not known)."""
        key = cell.shared_work
        if key is None:
            return
        self._first_running.discard(key)  # a key's only cell in flight while it is listed is its first
        if worker is not None:
            self._owners.setdefault(key, set()).add(worker)
            self._last[worker] = key


def _new_pool(workers: int) -> ProcessPoolExecutor:
    """`workers` spawned processes, each capped at its share of the cores (`_init_worker`)."""
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                               initargs=(worker_threads(workers), os.getpid()))


@contextmanager
def warm_workers(workers: int, module: str) -> Iterator[None]:
    """Start the pool of `workers` processes now and have each import `module` (the runner's), for the first
    local run of that many workers inside the block to take over; a pool no run took is stopped on leaving.

    Why: a cell worker spends ~3 CPU-s importing torch and scikit-learn before its first cell. Started while
    this process does single-threaded work (the demo's first build of the model), those imports use the core it
    leaves idle instead of delaying the first cells. One worker imports at a time (a file lock): all at once, they
    took that core and a share of this process's too (three runnable processes on two cores), and the build they
    were meant to run beside took longer. Nothing is started for fewer than two workers (cells then run in this
    process)."""
    turns = None
    if workers >= 2:
        turns = tempfile.NamedTemporaryFile(prefix="embedstore-warm-", suffix=".lock")
        pool = _new_pool(workers)
        for _ in range(workers):
            pool.submit(_import, module, turns.name)
        _WARM[workers] = pool
    try:
        yield
    finally:
        left = _WARM.pop(workers, None)
        if left is not None:
            _stop_workers(left)
        if turns is not None:
            turns.close()


def _import(module: str, turn_lock: str) -> None:
    """Import `module` when no other warming worker is importing (an exclusive lock on `turn_lock`)."""
    import fcntl
    import importlib

    with open(turn_lock, "rb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        importlib.import_module(module)


_WARM: dict[int, ProcessPoolExecutor] = {}
"""Pools started by `warm_workers`, by their number of workers, until `_run_pool` takes one."""


def _init_worker(threads: int, parent_pid: int) -> None:
    """Worker start-up: die with the parent, leave Ctrl-C to it and cap math-library threads at this worker's share.

    A worker outliving a killed sweep would block forever on its queue (see `base.parent`), so it follows the
    sweep's pid from its first moment. The environment variables govern libraries loaded from now on (torch reads OMP_NUM_THREADS when it is
    imported, typically while the runner is unpickled); threadpoolctl and torch.set_num_threads cover those
    the parent's main module already loaded.
    """
    exit_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in _THREAD_ENV_VARS:
        os.environ[name] = str(threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


_STOP_GRACE_S = 5.0
"""How long a terminated worker may take to exit before it is killed."""


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Terminate a pool's workers at once: on an interrupt, waiting for running cells could take minutes.

    ProcessPoolExecutor has no public way to do this before Python 3.14 (terminate_workers), so this reads
    its process table. Only the pool's own manager thread reaps the workers (`shutdown(wait=True)` waits for
    it): this thread waits on their sentinels instead of joining them, because two threads in `waitpid` on one
    child race, and the loser's `Process` reads "alive" for an already-dead worker (a final CI run saw an unused
    warm pool's worker "alive" after this function returned; 9 of 40 rounds reproduced it here). A worker that
    ignores SIGTERM gets SIGKILL after `_STOP_GRACE_S`, so the wait for the manager cannot hang.
    """
    processes = list((pool._processes or {}).values())
    for process in processes:
        process.terminate()
    running = {process.sentinel: process for process in processes}
    deadline = time.monotonic() + _STOP_GRACE_S
    while running and (left := deadline - time.monotonic()) > 0:
        for sentinel in multiprocessing.connection.wait(list(running), timeout=left):
            del running[sentinel]
    for process in running.values():
        process.kill()
    pool.shutdown(wait=True, cancel_futures=True)


def worker_threads(workers: int) -> int:
    """Math-library threads each of `workers` cell workers gets: its share of the cores this process may use."""
    return max(1, _cores() // workers)


def _cores() -> int:
    """CPU cores this process may use (affinity-aware, so a container's CPU limit is respected)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
