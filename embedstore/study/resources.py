"""What a cell needs from the machine that runs it, for executors that place cells (Ray).

Cells on cached vectors train small heads and aligners in seconds on one core. The methods that run the
transformer (`langalign-e2e`, the `adapt-*` methods) want a GPU, unless their config pins them to the CPU.
"""
from __future__ import annotations

from dataclasses import dataclass

from embedstore.study.cells import Cell, SweepConfig
from embedstore.study.methods import TABLE

@dataclass(frozen=True)
class CellResources:
    """CPU cores a cell uses, and whether it should get a GPU when the cluster has any."""

    cpus: float = 1.0
    wants_gpu: bool = False


def cell_resources(cell: Cell, config: SweepConfig) -> CellResources:
    """A text-training cell wants a GPU unless its `[e2e]`/`[adapt]` table sets `device = "cpu"`; others one core."""
    table = TABLE[cell.method].options  # methods that train on text take their device from their table
    if table is None:
        return CellResources()
    device = str((getattr(config, table) or {}).get("device", "auto"))
    return CellResources(wants_gpu=not device.startswith("cpu"))
