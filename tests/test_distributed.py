"""Distributed encode with the real launcher: `torchrun --nproc-per-node 2 -m embedstore encode` on gloo.

Each launch costs several seconds of imports and model loading, so one test runs three launches: a clean
two-rank encode (by hand-set environment and `--distributed`, as under a launcher other than torchrun), then
with torchrun a resumed encode whose second rank is killed mid-run, then the re-run that completes it.
"""
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from embedstore.encoding.options import ComputeOptions, EncodeOptions

from embedstore.encoding.encode import encode
from embedstore.encoding.distributed import plan
from embedstore.base.errors import ConfigError, StoreError
from embedstore.store import Store

WORDS = "cell format table chart 셀 서식 표 차트 セル 書式 insert delete row column sheet page style".split()
OPTIONS = ["--batch-size", "4", "--chunk-rows", "16", "--layer", "-1", "--layer", "1"]


def make_texts(n: int) -> list[str]:
    rng = random.Random(0)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 30))) + f" #{i}" for i in range(n)]


COMPUTE = ComputeOptions(batch_size=4, chunk_rows=16)


def opts(model_dir) -> EncodeOptions:
    return EncodeOptions(model=str(model_dir), layers=(-1, 1))


def encode_args(model_dir, data, store) -> list[str]:
    return ["encode", str(data), "--model", str(model_dir), "--store", str(store), *OPTIONS, "--json"]


