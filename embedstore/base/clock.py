"""When this process started, on the `time.perf_counter` clock.

Why: a command's own time line must count what its user waited for. Before the first line of `embedstore demo`
runs, Python starts and imports the command (~0.3 s); a timer started inside the command misses that, and a timer
started after the heavy imports (torch, scikit-learn, transformers: ~3 s on 2 cores) misses more.
"""
from __future__ import annotations

import os
import time


def process_started() -> float | None:
    """The `time.perf_counter()` reading at which this process started (the kernel's start time of the process,
    to a clock tick), or None where the system does not say (no /proc, no CLOCK_BOOTTIME)."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            stat = f.read()
        # the fields after the command name (which may hold spaces and parentheses): field 22, the start time in
        # clock ticks since boot, is the 20th after it
        ticks = int(stat[stat.rindex(")") + 2:].split()[19])
        since_boot = time.clock_gettime(time.CLOCK_BOOTTIME)
        now = time.perf_counter()
        return now - (since_boot - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        return None
