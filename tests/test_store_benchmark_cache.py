"""benchmarks/store.py sets each read operation's page-cache state instead of inheriting whatever earlier runs left
(issue 28: "gather a third" spread 97 % between repeats at 1M rows): `set_cache` warms or drops a side's files and
`resident_share` (mincore) confirms the state the table prints."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

STORE_BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "store.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("benchmark_store_cache", STORE_BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


@pytest.mark.skipif(not hasattr(os, "posix_fadvise") or not Path("/proc/self/io").is_file(), reason="Linux only")
def test_warm_puts_every_byte_in_the_page_cache_and_cold_drops_them(bench, tmp_path):
    files = [tmp_path / "a.bin", tmp_path / "b.bin"]
    for i, path in enumerate(files):
        path.write_bytes(os.urandom((i + 1) * 1 << 20))
    bench.set_cache(files, "warm")
    assert bench.resident_share(files) == 1.0
    bench.set_cache(files, "cold")
    share = bench.resident_share(files)
    if share > 0.1:
        pytest.skip(f"this filesystem kept {share:.0%} of the pages the kernel was advised to drop (tmpfs?)")
    assert share <= 0.1
    bench.set_cache(files, "warm")
    assert bench.resident_share(files) == 1.0


def test_the_counts_beside_the_seconds_are_this_process_s(bench):
    before = bench._io_counts()
    sum(i * i for i in range(200_000))  # some CPU, no disk
    after = bench._io_counts()
    assert after["user_s"] + after["system_s"] > before["user_s"] + before["system_s"]
    assert after["read_mib"] >= before["read_mib"] and set(after) == set(bench.COUNTS)


def test_a_killed_run_removes_the_keys_it_built(tmp_path):
    """On SIGTERM the benchmark stops its child, removes the keys (at 10M rows ~15 GB, which a killed run left in
    /tmp) and exits with 128 + SIGTERM."""
    import signal
    import subprocess
    import time

    run = subprocess.Popen([sys.executable, str(STORE_BENCHMARK), "--quick", "--dir", str(tmp_path)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("store-bench-*")) and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(tmp_path.glob("store-bench-*")), "the benchmark never made its work directory"
    run.send_signal(signal.SIGTERM)
    assert run.wait(timeout=60) == 128 + signal.SIGTERM
    assert not list(tmp_path.glob("store-bench-*"))
