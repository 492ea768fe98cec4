"""The load counters the benchmarks print beside a spread (`base.machine_load`): what they report, and where."""
import os
import time
from types import SimpleNamespace

import pytest

from embedstore.base.machine_load import cores_text, cpu_counters, machine_load


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="the counters are Linux's /proc/stat")
def test_a_busy_block_counts_its_own_cpu_and_nothing_negative():
    load: dict = {}
    t0 = time.perf_counter()
    with machine_load(load):
        end = time.process_time() + 0.2
        while time.process_time() < end:  # 0.2 s of this process's CPU time, however long that takes here
            pass
    wall = time.perf_counter() - t0
    assert set(load) == {"cpu", "others", "steal"}
    assert 0.15 <= load["cpu"] * wall <= 0.4  # the counters tick in 10 ms
    assert load["others"] >= 0 and load["steal"] >= 0


def test_the_slowest_repeat_is_the_one_described():
    loads = [{"cpu": 1.9, "others": 0.0, "steal": 0.0}, {"cpu": 1.2, "others": 0.7, "steal": 0.1}]
    assert cores_text([10.0, 12.5], loads) == "1.20/0.70/0.10"  # seconds: the slowest is the largest
    assert cores_text([200.0, 150.0], loads, slowest=min) == "1.20/0.70/0.10"  # a rate: the smallest
    assert cores_text([10.0, 12.5], [{}, {}]) == "n/a"  # no counters (not Linux)


def test_without_proc_stat_nothing_is_claimed(monkeypatch):
    from embedstore.base import machine_load as module

    monkeypatch.setattr(module, "cpu_counters", lambda: None)
    load: dict = {}
    with module.machine_load(load):
        pass
    assert load == {} and (cpu_counters() is None or len(cpu_counters()) == 3)


def test_the_cores_taken_from_a_timing_are_the_worst_repeats_others_and_steal():
    from embedstore.base.machine_load import BUSY_CORES, taken

    quiet = [{"cpu": 1.9, "others": 0.02, "steal": 0.0}, {"cpu": 1.9, "others": 0.01, "steal": 0.01}]
    assert taken(quiet) == pytest.approx(0.02) and taken(quiet) <= BUSY_CORES
    busy = taken(quiet + [{"cpu": 1.1, "others": 0.6, "steal": 0.2}])
    assert busy == pytest.approx(0.8) and busy > BUSY_CORES
    assert taken([{}, {}]) == 0.0 and taken([]) == 0.0  # no counters: nothing is claimed


def test_a_short_block_is_judged_over_the_minimum_window_not_its_own_few_ticks(monkeypatch):
    """Synthetic /proc/stat counts (whole 10 ms ticks): a 5 ms block during which one tick of another process
    came. Over the block alone that tick is 1.2 cores (the quiet `store info` called noisy); over MIN_WINDOW it is
    0.03. A core really kept busy by another process over the window is still busy."""
    from embedstore.base.machine_load import BUSY_CORES, MIN_WINDOW, Counters, cores, taken

    before, at_end = Counters(own=1.000, busy=500.00, steal=3.00), Counters(own=1.004, busy=500.01, steal=3.00)
    assert cores(before, at_end, at_end, 0.005, 0.005)["others"] == pytest.approx(1.2)  # the old rule: busy
    stray = cores(before, at_end, Counters(1.004, 500.01, 3.00), 0.005, MIN_WINDOW)
    assert stray == pytest.approx({"cpu": 0.8, "others": 0.03, "steal": 0.0}) and taken([stray]) <= BUSY_CORES
    four_ticks = cores(before, at_end, Counters(1.004, 500.04, 3.00), 0.005, MIN_WINDOW)
    assert taken([four_ticks]) <= BUSY_CORES  # 40 ms of others in 200 ms: 0.18 cores
    busy = cores(before, at_end, Counters(1.004, 500.20, 3.01), 0.005, MIN_WINDOW)  # another process on a core
    assert busy["others"] == pytest.approx(0.98) and busy["steal"] == pytest.approx(0.05)
    assert taken([stray, busy]) > BUSY_CORES

    # the context manager completes the window after a short block (the block's own timing untouched), and
    # reads the counters at the block's end, at the window's end, and before
    load, slept = _load_of_a_block(monkeypatch, [10.0, 10.005, 10.0 + MIN_WINDOW],
                                   [before, at_end, Counters(1.004, 500.01, 3.00)])
    assert slept == [pytest.approx(MIN_WINDOW - 0.005)] and load == pytest.approx(stray)


def _load_of_a_block(monkeypatch, clock: list[float], counts: list) -> tuple[dict, list[float]]:
    """`machine_load` of an empty block with the clock and the counters reading `clock` and `counts` in turn:
    the load it records and the waits it made."""
    from embedstore.base import machine_load as module

    clock_reads, counter_reads, slept = iter(clock), iter(counts), []
    monkeypatch.setattr(module, "time", SimpleNamespace(perf_counter=lambda: next(clock_reads), sleep=slept.append))
    monkeypatch.setattr(module, "cpu_counters", lambda: next(counter_reads))
    load: dict = {}
    with module.machine_load(load):
        pass
    return load, slept


def test_a_long_block_is_judged_over_itself_without_waiting(monkeypatch):
    from embedstore.base.machine_load import Counters

    load, slept = _load_of_a_block(monkeypatch, [0.0, 2.0, 2.0], [Counters(0.0, 10.0, 0.0), Counters(3.8, 14.0, 0.1),
                                                                  Counters(3.8, 14.0, 0.1)])
    assert slept == [] and load == pytest.approx({"cpu": 1.9, "others": 0.1, "steal": 0.05})
