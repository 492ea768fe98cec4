"""Cells as Ray tasks: a sweep spread over a cluster's CPUs and GPUs, with the driver still the one writer.

Each cell is one task running `execution.execute`, so a failing runner comes back as an error outcome like
anywhere else; a task that dies (its worker or node lost) is recorded as an error naming Ray's reason, and the
rest go on. Outcomes are recorded in the driver as they finish, in whatever order; the results file is the same
set of records as the local executor writes. Ctrl-C (or any exception) in the driver force-cancels every
task not yet recorded, so no cell keeps running on the cluster for a sweep that has stopped.

The cluster's nodes need what a local run needs: embedstore installed (the runner is sent by reference to its
module), and the config's model, task files and store at the same paths (a shared filesystem) or URLs.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from embedstore.base.optional import require
from embedstore.study.cells import Cell, SweepConfig
from embedstore.study.execution import RecordSink, Runner, check_picklable, crash_outcome, execute
from embedstore.study.resources import CellResources, cell_resources


@dataclass(frozen=True)
class RayExecutor:
    """Runs cells on the Ray cluster at `address` ("auto", "HOST:PORT", "ray://HOST:PORT"), or, with None, on
    the cluster `RAY_ADDRESS` names or a local one started for the sweep and stopped after it.

    `init_options` go to `ray.init` when this executor starts Ray (tests pass num_cpus=2). Ray is imported
    on construction, so a missing extra fails before any work starts.
    """

    address: str | None = None
    resources: Callable[[Cell, SweepConfig], CellResources] = cell_resources
    init_options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        require("ray", "ray", "--executor ray")

    def run(self, cells: Sequence[Cell], runner: Runner, config: SweepConfig, record: RecordSink) -> None:
        import ray

        if not cells:
            return
        check_picklable(runner, "Ray tasks")
        started = not ray.is_initialized()
        if started:
            ray.init(address=self.address, log_to_driver=False, **dict(self.init_options))
        pending: dict[Any, Cell] = {}
        try:
            gpus = ray.cluster_resources().get("GPU", 0) > 0
            task = ray.remote(execute)
            runner_ref, config_ref = ray.put(runner), ray.put(config)
            for cell in cells:
                needs = self.resources(cell, config)
                options = {"num_cpus": needs.cpus, "num_gpus": 1 if needs.wants_gpu and gpus else 0,
                           "max_retries": 0, "name": cell.describe()}
                pending[task.options(**options).remote(runner_ref, cell, config_ref)] = cell
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    cell = pending.pop(ref)
                    try:
                        outcome = ray.get(ref)
                    except ray.exceptions.RayError as exc:  # the task's worker or node died, or it was cancelled
                        outcome = crash_outcome(f"the Ray task died while this cell was running: "
                                                f"{' '.join(f'{type(exc).__name__}: {exc}'.split())[:500]}")
                    record(cell, outcome)
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        finally:
            if started:
                ray.shutdown()
