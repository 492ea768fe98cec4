"""The kill-and-resume check of the resumable commands (tune, finetune, adapt): the same command run to the end,
and run again SIGKILLed at its first checkpoint and then resumed, must give the same run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable


def reference_and_resumed(command: Callable[[Path], list[str]], tmp_path: Path,
                          finished_file: str) -> tuple[dict, dict, Path]:
    """`command(out)` run uninterrupted into tmp_path/ref, then into tmp_path/killed killed by SIGKILL as soon as a
    checkpoint exists (before `finished_file` is written) and run again; returns both runs' `--json` records and
    the killed run's directory."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # the uninterrupted run shares nothing with the killed one: it runs beside it, on the other core
    with ThreadPoolExecutor(1) as pool:
        ref = pool.submit(subprocess.run, command(tmp_path / "ref"), env=env, cwd=tmp_path, capture_output=True,
                          text=True, check=True)
        out = tmp_path / "killed"
        proc = subprocess.Popen(command(out), env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 600  # a hang guard only: a loaded machine takes minutes to start a run
        while not list((out / "checkpoints").glob("step-*")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not (out / finished_file).exists(), "the run finished before it could be killed"
        assert list((out / "checkpoints").glob("step-*"))
        rerun = subprocess.run(command(out), env=env, cwd=tmp_path, capture_output=True, text=True, check=True)
        return json.loads(ref.result().stdout), json.loads(rerun.stdout), out
