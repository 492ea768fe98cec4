"""No orphans: children started by embedstore die with their parent, however the parent dies (issue 13, D2).

Before `base.parent`, a SIGKILLed sweep left its spawned workers alive under PID 1, blocked on their queue.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.fault("kill -9 of a sweep or its parent")

ROOT = Path(__file__).resolve().parents[1]

SWEEP = """
import os, sys, time
from embedstore.study.cells import load_config
from embedstore.study.sweep import run_sweep

def slow_runner(cell, config):
    with open(config.tasks["topic"]["pids"], "a") as log:
        log.write(f"{os.getpid()}\\n")
    time.sleep(2.0)
    return {"metrics": {"accuracy": cell.seed / 100}, "provenance": {}}

def context(cell):
    return "ctx"

if __name__ == "__main__":
    run_sweep(load_config(sys.argv[1]), slow_runner, context, workers=2, progress=False)
"""

CONFIG = """
name = "orphans"
store = "store.zarr"
model = "tiny"
[grid]
languages = ["ko"]
tasks = ["topic"]
methods = ["english"]
task_sizes = ["all"]
seeds = [0, 1, 2, 3, 4, 5, 6, 7]
[tasks.topic]
pids = "{pids}"
"""

CHAIN = """
import os, sys, time, subprocess
if sys.argv[1] == "parent":
    child = subprocess.Popen([sys.executable, __file__, "child", str(os.getpid()), sys.argv[2]])
    time.sleep(600)
else:
    from embedstore.base import parent
    if sys.argv[3] == "watchdog":
        parent._set_pdeathsig = lambda: False  # what a platform without prctl gets
        parent.POLL_SECONDS = 0.1
    mechanism = parent.exit_with_parent(int(sys.argv[2]))
    print(mechanism, flush=True)
    time.sleep(600)
"""


def children(pid: int) -> list[int]:
    """The pids of `pid`'s children, from /proc (Linux)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(p) for p in text]
    return found


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (a dead child its new parent has not reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_gone(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


linux_only = pytest.mark.skipif(not Path("/proc/self/task").is_dir() or not sys.platform.startswith("linux"),
                                reason="reads children from /proc")


@pytest.mark.heavy
@linux_only
def test_sigkilled_sweep_leaves_no_workers(tmp_path: Path) -> None:
    pids = tmp_path / "pids.txt"
    (tmp_path / "sweep.toml").write_text(CONFIG.format(pids=pids), encoding="utf-8")
    (tmp_path / "sweep.py").write_text(textwrap.dedent(SWEEP), encoding="utf-8")
    proc = subprocess.Popen([sys.executable, str(tmp_path / "sweep.py"), str(tmp_path / "sweep.toml")],
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=subprocess.PIPE)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        # the runner logs its pid: both workers are set up and running a cell
        while time.monotonic() < deadline and proc.poll() is None:
            workers = sorted({int(p) for p in pids.read_text().split()}) if pids.exists() else []
            if len(workers) == 2:
                break
            time.sleep(0.05)
        assert len(workers) == 2, proc.stderr.read() if proc.poll() is not None else "workers did not start"
        assert set(workers) <= set(children(proc.pid))
        proc.kill()
        proc.wait()
        left = wait_gone(workers, 5.0)
        assert left == [], f"workers {left} outlived their SIGKILLed sweep"
    finally:
        kill_all(workers)
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@pytest.mark.heavy
@linux_only
@pytest.mark.parametrize("mechanism", ["pdeathsig", "watchdog"])
def test_child_dies_with_its_parent(tmp_path: Path, mechanism: str) -> None:
    """Both mechanisms of `exit_with_parent`: the kernel's signal (Linux) and the portable polling thread."""
    script = tmp_path / "chain.py"
    script.write_text(textwrap.dedent(CHAIN), encoding="utf-8")
    proc = subprocess.Popen([sys.executable, str(script), "parent", mechanism],
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
    child: list[int] = []
    try:
        assert proc.stdout.readline().strip() == mechanism  # the child has set itself up
        child = children(proc.pid)
        assert len(child) == 1
        proc.kill()
        proc.wait()
        assert wait_gone(child, 5.0) == []
    finally:
        kill_all(child)
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
