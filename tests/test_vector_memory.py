"""`study.vector_memory.RememberedVectors`: what `Store.get_ids` gives, each vector read from the store once."""
import numpy as np

from embedstore.data.hashing import text_ids
from embedstore.store import Store, StoreKey
from embedstore.study.vector_memory import RememberedVectors

KEY = StoreKey(model="m", fingerprint="f" * 16, pooling="mean", layer=2, max_length=128, prefix="")
OTHER = StoreKey(model="m", fingerprint="e" * 16, pooling="mean", layer=2, max_length=128, prefix="")


def filled(path, key_vectors):
    store = Store.open(path)
    for key, (texts, vectors) in key_vectors.items():
        with store.writer() as w:
            w.key(key, vectors.shape[1], {"test": True}, chunk_rows=4).append(text_ids(texts), vectors)
    return store


def test_the_store_s_vectors_each_read_once(tmp_path, monkeypatch):
    texts = [f"t{i}" for i in range(10)]
    vectors = np.arange(30, dtype=np.float32).reshape(10, 3)
    store = filled(tmp_path / "s.zarr", {KEY: (texts, vectors), OTHER: (texts, -vectors)})
    read = []
    real = Store.get_ids
    monkeypatch.setattr(Store, "get_ids", lambda self, key, ids: read.append(len(ids)) or real(self, key, ids))
    memory = RememberedVectors()
    order = [7, 0, 7, 3]
    first = memory.get(store, KEY, text_ids([texts[i] for i in order]))
    np.testing.assert_array_equal(first, vectors[order])
    assert read == [3]  # the distinct ones
    again = memory.get(store, KEY, text_ids([texts[i] for i in (3, 9, 0)]))
    np.testing.assert_array_equal(again, vectors[[3, 9, 0]])
    assert read == [3, 1]  # only t9 was new
    again[:] = 0  # a caller's array is its own
    np.testing.assert_array_equal(memory.get(store, KEY, text_ids(["t3"])), vectors[[3]])
    np.testing.assert_array_equal(memory.get(store, OTHER, text_ids(["t3"])), -vectors[[3]])  # per key
    assert memory.get(store, KEY, text_ids([])).shape[0] == 0


def test_past_its_limit_it_starts_again(tmp_path):
    texts = [f"t{i}" for i in range(10)]
    vectors = np.arange(30, dtype=np.float32).reshape(10, 3)
    store = filled(tmp_path / "s.zarr", {KEY: (texts, vectors)})
    memory = RememberedVectors(limit_bytes=5 * 3 * 4)
    np.testing.assert_array_equal(memory.get(store, KEY, text_ids(texts[:4])), vectors[:4])
    np.testing.assert_array_equal(memory.get(store, KEY, text_ids(texts[2:8])), vectors[2:8])  # 8 rows > 5: cleared
    assert memory._bytes == 0
    np.testing.assert_array_equal(memory.get(store, KEY, text_ids(texts)), vectors)
