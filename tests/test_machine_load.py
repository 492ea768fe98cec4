"""The load counters the benchmarks print beside a spread (`base.machine_load`): what they report, and where."""
import os
import time

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
