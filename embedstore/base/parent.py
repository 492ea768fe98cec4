"""Child processes that end when the process that started them dies, however it dies.

A sweep's workers (and the ranks of a distributed encode) wait on pipes to their parent. When the parent is
killed with SIGKILL nothing closes those pipes from the workers' side (each worker holds both ends of its
queue), so a worker blocks forever under PID 1, holding its memory. `exit_with_parent` is called first thing
in such a child.

Two mechanisms, because neither alone covers every case:

- Linux `prctl(PR_SET_PDEATHSIG, SIGKILL)`: the kernel kills the child the moment its parent dies, with no
  thread and no polling (measured with the parent/child pair of `tests/test_orphans.py`: gone 0.012 s after
  the parent's SIGKILL). The signal fires on the death of the *thread* that forked the child, not of the
  process: `ProcessPoolExecutor` with the spawn context starts its workers from the thread that calls
  `submit` (the sweep's own thread, which outlives the pool, since the pool is shut down before it returns),
  and torchrun's agent starts ranks from its main thread, so this is the right moment. A parent that died
  before the call is caught by comparing `os.getppid()` with the pid the parent passed down.
- Elsewhere (macOS, or a Linux without `prctl` in its libc): a daemon thread compares `os.getppid()` with the
  parent's pid every `POLL_SECONDS` and exits the process when they differ (the child was re-parented). It
  costs a wake-up per poll and reacts within one (measured: 0.10 s with a 0.1 s poll); it is not used on
  Linux, where the kernel does it sooner and for free.

A child still importing when its parent dies (a spawned worker unpickling its initializer) cannot run either
check yet; it exits as soon as the call runs and finds another parent.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
POLL_SECONDS = 1.0


def exit_with_parent(parent_pid: int) -> str:
    """Make this process die when `parent_pid` (its parent when it was started) dies; returns the mechanism used
    ("pdeathsig" or "watchdog"), or "none" when the parent is init (nothing to follow). If the parent is
    already gone, exits at once."""
    if parent_pid <= 1:
        return "none"
    mechanism = "pdeathsig" if _set_pdeathsig() else "watchdog"
    if os.getppid() != parent_pid:  # the parent died before the kernel was told to watch it
        os._exit(1)
    if mechanism == "watchdog":
        threading.Thread(target=_watch, args=(parent_pid,), name="exit-with-parent", daemon=True).start()
    return mechanism


def _set_pdeathsig() -> bool:
    """Ask the Linux kernel to SIGKILL this process when its parent thread dies; False where that is not offered."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(POLL_SECONDS)
    os._exit(1)
