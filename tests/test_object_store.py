"""The store on object storage (issue 31), against moto's standalone S3 server started here: encode, kill -9 and
resume, two writers, merges both ways, and every row still checked against its digest.

Heavy tier (a server process and subprocess encodes); skipped where the `[s3]` extra or moto's server is absent.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest

from embedstore.base.errors import StoreError
from embedstore.encoding.encode import encode
from embedstore.encoding.options import ComputeOptions, EncodeOptions
from embedstore.store import Store, merge_stores
from test_resume import encode_cmd, make_texts

pytestmark = pytest.mark.heavy


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def moto_server():
    """moto's S3 server on a free port, with the AWS_* variables pointing every client (s3fs, subprocesses) at it."""
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.skip("moto's S3 server did not start")
                time.sleep(0.2)
        import s3fs

        s3fs.S3FileSystem().mkdir("bucket")
        yield "s3://bucket"
    finally:
        proc.terminate()
        proc.wait()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _url(base: str) -> str:
    return f"{base}/{uuid.uuid4().hex[:8]}/store.zarr"


def _encode(texts, store, model_dir, chunk_rows=64):
    return encode(texts, store=store, options=EncodeOptions(model=str(model_dir)),
                  compute=ComputeOptions(backend="onnx", batch_size=8, batch_tokens=256, chunk_rows=chunk_rows))


def test_encode_read_info_verify_on_s3_equal_a_local_store(tiny_model_dir, tmp_path, moto_server):
    texts = make_texts(300)
    url = _url(moto_server)
    report = _encode(texts, url, tiny_model_dir)
    assert report.encoded == 300 and report.store == url
    local = tmp_path / "local.zarr"
    _encode(texts, local, tiny_model_dir)
    remote, ref = Store.open(url), Store.open(local)
    (key,) = ref.keys()
    assert remote.keys() == [key] and remote.rows(key) == 300
    np.testing.assert_array_equal(remote.get(key, texts), ref.get(key, texts))
    info = remote.info()
    assert info["backend"] == "objects" and info["keys"][0]["rows"] == 300 and info["size_bytes"] > 300 * 16
    assert remote.verify() == []
    assert _encode(texts, url, tiny_model_dir).encoded == 0  # a second run finds everything


