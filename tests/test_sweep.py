"""Running sweeps (embedstore.study.sweep): records, resume, failures, partial lines, kills, parallel workers.

The runners are top-level functions of this module so spawned worker processes can import them; they read
their knobs (call log, failure flag) from the task table, which the config hands to the runner anyway.
"""
from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedstore.study.cells import Cell, SweepConfig, expand, load_config
from embedstore.base.errors import ConfigError, InputError
from embedstore.study import predictions
from embedstore.study.predictions import PredictionReader, RowPredictions
from embedstore.study.sweep import appending, read_results, run_sweep, upgrade_results

ROOT = Path(__file__).resolve().parents[1]


def make_config(
    tmp_path: Path, *, seeds: int = 2, methods: str = '["english", "langalign"]', **task: Any
) -> SweepConfig:
    """A small sweep: 1 baseline + 1 aligner method x 1 aligner x 2 pair sizes, 2 task sizes, `seeds` seeds."""
    task_lines = "\n".join(f"{key} = {json.dumps(str(value))}" for key, value in task.items())
    text = f"""
name = "test"
store = "store.zarr"
model = "tiny"
[grid]
languages = ["ko"]
tasks = ["topic"]
methods = {methods}
task_sizes = ["1k", "all"]
pair_sizes = ["5k", "all"]
aligners = ["fc"]
seeds = {list(range(seeds))}
[tasks.topic]
{task_lines}
"""
    path = tmp_path / "sweep.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def fake_score(cell: Cell) -> float:
    return int(cell.id[:4], 16) / 0xFFFF


def fake_runner(cell: Cell, config: SweepConfig) -> dict[str, Any]:
    """Deterministic metrics; logs each call to `calls`; fails seed-1 langalign cells while `fail_flag` exists."""
    task = config.tasks[cell.task]
    if "calls" in task:
        with open(task["calls"], "a", encoding="utf-8") as log:
            log.write(cell.id + "\n")
    if "fail_flag" in task and Path(task["fail_flag"]).exists() and cell.seed == 1 and cell.method == "langalign":
        raise RuntimeError("aligner diverged\nloss = nan")
    return {
        "metrics": {"accuracy": np.float32(fake_score(cell)), "n_test": np.int64(100)},
        "provenance": {"model_fingerprint": "fp-tiny", "store_key": "tiny/mean/-1", "pid": os.getpid(),
                       "omp_threads": os.environ.get("OMP_NUM_THREADS")},
    }


def same_context(cell: Cell) -> str:
    """Every cell in one unchanging context: what a context is belongs to the study layer (test_context.py)."""
    return "ctx"


def crashing_runner(cell: Cell, config: SweepConfig) -> dict[str, Any]:
    """Kills its own worker process for seed 1, the way an out-of-memory kill or a segfault would."""
    if cell.seed == 1 and cell.method == "english" and cell.task_size == 1000:
        os._exit(1)
    return fake_runner(cell, config)


