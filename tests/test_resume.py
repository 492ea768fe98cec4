"""`kill -9` at random moments: the store is always readable and the next run completes it exactly (on the default
ONNX Runtime backend, with token-budget batches that bind)."""
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from embedstore.store import Store

# heavy: an 8,000-text encode, then four killed ones and a resume
pytestmark = [pytest.mark.heavy, pytest.mark.fault('kill -9 of an encode, then resume')]

WORDS = ("cell format table chart 셀 서식 표 차트 セル 書式 表 图表 insert delete row column sheet page "
         "style font macro dialog window menu").split()


def make_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 40))) + f" #{i}" for i in range(n)]


def committed_rows(store) -> int:
    st = Store.open(store)
    try:
        return min((st.rows(k) for k in st.keys()), default=0) if st.exists() else 0
    except Exception:  # the store is being created right now; a reader retries
        return 0


def encode_cmd(model_dir, data, store):
    return [sys.executable, "-m", "embedstore", "encode", str(data), "--model", str(model_dir), "--store", str(store),
            "--batch-size", "8", "--batch-tokens", "256", "--backend", "onnx", "--chunk-rows", "64",
            "--layer", "-1", "--layer", "1", "--json"]


def test_kill_9_at_random_moments_then_resume_equals_uninterrupted(tiny_model_dir, tmp_path):
    data = tmp_path / "texts.txt"
    texts = make_texts(8000)
    data.write_text("\n".join(texts) + "\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    # the uninterrupted reference shares nothing with the killed runs: it runs beside them, on the other core
    ref_store = tmp_path / "ref.zarr"
    with open(tmp_path / "ref.err", "w") as ref_err:
        ref_run = subprocess.Popen(encode_cmd(tiny_model_dir, data, ref_store), env=env, stdout=subprocess.DEVNULL,
                                   stderr=ref_err)

    store = tmp_path / "killed.zarr"
    rng = random.Random(1)
    # kill points: once at a random moment of start-up (imports, model and graph loading: seconds), then at random
    # row targets while encoding, each followed by a random delay so the kill lands anywhere in the write/commit
    # cycle
    targets = [0] + sorted(rng.sample(range(200, len(texts) - 500), 3))
    partial_rows = []
    for target in targets:
        proc = subprocess.Popen(encode_cmd(tiny_model_dir, data, store), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if target == 0:
            time.sleep(rng.uniform(0.5, 4.0))
        else:
            while committed_rows(store) < target and proc.poll() is None:
                time.sleep(0.005)
            time.sleep(rng.uniform(0, 0.05))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        partial_rows.append(committed_rows(store))
        st = Store.open(store)
        for key in st.keys() if st.exists() else []:  # committed rows are always readable, never zeros
            committed = st.backend.read_ids(key.group_name, st.rows(key))
            assert (committed.any(axis=1)).all()
    assert sum(0 < r < len(texts) for r in partial_rows) >= 2, f"kills did not land mid-encode: {partial_rows}"

    subprocess.run(encode_cmd(tiny_model_dir, data, store), check=True, env=env, capture_output=True)
    assert ref_run.wait() == 0, (tmp_path / "ref.err").read_text()[-2000:]
    ref, got = Store.open(ref_store), Store.open(store)
    assert sorted(k.layer for k in got.keys()) == sorted(k.layer for k in ref.keys()) == [1, 2]
    for key in ref.keys():
        assert got.rows(key) == len(texts)
        np.testing.assert_array_equal(got.get(key, texts), ref.get(key, texts))  # the same batches: bit for bit
