"""What a cell needs from the machine that runs it, for executors that place cells (Ray).

Cells on cached vectors train small heads and aligners in seconds on one core. The methods that run the
transformer (`langalign-e2e`, the `adapt-*` methods) want a GPU, unless their config pins them to the CPU.
"""
from __future__ import annotations

from dataclasses import dataclass

from embedstore.study.cells import ADAPT_METHODS, Cell, SweepConfig

TEXT_METHODS: frozenset[str] = frozenset({"langalign-e2e", *ADAPT_METHODS})
"""Methods that train or run the transformer on text, not on cached vectors."""


@dataclass(frozen=True)
class CellResources:
    """CPU cores a cell uses, and whether it should get a GPU when the cluster has any."""

    cpus: float = 1.0
    wants_gpu: bool = False


def cell_resources(cell: Cell, config: SweepConfig) -> CellResources:
    """A text-training cell wants a GPU unless its `[e2e]`/`[adapt]` table sets `device = "cpu"`; others one core."""
    if cell.method not in TEXT_METHODS:
        return CellResources()
    section = config.e2e if cell.method == "langalign-e2e" else config.adapt
    device = str((section or {}).get("device", "auto"))
    return CellResources(wants_gpu=not device.startswith("cpu"))