def raw_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def stable_view(records: list[dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    """Records minus what legitimately differs between runs (times, pids)."""
    volatile = {"wall_time_s", "written_at", "pid", "omp_threads"}
    view = {}
    for r in records:
        provenance = {key: value for key, value in r["provenance"].items() if key not in volatile}
        view[r["cell_id"]] = (r["cell"], r["status"], r.get("metrics"), provenance)
    return view


def test_records_have_cell_metrics_and_provenance(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    summary = run_sweep(config, fake_runner, same_context, workers=1, progress=False)
    cells = expand(config)
    assert len(cells) == (1 + 1 * 1 * 2) * 2 * 2 == 12
    assert len(summary.ok) == 12 and not summary.errors and not summary.interrupted
    records = raw_lines(config.results)
    assert [r["cell_id"] for r in records] == [c.id for c in cells]
    first = records[0]
    assert first["status"] == "ok"
    assert first["cell"] == dataclasses.asdict(cells[0])
    assert first["metrics"]["accuracy"] == pytest.approx(fake_score(cells[0]), abs=1e-6)
    assert first["metrics"]["n_test"] == 100
    provenance = first["provenance"]
    assert provenance["model_fingerprint"] == "fp-tiny" and provenance["sweep"] == "test"
    assert provenance["model"] == "tiny" and provenance["hostname"]
    assert provenance["wall_time_s"] >= 0 and provenance["written_at"].endswith("+00:00")
    assert isinstance(provenance["embedstore_version"], str)
    assert not {"embedstore", "timestamp", "host"} & set(provenance)  # one name per fact (issue 30.4)


def test_old_records_read_under_todays_provenance_names(tmp_path: Path) -> None:
    """Issue 30.4: records written before one vocabulary (`embedstore` beside or instead of
    `embedstore_version`, `timestamp`) read with today's names; a record carrying both keeps the new one."""
    path = tmp_path / "old.jsonl"
    old = [{"cell_id": "a", "status": "ok", "metrics": {}, "provenance": {
                "embedstore": "0.1.0", "embedstore_version": "0.2.0", "timestamp": "2026-01-01T00:00:00+00:00"}},
           {"cell_id": "b", "status": "ok", "metrics": {}, "provenance": {"embedstore": "0.1.0", "host": "h"}}]
    path.write_text("".join(json.dumps(r) + "\n" for r in old))
    a, b = (r["provenance"] for r in read_results(path))
    assert a == {"embedstore_version": "0.2.0", "written_at": "2026-01-01T00:00:00+00:00"}
    assert b == {"embedstore_version": "0.1.0", "hostname": "h"}


def test_upgrade_folds_old_names_on_disk_and_reads_the_same(tmp_path: Path) -> None:
    """Issue 30.4: the kept migration rewrites only the provenance of older records (a record with both version
    fields keeps one), leaves every other line byte for byte, reads the same before and after, and is idempotent."""
    path = tmp_path / "old.jsonl"
    old = [{"cell": {"seed": 0}, "cell_id": "a", "context": "c", "status": "ok", "metrics": {"accuracy": 0.1 + 0.2},
            "provenance": {"embedstore": "0.1.0", "embedstore_version": "0.1.0", "model": "m", "sizes": {"n": 3}}},
           {"cell_id": "b", "status": "ok", "metrics": {}, "provenance": {"embedstore_version": "0.2.0", "hostname": "h"}},
           {"cell_id": "c", "status": "ok", "metrics": {"é": 1}, "provenance": {"embedstore": "0.1.0", "host": "h"}}]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in old), encoding="utf-8")
    before_bytes, before = path.read_bytes(), read_results(path)

    assert upgrade_results(path) == 2
    lines = path.read_bytes().split(b"\n")
    assert lines[1] == before_bytes.split(b"\n")[1] and lines[3] == b""  # untouched line; still newline-ended
    upgraded = [json.loads(line) for line in lines if line]
    assert upgraded[0]["provenance"] == {"embedstore_version": "0.1.0", "model": "m", "sizes": {"n": 3}}
    assert upgraded[2]["provenance"] == {"embedstore_version": "0.1.0", "hostname": "h"}
    assert {k: v for k, v in upgraded[0].items() if k != "provenance"} == {
        k: v for k, v in old[0].items() if k != "provenance"}
    assert read_results(path) == before
    after = path.read_bytes()
    assert upgrade_results(path) == 0 and path.read_bytes() == after


def test_upgrade_refuses_a_damaged_or_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"cell_id": "a", "status": "ok", "provenance": {"embedstore": "0.1.0"}}\nnot json\n')
    with pytest.raises(InputError, match=r"r\.jsonl:2: not a JSON object"):
        upgrade_results(path)
    assert "embedstore" in path.read_text()  # nothing half-written
    with pytest.raises(InputError, match="no such results file"):
        upgrade_results(tmp_path / "missing.jsonl")
    assert not (tmp_path / "missing.jsonl").exists()


