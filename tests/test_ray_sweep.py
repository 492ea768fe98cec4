"""Sweeps on Ray (issue 31): the same records as the local executor, failures recorded, Ctrl-C cancels tasks.

The Ray tests are heavy (a local Ray cluster takes seconds to start) and skip where Ray is not installed;
the missing-extra error is tested everywhere.
"""
from __future__ import annotations

import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from threadpoolctl import threadpool_limits
from typer.testing import CliRunner

from embedstore.cli.app import app
from embedstore.study.cells import Cell, SweepConfig, load_config
from embedstore.study.run import make_executor, run_study
from embedstore.study.sweep import read_results, run_sweep
from conftest import heavy_threads
from test_experiments import write_config
from test_sweep import make_config

TESTS = Path(__file__).resolve().parent
RUN_DEPENDENT = {"wall_time_s", "timestamp", "written_at", "hostname", "aligner_reused", "reused"}
"""When and where a cell ran, and whether another cell had fitted its aligner or head first (an order of
execution): the only fields allowed to differ, with any timing a runner reports ("seconds", "cell_seconds", ...)."""


def test_executor_ray_without_ray_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` does where the extra is not installed
    config = make_config(tmp_path)
    result = CliRunner().invoke(app, ["sweep", str(config.path), "--executor", "ray"])
    assert result.exit_code != 0
    assert result.output.strip() == ("error: --executor ray needs the ray package: pip install 'embedstore[ray]'")
    assert not config.results.exists()


def test_address_without_ray_executor_is_refused():
    with pytest.raises(Exception, match="--address auto: only --executor ray"):
        make_executor("local", address="auto")


def _comparable(value: Any) -> Any:
    """A record without its run-dependent fields, at any depth."""
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items() if k not in RUN_DEPENDENT and not k.endswith("seconds")}
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    return value


#: How far a float of a Ray record may sit from the local one's; integers, strings and booleans must be equal.
#: Both runs are at one thread (`test_ray_gives_the_local_records`), and there they agree to the bit (Intel Xeon
#: model 207, 2026-12-07, after tests/test_orphans.py, twice); the tolerance is for the last bits of a BLAS product.
#: Across thread counts they do not: with the local run at two threads, the FC aligner's training sums moved in
#: the last bits and the epochs carried them on (best validation loss 5e-4 relative apart, collapse variance ratios
#: 5e-5, C-search log-losses up to 1.1e-2), while every prediction, accuracy, count and choice of C was equal.
FLOAT_RTOL = 1e-5


def _differences(a: Any, b: Any, at: str = "") -> list[str]:
    """Paths at which two JSON values differ (an assertion message that says where); floats within FLOAT_RTOL."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _differences(a.get(k), b.get(k), f"{at}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{at}[{i}]")]
    if isinstance(a, float) and isinstance(b, float) and math.isclose(a, b, rel_tol=FLOAT_RTOL, abs_tol=1e-12):
        return []
    return [] if a == b else [f"{at}: {a!r:.80} != {b!r:.80}"]


@pytest.mark.heavy
def test_ray_gives_the_local_records(tiny_model_dir, tmp_path):
    pytest.importorskip("ray")
    from embedstore.study.ray_executor import RayExecutor

    config = load_config(write_config(tmp_path, tiny_model_dir, ["english", "langalign", "ablation-omit"],
                                      aligners=("procrustes", "fc")))
    # the local run at one thread like Ray's tasks (Ray sets OMP_NUM_THREADS=1 for a one-CPU task): a trained
    # aligner's floats are a function of the seed at a given thread count, not across counts (FLOAT_RTOL); before
    # aligners mapped rows in blocks of one shape (`aligners.base.map_rows`), the C search's log-losses also
    # differed with the order the cells ran in
    with threadpool_limits(limits=1), heavy_threads(1):
        local = run_study(config, workers=1, progress=False).summary
    assert not local.errors and local.ok
    local_records = read_results(config.results)
    config.results.rename(tmp_path / "local.jsonl")
    for fitted in (".aligners", ".heads"):  # Ray's cells fit their own aligners and heads
        shutil.rmtree(config.results.with_suffix(fitted), ignore_errors=True)

    on_ray = run_study(config, executor=RayExecutor(init_options=(("num_cpus", 2),)), progress=False).summary
    assert not on_ray.errors and len(on_ray.ok) == len(local.ok)
    ray_records = read_results(config.results)
    by_id = {r["cell_id"]: _comparable(r) for r in ray_records}
    assert len(by_id) == len(local_records)
    for record in local_records:
        assert not _differences(by_id[record["cell_id"]], _comparable(record)), record["cell"]
    assert all(r["provenance"]["wall_time_s"] > 0 for r in ray_records)

    again = run_study(config, executor=RayExecutor(init_options=(("num_cpus", 2),)), progress=False).summary
    assert not again.to_run and len(again.skipped) == len(local.ok)  # resuming reads the same file as ever


def slow_or_failing_runner(cell: Cell, config: SweepConfig) -> dict[str, Any]:
    """Seed 0 fails at once, seed 1 finishes at once, the others log their pid and sleep for a minute."""
    if cell.seed == 0:
        raise RuntimeError("diverged")
    if cell.seed > 1:
        with open(config.tasks["topic"]["pids"], "a", encoding="utf-8") as log:
            log.write(f"{os.getpid()}\n")
        time.sleep(60)
    return {"metrics": {"accuracy": cell.seed / 10}, "provenance": {}}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


@pytest.fixture
def ray_cluster(monkeypatch):
    """A local 2-CPU Ray whose workers can import this test module (the runners above are sent by reference)."""
    ray = pytest.importorskip("ray")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    ray.init(num_cpus=2, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.heavy
def test_failed_cell_is_recorded_and_ctrl_c_cancels_running_tasks(tmp_path, ray_cluster):
    from embedstore.study.ray_executor import RayExecutor

    pids = tmp_path / "pids"
    config = make_config(tmp_path, seeds=4, methods='["english"]', pids=pids)
    executor = RayExecutor()

    def interrupt_when_both_slow_cells_run(cell: Cell, outcome: dict[str, Any]) -> None:
        recorded.append((cell.seed, outcome["status"], outcome.get("error")))
        if len(recorded) == 4:  # seeds 0 and 1 of both task sizes are in; the driver is "interrupted"
            deadline = time.monotonic() + 60
            while (not pids.exists() or len(pids.read_text().split()) < 2) and time.monotonic() < deadline:
                time.sleep(0.2)
            raise KeyboardInterrupt

    recorded: list[tuple[int, str, str | None]] = []
    cells = sorted(run_sweep(config, slow_or_failing_runner, lambda c: "ctx", dry_run=True,
                             progress=False).to_run, key=lambda c: c.seed)
    with pytest.raises(KeyboardInterrupt):
        executor.run(cells, slow_or_failing_runner, config, interrupt_when_both_slow_cells_run)
    assert sorted(recorded) == [(0, "error", "RuntimeError: diverged")] * 2 + [(1, "ok", None)] * 2
    started = [int(p) for p in pids.read_text().split()]
    assert len(started) >= 2
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in started) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in started if _alive(pid)], "cancelled cells still running"


@pytest.mark.heavy
def test_sweep_cli_on_ray_records_failures_and_goes_on(tmp_path, ray_cluster, monkeypatch):
    """Through run_sweep: the failed cells are records with their error, every other cell is ok."""
    from embedstore.study.ray_executor import RayExecutor

    monkeypatch.chdir(tmp_path)
    config = make_config(tmp_path, seeds=2, methods='["english"]', pids=tmp_path / "pids")
    summary = run_sweep(config, slow_or_failing_runner, lambda c: "ctx", executor=RayExecutor(), progress=False)
    assert len(summary.errors) == 2 and len(summary.ok) == 2
    records = read_results(config.results)
    errors = [r for r in records if r["status"] == "error"]
    assert {r["error"] for r in errors} == {"RuntimeError: diverged"} and all("diverged" in r["traceback"] for r in errors)
