"""What the machine did while a benchmark timed something: the one home of the load counters the benchmarks print.

Why: on a shared or virtual 2-core machine a timing's spread has three causes the timing alone cannot tell apart:
the timed code itself (a first run, the page cache), other processes, and the hypervisor running another guest on
our cores (CPU "steal"). The kernel counts the last two (/proc/stat) and the process's own CPU time, so a
benchmark records them around each timed block and prints them beside its spread.

/proc/stat counts whole clock ticks (10 ms at the usual USER_HZ of 100), charged to whatever each core was doing
when its tick came. Over a block of a few milliseconds one tick reads as a busy core: on a quiet machine,
benchmarks/store.py's `store info` (1-8 ms, its ratio fixed at 1.00x by the floor) got "noisy, no verdict" from
this check alone. So the share of the others is judged over a window of at least `MIN_WINDOW`: a block shorter than
that is followed by a wait (after its timing, so the timing is untouched) that completes the window, and the
counters are read at its end.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple


BUSY_CORES = 0.25
"""Cores that other processes and the hypervisor may take during a timed block before the benchmarks call the
machine busy (no verdict): an eighth of a 2-core machine; a quiet one measures a few hundredths."""

MIN_WINDOW = 0.2
"""Seconds of the shortest window the others' share is judged over: a stray tick then weighs 0.05 cores, so
it takes five (50 ms of another process's CPU) to pass `BUSY_CORES`, where a 10 ms window took one."""


class Counters(NamedTuple):
    own: float  # this process's CPU seconds (time.process_time: exact, not in ticks)
    busy: float  # busy seconds of every CPU (/proc/stat: whole ticks)
    steal: float  # seconds the hypervisor stole (/proc/stat: whole ticks)


def cpu_counters() -> Counters | None:
    """This process's CPU seconds, the busy seconds of every CPU and the seconds the hypervisor stole so far;
    None where /proc/stat cannot be read (not Linux)."""
    own = time.process_time()
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields + [0] * (8 - len(fields))
    hz = os.sysconf("SC_CLK_TCK")
    return Counters(own, (user + nice + system + irq + softirq) / hz, steal / hz)


def cores(before: Counters, at_end: Counters, after: Counters, wall: float, window: float) -> dict:
    """The rule, on counters read before a block, at its end and at the end of its window (`after`, read `window`
    seconds after `before`; the block took `wall`): `cpu`, the cores the block kept busy (its own CPU time over
    its own duration), `others` and `steal`, the cores every other process and the hypervisor took over the
    whole window."""
    own_window = after.own - before.own
    return {"cpu": (at_end.own - before.own) / wall,
            "others": max(0.0, after.busy - before.busy - own_window) / window,
            "steal": max(0.0, after.steal - before.steal) / window}


@contextmanager
def machine_load(result: dict):
    """Adds to `result` what the machine did during the block, in cores (`cores`), the others' share judged
    over at least MIN_WINDOW seconds. Nothing where the counters cannot be read."""
    before, t0 = cpu_counters(), time.perf_counter()
    yield
    wall = max(time.perf_counter() - t0, 1e-9)
    at_end = cpu_counters()
    if before is None or at_end is None:
        return
    if wall < MIN_WINDOW:
        time.sleep(MIN_WINDOW - wall)
    after, window = cpu_counters(), max(time.perf_counter() - t0, 1e-9)
    if after is not None:
        result.update(cores(before, at_end, after, wall, window))


def cores_text(values: list[float], loads: list[dict], slowest=max) -> str:
    """The load during the slowest of a measurement's repeats (`slowest`: max for seconds, min for a rate): cores
    it kept busy / cores every other process used / cores the hypervisor stole; "n/a" without counters."""
    load = loads[values.index(slowest(values))] if values and len(loads) == len(values) else {}
    return "/".join(f"{load[k]:.2f}" for k in ("cpu", "others", "steal")) if "cpu" in load else "n/a"


def taken(loads: list[dict]) -> float:
    """The most cores other processes and the hypervisor took during any of these repeats (0 without counters)."""
    return max((load.get("others", 0.0) + load.get("steal", 0.0) for load in loads), default=0.0)
