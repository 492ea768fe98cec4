"""Issue 28 item 7: temporary folders a kill leaves behind (`.encoder-*` beside an export, `.<name>.partial-*`
pipelines and graphs, `<store>.h5.partial-<pid>`, `<store>.merging-<pid>`) are found and removed by the next run
of any command that writes in that directory, by their name and their owner's pid being dead; a live owner's
folders and files the tool does not name so are left alone."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from embedstore.base import atomic
from embedstore.data.hashing import text_ids
from embedstore.store import Store, StoreKey

pytestmark = pytest.mark.fault('leftovers of killed runs')

KEY = StoreKey(model="m", fingerprint="f" * 16, pooling="mean", layer=2, max_length=128, prefix="")


@pytest.fixture(scope="module")
def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def leftovers(directory, pid) -> list:
    made = [directory / f".encoder-{pid}-k2j4x9", directory / f".pipe.partial-{pid}-a8c1e2f0",
            directory / f".model.onnx.partial-{pid}-0f3e9a1b", directory / f"s.h5.partial-{pid}",
            directory / f"out.merging-{pid}.zarr"]
    for path in made:
        path.mkdir()
        (path / "weights.bin").write_bytes(b"0" * 1024)
    return made


def kept(directory) -> list:
    made = [directory / f".encoder-{os.getpid()}-live", directory / f".pipe.partial-{os.getpid()}-live",
            directory / ".git", directory / ".encoder-notes", directory / "notes.partial-12"]
    for path in made:
        path.mkdir()
    return made


@pytest.mark.parametrize("writer", ["json", "pipeline-dir", "zarr-store", "hdf5-store"])
def test_the_next_writer_in_a_directory_removes_what_killed_runs_left(tmp_path, dead_pid, writer):
    dead, live = leftovers(tmp_path, dead_pid), kept(tmp_path)
    if writer == "json":
        atomic.write_json(tmp_path / "record.json", {"a": 1})
    elif writer == "pipeline-dir":
        with atomic.atomic_dir(tmp_path / "other-pipeline") as tmp:
            (tmp / "config.json").write_text("{}")
    else:
        with Store.open(tmp_path / ("s.zarr" if writer == "zarr-store" else "t.h5")).writer() as w:
            w.key(KEY, 3, {}).append(text_ids(["a"]), np.ones((1, 3), np.float32))
    assert [p.name for p in dead if p.exists()] == []
    assert all(p.exists() for p in live)


def test_a_real_kill_9_mid_build_is_cleaned_by_another_command(tmp_path):
    script = textwrap.dedent(f"""
        import sys, time
        from embedstore.base.atomic import atomic_dir
        with atomic_dir({str(tmp_path / "pipe")!r}) as tmp:
            (tmp / "model.safetensors").write_bytes(b"0" * 4096)
            print("building", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"building"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = [p for p in tmp_path.iterdir() if p.name.startswith(".pipe.partial-")]
    assert len(partial) == 1 and str(proc.pid) in partial[0].name
    atomic.write_json(tmp_path / "unrelated.json", {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unrelated.json"]
