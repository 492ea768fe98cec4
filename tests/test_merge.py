import json

import numpy as np
import pytest
from typer.testing import CliRunner

from embedstore.cli.app import app
from embedstore.encoding.options import ComputeOptions, EncodeOptions
from embedstore.encoding.encode import encode
from embedstore.base.errors import ConfigError, StoreError
from embedstore.data.hashing import text_ids
from embedstore.store import Store, StoreKey, merge_stores

KEY = StoreKey(model="m", fingerprint="f" * 16, pooling="mean", layer=2, max_length=128, prefix="")
OTHER = StoreKey(model="m", fingerprint="f" * 16, pooling="cls", layer=2, max_length=128, prefix="")
TEXTS = [f"text {i}" for i in range(40)]


def fill(path, texts, vectors, key=KEY, chunk_rows=8) -> Store:
    st = Store.open(path)
    with st.writer() as w:
        w.key(key, vectors.shape[1], {"made_by": path.name}, chunk_rows=chunk_rows).append(text_ids(texts), vectors)
    return st


def vectors(n, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 4)).astype(np.float32)


@pytest.mark.parametrize("suffixes", [(".zarr", ".h5", ".zarr"), (".h5", ".zarr", ".h5")])
def test_two_halves_of_an_encode_merge_into_the_whole(tiny_model_dir, tmp_path, suffixes):
    opts, compute = EncodeOptions(model=str(tiny_model_dir), layers=(-1, 1)), ComputeOptions(batch_size=4, chunk_rows=8)
    texts = [f"sentence number {i} " + "word " * (i % 7) for i in range(30)]
    whole = Store.open(tmp_path / "whole.zarr")
    encode(texts, store=whole.path, options=opts, compute=compute)
    a, b, out = (tmp_path / f"{name}{sfx}" for name, sfx in zip("abc", suffixes))
    encode(texts[:18], store=a, options=opts, compute=compute)
    encode(texts[12:], store=b, options=opts, compute=compute)  # 6 texts in both halves
    report = merge_stores([a, b], out)
    merged = Store.open(out)
    assert sorted(merged.keys(), key=lambda k: k.layer) == sorted(whole.keys(), key=lambda k: k.layer)
    for key in whole.keys():
        assert merged.rows(key) == 30
        np.testing.assert_allclose(merged.get(key, texts), whole.get(key, texts), atol=1e-6, rtol=0)
    assert [(k.rows, k.duplicates, list(k.rows_from.values())) for k in report.keys] == [(30, 6, [18, 12])] * 2
    assert all(k.max_difference <= 1e-6 for k in report.keys)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("c")) == [out.name, out.name + ".lock"]


def test_a_key_of_one_input_is_copied_as_its_own_key(tmp_path):
    a = fill(tmp_path / "a.zarr", TEXTS[:10], vectors(10))
    b = fill(tmp_path / "b.h5", TEXTS[:10], vectors(10, seed=1), key=OTHER)
    fill(b.path, TEXTS[5:20], np.concatenate([vectors(10)[5:], vectors(10, seed=2)]))
    merge_stores([a.path, b.path], tmp_path / "c.zarr")
    c = Store.open(tmp_path / "c.zarr")
    assert {k.pooling: c.rows(k) for k in c.keys()} == {"mean": 20, "cls": 10}
    np.testing.assert_array_equal(c.get(OTHER, TEXTS[:10]), vectors(10, seed=1))
    np.testing.assert_array_equal(c.get(KEY, TEXTS[:20]), np.concatenate([vectors(10), vectors(10, seed=2)]))
    assert c.attrs(KEY)["provenance"]["merged_from"][0] == {"store": str(a.path), "rows": 10,
                                                             "provenance": {"made_by": "a.zarr"}}


