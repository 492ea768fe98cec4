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
import os
import pickle
import signal
import sys
import time
import traceback
from collections import deque
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
    """Run cells in spawned worker processes, keeping at most `workers` cells in flight.

    Submitting only as many cells as there are workers means that on an interrupt nothing but the running
    cells is lost, and when a worker process dies (out of memory, segfault) the cells it may have been
    running are known: they are recorded as errors and a fresh pool carries on with the rest.
    """
    queue = deque(cells)
    workers = min(workers, len(queue))  # no idle processes, and a bigger thread share for the ones that run
    while queue:
        pool = _WARM.pop(workers, None) or _new_pool(workers)
        running: dict[Future[dict[str, Any]], Cell] = {}
        broken = False
        try:
            while (queue or running) and not broken:
                while queue and len(running) < workers:
                    cell = queue.popleft()
                    try:
                        running[pool.submit(execute, runner, cell, config)] = cell
                    except BrokenProcessPool:
                        queue.appendleft(cell)  # it never started; the next pool runs it
                        broken = True
                        break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    cell = running.pop(future)
                    try:
                        outcome = future.result()
                    except BrokenProcessPool:
                        broken = True
                        outcome = crash_outcome()
                    except Exception as exc:  # raised outside the runner, e.g. it cannot be unpickled in a worker
                        outcome = error_outcome(exc)
                    record(cell, outcome)
            for cell in running.values():  # only left over when the pool broke
                record(cell, crash_outcome())
        except BaseException:
            _stop_workers(pool)
            raise
        pool.shutdown(wait=True)


def _new_pool(workers: int) -> ProcessPoolExecutor:
    """`workers` spawned processes, each capped at its share of the cores (`_init_worker`)."""
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                               initargs=(worker_threads(workers), os.getpid()))


@contextmanager
def warm_workers(workers: int, module: str) -> Iterator[None]:
    """Start the pool of `workers` processes now and have each import `module` (the runner's), for the first
    local run of that many workers inside the block to take over; a pool no run took is stopped on leaving.

    Why: a cell worker spends ~2.5 CPU-s importing torch and scikit-learn before its first cell. Started while
    this process does single-threaded work (the demo's first build of the model), those imports use the core it
    leaves idle instead of delaying the first cells. Nothing is started for fewer than two workers (cells then
    run in this process)."""
    if workers >= 2:
        pool = _new_pool(workers)
        for _ in range(workers):
            pool.submit(_import, module)
        _WARM[workers] = pool
    try:
        yield
    finally:
        left = _WARM.pop(workers, None)
        if left is not None:
            _stop_workers(left)


def _import(module: str) -> None:
    import importlib

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
    its process table.
    """
    processes = list((pool._processes or {}).values())
    for process in processes:
        process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
    # reaped here, so none is left running or unreaped when this returns (a final .ci/run found an unused warm
    # pool's worker alive 30 s after its terminate); a worker that ignores SIGTERM gets SIGKILL
    for process in processes:
        process.join(timeout=_STOP_GRACE_S)
        if process.is_alive():
            process.kill()
            process.join()


def worker_threads(workers: int) -> int:
    """Math-library threads each of `workers` cell workers gets: its share of the cores this process may use."""
    return max(1, _cores() // workers)


def _cores() -> int:
    """CPU cores this process may use (affinity-aware, so a container's CPU limit is respected)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
