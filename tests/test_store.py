import warnings

import numpy as np
import pytest

from embedstore.base.errors import StoreError
from embedstore.data.hashing import text_ids
from embedstore.store import Store, StoreKey

KEY = StoreKey(model="m", fingerprint="f" * 16, pooling="mean", layer=2, max_length=128, prefix="")


@pytest.fixture(params=["s.zarr", "s.h5"])
def store_path(request, tmp_path):
    return tmp_path / request.param


def fill(store: Store, texts, vectors, chunk_rows=4, key=KEY):
    with store.writer() as w:
        kw = w.key(key, vectors.shape[1], {"test": True}, chunk_rows=chunk_rows)
        kw.append(text_ids(texts), vectors)


def test_get_returns_input_order_across_chunks(store_path):
    texts = [f"t{i}" for i in range(11)]
    vecs = np.arange(11 * 3, dtype=np.float32).reshape(11, 3)
    st = Store.open(store_path)
    fill(st, texts[:6], vecs[:6])
    fill(st, texts[6:], vecs[6:])  # second writer session resumes at row 6 inside a chunk
    st = Store.open(store_path)
    assert st.keys() == [KEY]
    assert st.rows(KEY) == 11
    order = [10, 0, 5, 5, 7]
    np.testing.assert_array_equal(st.get(KEY, [texts[i] for i in order]), vecs[order])
    np.testing.assert_array_equal(st.get(KEY, texts), vecs)
    assert st.contains(KEY, ["t3", "zzz"]).tolist() == [True, False]
    info = st.info()
    assert info["keys"][0]["rows"] == 11 and info["keys"][0]["dim"] == 3 and info["size_bytes"] > 0
    assert info["keys"][0]["provenance"] == {"test": True}


def test_missing_texts_error_says_how_many(store_path):
    st = Store.open(store_path)
    fill(st, ["a", "b"], np.ones((2, 3), np.float32))
    with pytest.raises(StoreError, match=r"2 of 3 texts are not encoded under key .*embedstore encode"):
        st.get(KEY, ["a", "x", "y"])
    other = StoreKey(model="m", fingerprint="f" * 16, pooling="cls", layer=2, max_length=128, prefix="")
    with pytest.raises(StoreError, match="no vectors under key"):
        st.get(other, ["a"])


def test_uncommitted_rows_are_invisible_not_zeros(store_path):
    st = Store.open(store_path)
    fill(st, ["a", "b"], np.ones((2, 3), np.float32))
    with st.writer() as w:
        kw = w.key(KEY, 3, {}, chunk_rows=4)
        w._writer.write(KEY.group_name, kw.committed, text_ids(["c", "d", "e"]), np.full((3, 3), 7, np.float32))
        if store_path.suffix == ".zarr":  # zarr readers see the live directory while the writer works
            assert Store.open(store_path).rows(KEY) == 2
            assert not Store.open(store_path).contains(KEY, ["c"]).any()
    assert Store.open(store_path).rows(KEY) == 2


def test_second_writer_gets_a_clear_error(store_path):
    st = Store.open(store_path)
    with st.writer():
        with pytest.raises(StoreError, match=r"another process \(pid \d+\) is writing this store"):
            with Store.open(store_path).writer():
                pass
    with Store.open(store_path).writer():  # released on exit
        pass


def test_float16_storage_reads_back_float32(store_path):
    key = StoreKey(model="m", fingerprint="f" * 16, pooling="mean", layer=2, max_length=128, prefix="", dtype="float16")
    vecs = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    st = Store.open(store_path)
    fill(st, list("abcde"), vecs, key=key)
    out = Store.open(store_path).get(key, list("abcde"))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, vecs, atol=1e-2)


def test_bad_store_path_and_missing_store(tmp_path):
    with pytest.raises(StoreError, match="must end in .zarr"):
        Store.open(tmp_path / "store.db")
    with pytest.raises(StoreError, match="no store here"):
        Store.open(tmp_path / "none.zarr").info()


def test_temp_files_of_a_killed_zarr_write_are_ignored_by_readers_and_removed_by_the_next_writer(tmp_path):
    path = tmp_path / "s.zarr"
    fill(Store.open(path), ["a", "b"], np.ones((2, 3), np.float32))
    # what zarr's atomic write leaves when killed between writing its temp file and renaming it
    leftovers = [path / f"zarr.{'a' * 32}.partial", path / KEY.group_name / f"zarr.{'b' * 32}.partial",
                 path / KEY.group_name / "ids" / "c" / f"0.{'c' * 32}.partial"]
    for f in leftovers:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"half")
    user_file = path / "notes.partial"  # not zarr's naming: not ours to delete
    user_file.write_bytes(b"mine")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Store.open(path).keys() == [KEY]
    fill(Store.open(path), ["c"], np.ones((1, 3), np.float32))
    assert not any(f.exists() for f in leftovers) and user_file.exists()
    assert Store.open(path).rows(KEY) == 3


def test_remembered_ids_are_text_ids():
    """What a sweep's cells look their vectors up by: the same ids as `text_ids`, in order, repeats and pairs
    included, also after the memory was cleared for being full."""
    from embedstore.data.hashing import RememberedIds

    ids = RememberedIds(limit=4)
    for texts in (["a", "b", "a"], [("p", "h"), "a", " a "], [], ["c", "d", "e", "a"], ["a", "é"]):
        np.testing.assert_array_equal(ids(texts), text_ids(texts))
    assert ids(["x"]).shape == (1, 16) and ids([]).shape == (0, 16)


def test_a_gather_reads_the_metadata_and_rows_without_zarrs_event_loop(tmp_path, monkeypatch):
    """A fresh process's gather of a key with row digests reads its group and arrays' metadata and its rows
    directly (store/zarr_backend `_metadata`, store/chunk_files): zarr's event loop, a thread and round trips,
    was a tenth of the CPU of a 10k-row gather (benchmarks/store.py) that reads no data through it."""
    import zarr.core.sync

    texts = [f"t{i}" for i in range(40)]
    vecs = np.arange(40 * 3, dtype=np.float32).reshape(40, 3)
    fill(Store.open(tmp_path / "s.zarr"), texts, vecs, chunk_rows=8)
    calls = []
    get_loop = zarr.core.sync._get_loop  # what every zarr call that does I/O asks for first
    monkeypatch.setattr(zarr.core.sync, "_get_loop", lambda: calls.append(1) or get_loop())
    st = Store.open(tmp_path / "s.zarr")
    np.testing.assert_array_equal(st.get(KEY, [texts[i] for i in (3, 39, 17)]), vecs[[3, 39, 17]])
    np.testing.assert_array_equal(st.get(KEY, texts), vecs)
    assert st.keys() == [KEY] and calls == []