def predicting_runner(cell: Cell, config: SweepConfig) -> dict[str, Any]:
    """fake_runner's record plus per-row predictions, for the two baselines only (langalign keeps none)."""
    out = fake_runner(cell, config)
    if cell.method == "english":
        out["predictions"] = RowPredictions.of(["x", "y", "y"], ["x", "x", "y"], "rows-digest").to_payload()
    return out


def test_predictions_land_beside_the_results_and_the_record_names_them(tmp_path: Path) -> None:
    """The driver writes a cell's predictions before its record; cells without them (and older records) have no
    "predictions" entry, and read as before."""
    config = make_config(tmp_path, seeds=1)
    run_sweep(config, predicting_runner, same_context, workers=1, progress=False)
    records = read_results(config.results)
    named = [r for r in records if "predictions" in r]
    assert {r["cell"]["method"] for r in named} == {"english"} and len(named) == 2
    assert named[0]["predictions"] == {"file": f"{named[0]['cell_id']}-ctx.safetensors", "test_ids": "rows-digest",
                                       "rows": 3}
    rows = PredictionReader(config.results)(named[0])
    assert rows.labels == ("x", "y") and rows.correct.tolist() == [True, False, True]
    assert sorted(p.name for p in predictions.directory(config.results).iterdir()) == sorted(
        r["predictions"]["file"] for r in named)


def test_dry_run_runs_nothing_then_reports_skips(tmp_path: Path) -> None:
    calls = tmp_path / "calls.txt"
    config = make_config(tmp_path, calls=calls)
    dry = run_sweep(config, fake_runner, same_context, workers=1, dry_run=True, progress=False)
    assert dry.dry_run and len(dry.to_run) == 12 and dry.skipped == ()
    assert not config.results.exists() and not calls.exists()
    assert "12 to run" in str(dry)

    run_sweep(config, fake_runner, same_context, workers=1, progress=False)
    again = run_sweep(config, fake_runner, same_context, workers=1, dry_run=True, progress=False)
    assert len(again.skipped) == 12 and again.to_run == ()


def test_resume_skips_finished_cells(tmp_path: Path) -> None:
    calls = tmp_path / "calls.txt"
    config = make_config(tmp_path, calls=calls)
    run_sweep(config, fake_runner, same_context, workers=1, progress=False)
    assert len(calls.read_text().splitlines()) == 12
    calls.unlink()
    summary = run_sweep(config, fake_runner, same_context, workers=1, progress=False)
    assert not calls.exists()  # the runner was called 0 times
    assert len(summary.skipped) == 12 and summary.ok == ()
    assert len(raw_lines(config.results)) == 12


def test_failing_cell_is_recorded_and_retried_alone(tmp_path: Path) -> None:
    calls, flag = tmp_path / "calls.txt", tmp_path / "fail"
    flag.touch()
    config = make_config(tmp_path, calls=calls, fail_flag=flag)
    failing = {c.id for c in expand(config) if c.seed == 1 and c.method == "langalign"}
    assert len(failing) == 4

    summary = run_sweep(config, fake_runner, same_context, workers=1, progress=False)
    assert len(summary.ok) == 8 and {cell.id for cell, _ in summary.errors} == failing
    errors = [r for r in read_results(config.results) if r["status"] == "error"]
    assert {r["cell_id"] for r in errors} == failing
    assert errors[0]["error"] == "RuntimeError: aligner diverged loss = nan"  # one line
    assert "Traceback" in errors[0]["traceback"] and "metrics" not in errors[0]
    assert "failed" in str(summary) and "aligner diverged" in str(summary)

    flag.unlink()
    calls.unlink()
    summary = run_sweep(config, fake_runner, same_context, workers=1, progress=False)
    assert set(calls.read_text().splitlines()) == failing  # only the failed cells ran again
    assert len(summary.skipped) == 8 and len(summary.ok) == 4
    final = read_results(config.results)
    assert len(final) == 12 and all(r["status"] == "ok" for r in final)