@pytest.mark.fault('object store: kill -9, two writers, changed bytes')
def test_kill_9_mid_write_then_resume_is_bit_identical(tiny_model_dir, tmp_path, moto_server):
    texts = make_texts(3000)
    data = tmp_path / "texts.txt"
    data.write_text("\n".join(texts) + "\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = tmp_path / "ref.zarr"
    subprocess.run(encode_cmd(tiny_model_dir, data, ref), check=True, env=env, capture_output=True)

    url = _url(moto_server)
    proc = subprocess.Popen(encode_cmd(tiny_model_dir, data, url), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    rows = 0
    while rows < 500 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            st = Store.open(url)
            rows = min((st.rows(k) for k in st.keys()), default=0) if st.exists() else 0
        except StoreError:
            rows = 0
    assert proc.poll() is None, f"the encode ended before it could be killed: {proc.stderr.read().decode()[-500:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    st = Store.open(url)
    partial = {k.layer: st.rows(k) for k in st.keys()}
    assert all(0 < n < len(texts) for n in partial.values()), partial
    for key in st.keys():  # what is committed reads back whole: never zeros, never a partial segment
        assert st.backend.read_ids(key.group_name, st.rows(key)).any(axis=1).all()

    result = subprocess.run(encode_cmd(tiny_model_dir, data, url), env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-800:]  # the dead writer's lease does not block its own host
    got, want = Store.open(url), Store.open(ref)
    assert sorted(k.layer for k in got.keys()) == sorted(k.layer for k in want.keys())
    for key in want.keys():
        assert got.rows(key) == len(texts)
        np.testing.assert_array_equal(got.get(key, texts), want.get(key, texts))


@pytest.mark.fault('object store: kill -9, two writers, changed bytes')
def test_two_writers_one_is_refused(tiny_model_dir, moto_server):
    url = _url(moto_server)
    texts = make_texts(50)
    _encode(texts, url, tiny_model_dir)
    first, second = Store.open(url), Store.open(url)
    with first.writer():
        with pytest.raises(StoreError, match="holds this store's lease"):
            with second.writer():
                pass
    with second.writer():  # released: the next writer gets it
        pass


@pytest.mark.fault('object store: kill -9, two writers, changed bytes')
def test_two_commits_of_the_same_rows_one_is_refused(tiny_model_dir, moto_server):
    """Below the lease, the manifest's conditional create: rows from one start are committed once."""
    url = _url(moto_server)
    _encode(make_texts(20), url, tiny_model_dir)
    st = Store.open(url)
    (key,) = st.keys()
    n, dim = st.rows(key), st.attrs(key)["dim"]
    ids = np.arange(16 * 4, dtype=np.uint8).reshape(4, 16)
    a, b = Store.open(url).backend, Store.open(url).backend
    a.commit_segment(key.group_name, n, ids, np.ones((4, dim), np.float32), "writer-a")
    with pytest.raises(StoreError, match="committed by another writer"):
        b.commit_segment(key.group_name, n, ids, np.zeros((4, dim), np.float32), "writer-b")
    fresh = Store.open(url)
    assert fresh.rows(key) == n + 4
    np.testing.assert_array_equal(fresh.read_rows(key, n + 4, np.arange(n, n + 4)), np.ones((4, dim)))


def test_merge_s3_to_local_and_back(tiny_model_dir, tmp_path, moto_server):
    texts = make_texts(200)
    url = _url(moto_server)
    _encode(texts, url, tiny_model_dir)
    local = tmp_path / "copy.zarr"
    merge_stores([url], local)
    back = _url(moto_server)
    report = merge_stores([local], back)
    assert report.out == back and report.keys[0].rows == 200
    with pytest.raises(StoreError, match="already exists"):
        merge_stores([local], back)
    (key,) = Store.open(url).keys()
    for other in (local, back):
        np.testing.assert_array_equal(Store.open(other).get(key, texts), Store.open(url).get(key, texts))


@pytest.mark.fault('object store: kill -9, two writers, changed bytes')
def test_a_row_whose_bytes_changed_fails_its_digest(tiny_model_dir, moto_server):
    """A segment altered and its manifest's checksum forged to match: only the row digest can tell."""
    import google_crc32c

    url = _url(moto_server)
    texts = make_texts(100)
    _encode(texts, url, tiny_model_dir)
    st = Store.open(url)
    (key,) = st.keys()
    backend = st.backend
    m = backend.chain(key.group_name)[0]
    objects = backend.objects
    data = bytearray(objects.read(f"{key.group_name}/segments/{m.segment}"))
    data[(m.stop - m.start) * 16 + 5] ^= 0x40  # a byte of the first segment's first vector
    objects.put(f"{key.group_name}/segments/{m.segment}", bytes(data))
    forged = {**json.loads(objects.read(f"{key.group_name}/manifests/{m.start:016d}.json")),
              "crc32c": google_crc32c.value(bytes(data))}
    objects.put(f"{key.group_name}/manifests/{m.start:016d}.json", json.dumps(forged).encode())
    fresh = Store.open(url)
    with pytest.raises(StoreError, match=f"row {m.start} fails its digest"):
        fresh.get(key, texts)
    damage = fresh.verify()
    assert [(d.start, d.stop) for d in damage if d.array == "vectors"] == [(m.start, m.stop)]
    fresh.repair()
    assert Store.open(url).rows(key) == m.start  # uncommitted from the damaged rows on
    _encode(texts, url, tiny_model_dir)  # and encode recomputes them
    assert Store.open(url).verify() == [] and Store.open(url).rows(key) == 100


def test_torchrun_ranks_write_disjoint_segments_of_one_s3_store(tiny_model_dir, tmp_path, moto_server):
    from test_distributed import COMPUTE, env, make_texts as rank_texts, opts, torchrun

    texts = rank_texts(600)
    data = tmp_path / "texts.txt"
    data.write_text("\n".join(texts) + "\n")
    ref = Store.open(tmp_path / "ref.zarr")
    encode(texts, store=ref.path, options=opts(tiny_model_dir), compute=COMPUTE)
    url = _url(moto_server)
    job = subprocess.run(torchrun(tiny_model_dir, data, url), env=env(), capture_output=True, text=True, timeout=600)
    assert job.returncode == 0, job.stderr[-2000:]
    assert json.loads(job.stdout)["world_size"] == 2
    got = Store.open(url)
    writers = set()
    for key in ref.keys():
        assert got.rows(key) == 600
        np.testing.assert_array_equal(got.read_ids(key, 600), ref.read_ids(key, 600))  # one process's row order
        np.testing.assert_allclose(got.get(key, texts), ref.get(key, texts), atol=1e-6)
        writers |= {m.writer for m in got.backend.chain(key.group_name)}
    assert len(writers) == 2  # both ranks committed segments of their own
    assert got.verify() == []


def test_a_ray_sweep_reads_its_vectors_from_s3(tiny_model_dir, tmp_path, moto_server):
    """docs/distributed.md's cluster recipe in miniature: the config's store is a URL, the cells run as Ray tasks
    and read the vectors from it; the records equal a local sweep's on a local store."""
    pytest.importorskip("ray")
    from embedstore.study.cells import load_config
    from embedstore.study.ray_executor import RayExecutor
    from embedstore.study.run import run_study
    from embedstore.study.sweep import read_results
    from test_experiments import write_config
    from test_ray_sweep import _comparable

    path = write_config(tmp_path, tiny_model_dir, ["english", "langalign"], aligners=("procrustes",))
    local = load_config(path)
    assert not run_study(local, workers=1, progress=False).summary.errors
    url = _url(moto_server)
    path.write_text(path.read_text().replace('store = "s.zarr"', f'store = "{url}"')
                    .replace('results = "results.jsonl"', 'results = "on-ray.jsonl"'))
    remote = load_config(path)
    assert remote.store == url
    summary = run_study(remote, executor=RayExecutor(init_options=(("num_cpus", 2),)), progress=False).summary
    assert not summary.errors and len(summary.ok) == len(read_results(local.results))
    assert Store.open(url).keys() and all(Store.open(url).rows(k) > 0 for k in Store.open(url).keys())
    want = {r["cell_id"]: _comparable(r) for r in read_results(local.results)}
    for record in read_results(remote.results):
        got = _comparable(record)
        assert got["metrics"] == want[record["cell_id"]]["metrics"], record["cell"]