def torchrun(model_dir, data, store) -> list[str]:
    """The command users run (installed with torch next to this Python); --standalone picks a free port. The
    PyTorch backend: on the tiny model ONNX Runtime finishes a rank's share before a stop can land between its
    commits (the ONNX path's kill/resume is tests/test_resume.py's)."""
    return [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc-per-node", "2",
            "-m", "embedstore", *encode_args(model_dir, data, store), "--backend", "torch"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def rank_pid(parent: int, rank: int) -> int | None:
    """The worker of `parent`'s job that has RANK=`rank` in its environment (torchrun's children)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError):
            continue
        if ppid == parent and f"RANK={rank}".encode() in environ:
            return int(proc.name)
    return None


def committed(store: Path) -> int:
    st = Store.open(store)
    try:
        return min((st.rows(k) for k in st.keys()), default=0) if st.exists() else 0
    except Exception:  # being created right now; the poller retries
        return 0


def assert_same_vectors(store: Path, ref: Store, texts: list[str]) -> None:
    got = Store.open(store)
    assert sorted(k.layer for k in got.keys()) == sorted(k.layer for k in ref.keys()) == [1, 2]
    for key in ref.keys():
        assert got.rows(key) == len(texts)
        np.testing.assert_allclose(got.get(key, texts), ref.get(key, texts), atol=1e-6, rtol=0)


def test_plan_gives_every_chunk_one_writer_and_balances_the_work():
    rng = np.random.default_rng(0)
    for committed_rows, chunk, n, world in [(0, 16, 100, 2), (100, 16, 333, 3), (7, 4, 5, 4), (32, 16, 16, 2)]:
        lengths = np.sort(rng.integers(2, 200, n))[::-1]
        other = np.sort(rng.permutation(n)[: n // 2])  # a second key lacking only some texts
        rows = [chunk, 2 * chunk]
        per_key, units = plan([committed_rows, 0], rows, [np.arange(n), other], lengths, 4, world)
        writer = {(b.key, b.start): u.rank for u in units for b in u.blocks}
        assert len(writer) == sum(len(blocks) for blocks in per_key)  # every block in exactly one unit
        for k, (start, count) in enumerate([(committed_rows, n), (0, len(other))]):
            blocks = per_key[k]
            covered = np.concatenate([np.arange(b.start, b.stop) for b in blocks])
            np.testing.assert_array_equal(covered, np.arange(start, start + count))  # contiguous rows, in order
            assert all(b.start % rows[k] == 0 for b in blocks[1:])
            owner: dict[int, int] = {}
            for b in blocks:
                for c in range(b.start // chunk, (b.stop - 1) // chunk + 1):
                    assert owner.setdefault(c, writer[(k, b.start)]) == writer[(k, b.start)], f"chunk {c}: two writers"
    # one key, texts sorted longest first: blocks go to the least loaded rank, not in turn
    lengths = np.repeat([400, 100, 100, 100, 100], 16)
    _, units = plan([0], [16], [np.arange(80)], lengths, 16, 2)
    assert [u.rank for u in units] == [0, 1, 1, 1, 1]


@pytest.mark.heavy
def test_two_ranks_equal_one_process_and_a_killed_rank_loses_only_uncommitted_rows(tiny_model_dir, tmp_path):
    texts = make_texts(2000)
    data = tmp_path / "texts.txt"
    data.write_text("\n".join(texts) + "\n")
    ref = Store.open(tmp_path / "ref.zarr")
    encode(texts, store=ref.path, options=opts(tiny_model_dir), compute=COMPUTE)

    # 1. any launcher: two processes with the torch.distributed environment set by hand, and --distributed
    store = tmp_path / "clean.zarr"
    port = str(free_port())
    procs = [subprocess.Popen([sys.executable, "-m", "embedstore", *encode_args(tiny_model_dir, data, store),
                               "--distributed"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**env(), "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": "2",
                                   "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}) for r in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    assert outs[1][0] == ""  # only rank 0 prints
    report = json.loads(outs[0][0])
    assert (report["world_size"], report["encoded"], report["present"]) == (2, 2000, 0)
    assert_same_vectors(store, ref, texts)
    for key in ref.keys():  # the very rows a single process writes, in the same order
        np.testing.assert_array_equal(Store.open(store).backend.read_ids(key.group_name, 2000),
                                      ref.backend.read_ids(key.group_name, 2000))

    # 2. torchrun on a store whose keys already hold 100 and 150 texts (committed mid-chunk, so the keys lack
    # different texts); after the run's first commit rank 1 hangs (SIGSTOP) and then dies (SIGKILL). On a loaded
    # machine rank 1 may already have finished all its blocks when the stop lands (the whole store then
    # commits): that attempt proves nothing, so try again.
    for attempt in range(3):
        store = tmp_path / f"killed{attempt}.zarr"
        encode(texts[:100], store=store, options=opts(tiny_model_dir), compute=COMPUTE)
        encode(texts[:150], store=store, options=replace(opts(tiny_model_dir), layers=(1,)), compute=COMPUTE)
        job = subprocess.Popen(torchrun(tiny_model_dir, data, store), env=env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        while committed(store) <= 100 and job.poll() is None:
            time.sleep(0.01)
        victim = rank_pid(job.pid, 1)
        if victim is None:  # the job ended before rank 1 could be stopped: it must have ended well
            assert job.wait(timeout=120) == 0, job.communicate()[1][-3000:]
            partial = committed(store)
            continue
        os.kill(victim, signal.SIGSTOP)
        time.sleep(1.0)  # rank 0 goes on encoding and committing what both ranks finished
        os.kill(victim, signal.SIGKILL)
        job.communicate(timeout=120)
        partial = committed(store)
        if partial < 2000:
            break
    assert 100 < partial < 2000, f"rank 1 finished before it could be stopped in all {attempt + 1} attempts"
    assert job.returncode != 0
    st = Store.open(store)
    for key in st.keys():  # committed rows are whole and right, never zeros
        rows = st.rows(key)  # keys commit one after the other, so the kill may leave them at different counts
        ids = st.backend.read_ids(key.group_name, rows)
        assert ids.any(axis=1).all()
        done = [t for t, present in zip(texts, st.contains(key, texts)) if present]
        assert len(done) == rows
        np.testing.assert_allclose(st.get(key, done), ref.get(key, done), atol=1e-6, rtol=0)

    # 3. the same command again completes the store, encoding every text some key lacks
    in_every_key = int(np.logical_and.reduce([st.contains(key, texts) for key in st.keys()]).sum())
    rerun = subprocess.run(torchrun(tiny_model_dir, data, store), env=env(), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    report = json.loads(rerun.stdout)
    assert (report["present"], report["encoded"]) == (in_every_key, 2000 - in_every_key)
    assert_same_vectors(store, ref, texts)


def test_hdf5_store_is_refused(tiny_model_dir, tmp_path):
    with pytest.raises(StoreError, match=r"s.h5: an HDF5 store has a single writer.*use a .zarr store"):
        encode(["a text"], store=tmp_path / "s.h5", options=opts(tiny_model_dir), compute=COMPUTE, distributed=True)
    assert not (tmp_path / "s.h5").exists()


def test_distributed_without_a_launcher_says_how_to_start_it(tiny_model_dir, tmp_path, monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError, match=r"distributed: RANK, WORLD_SIZE, .* not set; .*torchrun --nproc-per-node"):
        encode(["a text"], store=tmp_path / "s.zarr", options=opts(tiny_model_dir), compute=COMPUTE, distributed=True)


@pytest.mark.heavy
def test_ranks_die_with_a_sigkilled_torchrun(tiny_model_dir, tmp_path):
    """torchrun starts ranks in sessions of their own: without `exit_with_parent` a SIGKILL of torchrun left
    them encoding under PID 1 (issue 13, D2)."""
    data = tmp_path / "texts.txt"
    data.write_text("\n".join(make_texts(20000)) + "\n")
    store = tmp_path / "store.zarr"
    log = tmp_path / "torchrun.log"  # a file, not a pipe: orphaned ranks would hold a pipe open
    with open(log, "wb") as err:
        job = subprocess.Popen(torchrun(tiny_model_dir, data, store), env=env(), stdout=subprocess.DEVNULL,
                               stderr=err)
    ranks: list[int | None] = [None, None]
    try:
        deadline = time.monotonic() + 300
        while committed(store) == 0 and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # the ranks are past their set-up: rows are being committed
        ranks = [rank_pid(job.pid, r) for r in (0, 1)]
        assert None not in ranks, log.read_text()[-3000:]
        job.kill()
        job.wait(timeout=30)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_alive(p) for p in ranks):
            time.sleep(0.05)
        assert not any(_alive(p) for p in ranks), f"ranks {ranks} outlived their SIGKILLed torchrun"
    finally:
        for pid in ranks:
            if pid is not None and _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if job.poll() is None:
            job.kill()


def _alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie waiting to be reaped by its new parent."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