@pytest.mark.parametrize(
    ("returned", "message"),
    [
        ([1, 2], "runner must return"),
        ({"metrics": {"accuracy": 1.0}, "extra": 1}, "unexpected keys ['extra']"),
        ({"metrics": {"accuracy": object()}}, "not JSON-serialisable"),
    ],
)
def test_runner_contract_violations_become_error_records(tmp_path: Path, returned: object, message: str) -> None:
    config = make_config(tmp_path, seeds=1, methods='["english"]')
    summary = run_sweep(config, lambda cell, cfg: returned, same_context, workers=1, progress=False)
    assert len(summary.errors) == 2
    assert all(record["status"] == "error" for record in read_results(config.results))
    assert message in summary.errors[0][1]


def test_partial_trailing_line_is_ignored_and_repaired(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    run_sweep(config, fake_runner, same_context, workers=1, progress=False)
    lines = config.results.read_bytes().splitlines(keepends=True)
    # keep 5 complete records and half of the 6th, as a kill during the write would
    config.results.write_bytes(b"".join(lines[:5]) + lines[5][: len(lines[5]) // 2])
    with pytest.warns(UserWarning, match=r":6: ignoring a partial last line"):
        assert len(read_results(config.results)) == 5

    with pytest.warns(UserWarning, match="removing a partial last line"):
        summary = run_sweep(config, fake_runner, same_context, workers=1, progress=False)
    assert len(summary.skipped) == 5 and len(summary.ok) == 7
    assert len(raw_lines(config.results)) == 12  # every line parses: the half line was cut, not buried


def test_a_results_file_replaced_mid_run_gets_the_next_records(tmp_path: Path) -> None:
    """A tracked results file checked out (or stashed and restored) during a sweep is a new file at the same
    path: the run appends its next records there, and says so, instead of into the unlinked old file, where
    they were lost (a study's seed went that way under `git stash`). A file removed mid-run is made again."""
    path = tmp_path / "r.jsonl"
    first, second, third = ({"cell_id": c, "status": "ok", "cell": {}} for c in "abc")
    path.write_text(json.dumps(first) + "\n")
    with appending(path) as (records, append):
        assert [r["cell_id"] for r in records] == ["a"]
        replacement = tmp_path / "checked-out.jsonl"
        replacement.write_text(json.dumps(first) + "\n")
        os.replace(replacement, path)
        with pytest.warns(UserWarning, match="replaced while this run appended"):
            append(second)
        path.unlink()
        with pytest.warns(UserWarning, match="replaced while this run appended"):
            append(third)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the same file again: no warning
            append(first)
    assert [r["cell_id"] for r in map(json.loads, path.read_text().splitlines())] == ["c", "a"]


def test_complete_last_line_without_newline_is_kept(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    run_sweep(config, fake_runner, same_context, workers=1, progress=False)
    config.results.write_bytes(config.results.read_bytes().rstrip(b"\n"))
    assert len(read_results(config.results)) == 12
    summary = run_sweep(config, fake_runner, same_context, workers=1, progress=False)
    assert len(summary.skipped) == 12
    assert config.results.read_bytes().endswith(b"\n")


def test_damaged_middle_line_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"cell_id": "a", "status": "ok", "cell": {}}\nnot json\n{"cell_id": "b", "status": "ok"}\n')
    with pytest.raises(InputError, match=r"r\.jsonl:2: not a JSON object"):
        read_results(path)


def test_read_results_deduplicates_last_wins(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    lines = [
        {"cell_id": "a", "status": "error", "error": "x"},
        {"cell_id": "b", "status": "ok"},
        {"cell_id": "a", "status": "ok"},
        {"kind": "cosine", "cell_id": "a", "en_tr": 0.5},
        {"kind": "cosine", "en_tr": 0.6},
        {"kind": "cosine", "en_tr": 0.7},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    records = read_results(path)
    assert [r.get("kind", "cell") for r in records] == ["cell", "cell", "cosine", "cosine", "cosine"]
    assert {r["cell_id"]: r["status"] for r in records if "status" in r} == {"a": "ok", "b": "ok"}


def test_second_sweep_on_the_same_file_is_refused(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    config.results.parent.mkdir(parents=True)
    with open(config.results, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(ConfigError, match="another sweep is writing this results file"):
            run_sweep(config, fake_runner, same_context, workers=1, progress=False)


def test_keyboard_interrupt_in_process_keeps_finished_records(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    started: list[Cell] = []

    def interrupted_runner(cell: Cell, cfg: SweepConfig) -> dict[str, Any]:
        started.append(cell)
        if len(started) == 4:
            raise KeyboardInterrupt
        return fake_runner(cell, cfg)

    summary = run_sweep(config, interrupted_runner, same_context, workers=1, progress=False)
    assert summary.interrupted and len(summary.ok) == 3
    assert "interrupted: 9 cells not run" in str(summary)
    assert [r["cell_id"] for r in raw_lines(config.results)] == [c.id for c in started[:3]]


def test_lambda_runner_with_workers_is_refused_early(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    with pytest.raises(TypeError, match="cannot be pickled"):
        run_sweep(config, lambda cell, cfg: {}, same_context, workers=2, progress=False)
    with pytest.raises(ConfigError, match="workers: 0"):
        run_sweep(config, fake_runner, same_context, workers=0, progress=False)


@pytest.mark.heavy
def test_parallel_workers_give_the_same_records(tmp_path: Path) -> None:
    serial_dir, parallel_dir = tmp_path / "serial", tmp_path / "parallel"
    serial_dir.mkdir()
    parallel_dir.mkdir()
    serial = make_config(serial_dir)
    parallel = make_config(parallel_dir)
    run_sweep(serial, fake_runner, same_context, workers=1, progress=False)
    summary = run_sweep(parallel, fake_runner, same_context, workers=2, progress=False)
    assert len(summary.ok) == 12 and not summary.errors
    parallel_records = raw_lines(parallel.results)
    assert len(parallel_records) == 12
    assert stable_view(parallel_records) == stable_view(raw_lines(serial.results))
    worker_pids = {r["provenance"]["pid"] for r in parallel_records}
    assert os.getpid() not in worker_pids and len(worker_pids) <= 2
    share = str(max(1, len(os.sched_getaffinity(0)) // 2))  # each of 2 workers gets half the cores
    assert {r["provenance"]["omp_threads"] for r in parallel_records} == {share}


def fitting_runner(cell: Cell, config: SweepConfig) -> dict[str, Any]:
    """A langalign cell as the real one goes: the first cell of an aligner fits it (1.5 s here) and leaves it on
    disk, later ones load it; logs each fit."""
    task = config.tasks[cell.task]
    if cell.aligner:
        fitted = Path(task["fits"]) / f"{cell.aligner}-{cell.pair_size}-{cell.seed}"
        if not fitted.exists():
            with open(task["fit_log"], "a", encoding="utf-8") as log:
                log.write(f"fit {fitted.name}\n")
            time.sleep(1.5)
            fitted.touch()
    return fake_runner(cell, config)


def test_a_second_worker_waits_for_the_fit_a_running_cell_makes_instead_of_repeating_it(tmp_path: Path) -> None:
    (tmp_path / "fits").mkdir()
    path = tmp_path / "sweep.toml"
    path.write_text(f"""
name = "fits"
store = "store.zarr"
model = "tiny"
[grid]
languages = ["ko"]
tasks = ["topic"]
methods = ["langalign"]
task_sizes = ["1k", "all"]
pair_sizes = ["5k"]
aligners = ["fc"]
seeds = [0]
[tasks.topic]
fit_log = "{tmp_path / 'fits.log'}"
fits = "{tmp_path / 'fits'}"
""", encoding="utf-8")
    config = load_config(path)
    summary = run_sweep(config, fitting_runner, same_context, workers=2, progress=False)
    assert len(summary.ok) == 2 and not summary.errors
    # in grid order both cells started at once on the two workers and both fitted the aligner
    assert (tmp_path / "fits.log").read_text().splitlines() == ["fit fc-5000-0"]


def test_a_free_worker_takes_fits_first_then_its_own_aligners_then_the_rest() -> None:
    from embedstore.study.execution import _Schedule

    def lang(task_size: int, pair_size: int) -> Cell:
        return Cell("ko", "topic", "langalign", task_size, pair_size, "fc", 0)

    english = [Cell("ko", "topic", "english", size, None, None, 0) for size in (1000, 2000)]
    a1, b1, a2, b2, a3 = lang(1000, 5000), lang(1000, 9000), lang(2000, 5000), lang(2000, 9000), lang(3000, 5000)
    assert a1.shared_work == a2.shared_work != b1.shared_work and english[0].shared_work is None
    schedule = _Schedule([english[0], a1, b1, english[1], a2, b2, a3])
    assert schedule.next_for(None) == a1  # the first cell of each aligner (its fit) before anything else
    assert schedule.next_for(None) == b1
    schedule.done(a1, 11)
    assert schedule.next_for(11) == a2  # then the aligner this worker fitted, whose rows it has mapped
    schedule.done(a2, 11)
    assert schedule.next_for(11) == a3
    schedule.done(a3, 11)
    assert schedule.next_for(11) == english[0]  # b1 is still fitting on the other worker: b2 waits for it
    assert schedule.next_for(12) == english[1]
    assert schedule.next_for(13) is None
    schedule.done(b1, 12)
    assert schedule.next_for(11) == b2  # nothing else left: the other worker's aligner rather than idling


@pytest.mark.heavy
def test_warm_workers_run_the_cells_and_a_pool_no_run_took_is_stopped(tmp_path: Path) -> None:
    from embedstore.study import execution

    config = make_config(tmp_path)
    with execution.warm_workers(2, "json"):
        warm_pids = {p.pid for p in execution._WARM[2]._processes.values()}  # started at once, before any cell
        assert len(warm_pids) == 2
        summary = run_sweep(config, fake_runner, same_context, workers=2, progress=False)
        assert 2 not in execution._WARM  # the run took the pool
    assert len(summary.ok) == 12 and not summary.errors
    assert {r["provenance"]["pid"] for r in read_results(config.results)} <= warm_pids
    with execution.warm_workers(2, "json"):
        unused = list(execution._WARM[2]._processes.values())
    for process in unused:
        process.join(timeout=30)
        assert not process.is_alive()
    assert not execution._WARM


@pytest.mark.heavy
def test_warming_workers_import_one_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The warming workers take turns at their imports (beside the demo's model build, all at once they took a
    share of the driver's core too), and every worker still imports the module."""
    from embedstore.study import execution

    log = tmp_path / "imports.log"
    (tmp_path / "slow_module.py").write_text(textwrap.dedent(f"""
        import os, time
        start = time.monotonic()
        time.sleep(0.5)
        with open({str(log)!r}, "a") as f:
            f.write(f"{{os.getpid()}} {{start}} {{time.monotonic()}}\\n")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))  # a spawned worker starts with this process's sys.path
    with execution.warm_workers(2, "slow_module"):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 2):
            time.sleep(0.1)
    spans = sorted((float(a), float(b), pid) for pid, a, b in (line.split() for line in log.read_text().splitlines()))
    assert len({pid for _, _, pid in spans}) == 2  # each worker imported it once
    (_, first_end, _), (second_start, _, _) = spans
    assert second_start >= first_end - 0.01  # the second began when the first was done


@pytest.mark.heavy
def test_dead_worker_records_errors_and_the_sweep_goes_on(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    summary = run_sweep(config, crashing_runner, same_context, workers=2, progress=False)
    records = read_results(config.results)
    assert len(records) == 12  # every cell has a record
    crashed = [r for r in records if r["status"] == "error"]
    assert 1 <= len(crashed) <= 2  # the crashing cell, and maybe the one running beside it
    assert all("worker process died" in r["error"] for r in crashed)
    assert any(r["cell"]["seed"] == 1 and r["cell"]["task_size"] == 1000 and r["cell"]["method"] == "english"
               for r in crashed)
    assert len(summary.ok) == 12 - len(crashed)


SLOW_SCRIPT = """
import sys, time
from embedstore.study.cells import load_config
from embedstore.study.sweep import run_sweep

def slow_runner(cell, config):
    time.sleep(0.4)
    return {"metrics": {"accuracy": cell.seed / 100}, "provenance": {}}

if __name__ == "__main__":
    summary = run_sweep(load_config(sys.argv[1]), slow_runner, lambda cell: "ctx", workers=2, progress=False)
    print(summary, flush=True)
"""


def start_slow_sweep(tmp_path: Path, config: SweepConfig) -> subprocess.Popen[str]:
    script = tmp_path / "slow_sweep.py"
    script.write_text(textwrap.dedent(SLOW_SCRIPT))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, str(script), str(config.path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # its own process group, so the test can kill it with its workers
        # a shell that started the test runner in the background leaves SIGINT ignored, and Python then never
        # raises KeyboardInterrupt: give the sweep the default disposition, as in a terminal
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def wait_for_lines(path: Path, count: int, proc: subprocess.Popen[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= count:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    pytest.fail(f"{path} did not reach {count} lines in {timeout}s")


@pytest.mark.heavy
def test_kill_9_midway_then_rerun_gives_one_ok_record_per_cell(tmp_path: Path) -> None:
    config = make_config(tmp_path, seeds=6, methods='["english"]')  # 12 cells of 0.4 s on 2 workers
    proc = start_slow_sweep(tmp_path, config)
    try:
        wait_for_lines(config.results, 3, proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    killed_at = raw_lines(config.results)
    assert 3 <= len(killed_at) < 12
    # the worst a kill can do is cut a write short: add such a half line too
    with open(config.results, "ab") as out:
        out.write(b'{"cell": {"language": "ko", "task": "top')

    with pytest.warns(UserWarning, match="partial last line"):
        summary = run_sweep(config, fake_runner, same_context, workers=1, progress=False)
    assert len(summary.skipped) == len(killed_at)
    final = raw_lines(config.results)
    assert sorted(r["cell_id"] for r in final) == sorted(c.id for c in expand(config))
    assert all(r["status"] == "ok" for r in final)


@pytest.mark.heavy
def test_ctrl_c_stops_workers_and_keeps_finished_records(tmp_path: Path) -> None:
    config = make_config(tmp_path, seeds=6, methods='["english"]')
    proc = start_slow_sweep(tmp_path, config)
    try:
        wait_for_lines(config.results, 2, proc)
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err
    assert "interrupted" in out and "Traceback" not in err
    records = raw_lines(config.results)  # every line is a whole record
    assert 2 <= len(records) < 12 and all(r["status"] == "ok" for r in records)


def _ignore_sigterm_and_wait(ready) -> None:
    import signal
    import time

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ready.set()
    time.sleep(60)


def test_stopping_a_pool_leaves_no_worker_alive_even_one_that_ignores_sigterm(monkeypatch) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from embedstore.study import execution

    monkeypatch.setattr(execution, "_STOP_GRACE_S", 0.2, raising=False)
    context = multiprocessing.get_context("fork")
    ready = context.Manager().Event()
    pool = ProcessPoolExecutor(1, mp_context=context)
    pool.submit(_ignore_sigterm_and_wait, ready)
    assert ready.wait(10)
    processes = list(pool._processes.values())
    execution._stop_workers(pool)
    assert processes and not any(p.is_alive() for p in processes)


def test_an_unused_warm_pool_is_dead_and_reaped_when_its_block_ends() -> None:
    """Twenty rounds, because what this guards against was a race: the pool's manager thread and the stopping
    thread both waited on one worker, and the loser read the dead worker as alive (9 of 40 rounds before the fix)."""
    from embedstore.study import execution

    for _ in range(20):
        with execution.warm_workers(2, "json"):
            processes = list(execution._WARM[2]._processes.values())
        assert [(p.is_alive(), p.exitcode is None) for p in processes] == [(False, False)] * 2
    assert not execution._WARM
