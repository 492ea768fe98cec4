"""What the machine did while a benchmark timed something: the one home of the load counters the benchmarks print.

Why: on a shared or virtual 2-core machine a timing's spread has three causes the timing alone cannot tell apart:
the timed code itself (a first run, the page cache), other processes, and the hypervisor running another guest on
our cores (CPU "steal"). The kernel counts the last two (/proc/stat) and the process's own CPU time
(`os.times`), so a benchmark records them around each timed block and prints them beside its spread.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path


BUSY_CORES = 0.25
"""Cores that other processes and the hypervisor may take during a timed block before the benchmarks call the
machine busy (no verdict): an eighth of a 2-core machine; a quiet one measures a few hundredths."""


def cpu_counters() -> tuple[float, float, float] | None:
    """(this process's CPU seconds, the busy seconds of every CPU, the seconds the hypervisor stole) so far; None
    where /proc/stat cannot be read (not Linux)."""
    own = os.times()
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields + [0] * (8 - len(fields))
    hz = os.sysconf("SC_CLK_TCK")
    return own.user + own.system, (user + nice + system + irq + softirq) / hz, steal / hz


@contextmanager
def machine_load(result: dict):
    """Adds to `result` what the machine did during the block, in cores (CPU seconds per second of wall time):
    `cpu` this process, `others` every other process, `steal` the hypervisor. Nothing where the counters cannot
    be read."""
    before, t0 = cpu_counters(), time.perf_counter()
    yield
    after, wall = cpu_counters(), max(time.perf_counter() - t0, 1e-9)
    if before is not None and after is not None:
        own = after[0] - before[0]
        result.update(cpu=own / wall, others=max(0.0, after[1] - before[1] - own) / wall,
                      steal=(after[2] - before[2]) / wall)


def cores_text(values: list[float], loads: list[dict], slowest=max) -> str:
    """The load during the slowest of a measurement's repeats (`slowest`: max for seconds, min for a rate): cores
    it kept busy / cores every other process used / cores the hypervisor stole; "n/a" without counters."""
    load = loads[values.index(slowest(values))] if values and len(loads) == len(values) else {}
    return "/".join(f"{load[k]:.2f}" for k in ("cpu", "others", "steal")) if "cpu" in load else "n/a"


def taken(loads: list[dict]) -> float:
    """The most cores other processes and the hypervisor took during any of these repeats (0 without counters)."""
    return max((load.get("others", 0.0) + load.get("steal", 0.0) for load in loads), default=0.0)
