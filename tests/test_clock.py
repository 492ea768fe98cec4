"""The process's start on the perf_counter clock: what `embedstore demo` counts its time from."""
from __future__ import annotations

import json
import subprocess
import sys
import time

from embedstore.base.clock import process_started


def test_the_start_is_before_now_and_counts_the_time_before_the_call() -> None:
    code = ("import time, json; time.sleep(1.0); from embedstore.base.clock import process_started; "
            "print(json.dumps(time.perf_counter() - process_started()))")
    waited = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                       check=True).stdout)
    assert 1.0 <= waited < 30  # the sleep and the interpreter's start, at clock-tick resolution
    started = process_started()
    assert started is not None and started < time.perf_counter()