@pytest.mark.fault('merge of conflicting or failing inputs')
def test_same_text_with_different_vectors_is_an_error_unless_tolerated(tmp_path):
    a = fill(tmp_path / "a.zarr", TEXTS[:10], vectors(10))
    shifted = vectors(10).copy()
    shifted[3, 1] += 1e-3
    b = fill(tmp_path / "b.zarr", TEXTS[:10], shifted)
    out = tmp_path / "c.zarr"
    with pytest.raises(StoreError, match=r"text id [0-9a-f]{32} has vectors differing by 1.00e-03 in .*a.zarr and "
                                         r".*b.zarr \(tolerance 1e-05\).*raise tolerance"):
        merge_stores([a.path, b.path], out)
    assert not out.exists() and not list(tmp_path.glob("c.merging-*"))
    report = merge_stores([a.path, b.path], out, tolerance=1e-2)
    np.testing.assert_array_equal(Store.open(out).get(KEY, TEXTS[:10]), vectors(10))
    assert report.keys[0].max_difference == pytest.approx(1e-3, rel=1e-3)


def test_float16_keys_allow_one_float16_step(tmp_path):
    half = StoreKey(model="m", fingerprint="f" * 16, pooling="mean", layer=2, max_length=128, prefix="",
                    dtype="float16")
    v = np.full((1, 4), 1.0, np.float32)
    a = fill(tmp_path / "a.zarr", TEXTS[:1], v, key=half)
    b = fill(tmp_path / "b.zarr", TEXTS[:1], v + np.float32(2 ** -10), key=half)  # the next float16 after 1.0
    assert merge_stores([a.path, b.path], tmp_path / "c.zarr").keys[0].duplicates == 1


def test_output_must_be_new_unless_forced(tmp_path):
    a = fill(tmp_path / "a.zarr", TEXTS[:5], vectors(5))
    b = fill(tmp_path / "b.zarr", TEXTS[5:8], vectors(3))
    out = tmp_path / "c.zarr"
    merge_stores([a.path], out)
    with pytest.raises(StoreError, match=r"c.zarr: already exists; choose a new out path or pass force=True"):
        merge_stores([a.path, b.path], out)
    assert Store.open(out).rows(KEY) == 5
    merge_stores([a.path, b.path], out, force=True)
    assert Store.open(out).rows(KEY) == 8
    assert not list(tmp_path.glob("c.zarr.replaced-*"))
    with pytest.raises(StoreError, match=r"a.zarr: is also an input"):
        merge_stores([a.path, b.path], a.path, force=True)
    with pytest.raises(ConfigError, match=r"a.zarr: given twice"):
        merge_stores([a.path, a.path], tmp_path / "d.zarr")
    with pytest.raises(StoreError, match=r"none.zarr: no store here"):
        merge_stores([tmp_path / "none.zarr"], tmp_path / "d.zarr")


def test_store_merge_command(tmp_path):
    a = fill(tmp_path / "a.zarr", TEXTS[:5], vectors(5))
    b = fill(tmp_path / "b.zarr", TEXTS[3:8], vectors(8)[3:])
    out = tmp_path / "c.h5"
    result = CliRunner().invoke(app, ["store", "merge", str(a.path), str(b.path), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["keys"][0]["rows"], report["keys"][0]["duplicates"]) == (8, 2)
    np.testing.assert_array_equal(Store.open(out).get(KEY, TEXTS[:8]), vectors(8))
    again = CliRunner().invoke(app, ["store", "merge", str(a.path), "--out", str(out)])
    assert again.exit_code == 1 and "error:" in again.output and "already exists" in again.output


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
@pytest.mark.fault('merge of conflicting or failing inputs')
def test_a_failed_merge_leaves_no_lock_or_temporary_file_it_created(tmp_path, suffix):
    """issue 13 D8: the output's lock file stayed behind a merge that failed."""
    a = fill(tmp_path / "a.zarr", TEXTS[:4], vectors(4))
    b = fill(tmp_path / "b.zarr", TEXTS[:4], vectors(4, seed=1))
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(StoreError, match="differing"):
        merge_stores([a.path, b.path], tmp_path / f"c{suffix}")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
