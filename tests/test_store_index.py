"""The id index: the row of each id from a sorted array, built once per key, committed count and rows generation;
saved beside a zarr key and reused by the next process, never trusted beyond what the rows on disk say."""
from pathlib import Path

import numpy as np
import pytest

from embedstore.data.hashing import text_ids
from embedstore.store import Store, StoreKey, store as store_module
from embedstore.store.index import IdIndex
from embedstore.store.zarr_backend import ZarrBackend

KEY = StoreKey(model="m", fingerprint="f" * 16, pooling="mean", layer=2, max_length=128, prefix="")
TEXTS = [f"text {i}" for i in range(20)]
VECS = np.arange(20 * 3, dtype=np.float32).reshape(20, 3) + 1


def fill(path: Path, texts=TEXTS, vecs=VECS) -> Store:
    st = Store.open(path)
    with st.writer() as w:
        w.key(KEY, vecs.shape[1], {}, chunk_rows=4).append(text_ids(texts), vecs)
    return st


@pytest.fixture
def always_save(monkeypatch):
    """Save the index of any key, however small (the default saves from 65,536 rows on)."""
    monkeypatch.setattr(store_module, "SAVE_MIN_ROWS", 0)


def saved_files(st: Store) -> list[str]:
    return sorted(p.name for p in (st.path / KEY.group_name).glob("ids.index-*"))


def test_find_matches_a_dict_including_ids_that_share_their_high_half():
    rng = np.random.default_rng(0)
    ids = np.frombuffer(rng.bytes(5000 * 16), np.uint8).reshape(-1, 16).copy()
    ids[100:110, :8] = ids[99, :8]  # eleven ids with one high half: the two-key sort and the run search
    as_dict = {row.tobytes(): i for i, row in enumerate(ids)}
    absent = ids[95:115].copy()
    absent[:, 15] ^= 0xFF
    queries = np.concatenate([ids[::-7], ids[95:115], absent, ids[:3], ids[:3]])
    expected = [as_dict.get(q.tobytes(), -1) for q in queries]
    index = IdIndex.build(ids)
    assert index.find(queries).tolist() == expected
    assert IdIndex.build(ids[:3000]).extended(ids[3000:], 3000).find(queries).tolist() == expected
    assert IdIndex.build(ids[:0]).find(queries[:2]).tolist() == [-1, -1]


def test_the_index_is_saved_and_the_next_process_reads_no_ids(tmp_path, always_save, monkeypatch):
    st = fill(tmp_path / "s.zarr")
    assert st.contains(KEY, ["text 3", "nope"]).tolist() == [True, False]
    assert saved_files(st) == ["ids.index-g0-20.npy"]

    def no_id_reads(*args, **kwargs):
        raise AssertionError("read the ids although a saved index covers them")
    monkeypatch.setattr(ZarrBackend, "read_ids", no_id_reads)
    fresh = Store.open(st.path)
    assert fresh.contains(KEY, TEXTS[::-1]).all()
    np.testing.assert_array_equal(fresh.get(KEY, ["text 7", "text 2", "text 7"]), VECS[[7, 2, 7]])


def test_a_saved_index_is_extended_by_the_rows_committed_after_it(tmp_path, always_save, monkeypatch):
    st = fill(tmp_path / "s.zarr")
    st.contains(KEY, ["text 0"])
    monkeypatch.setattr(store_module, "SAVE_MIN_ROWS", 1000)  # the 3 new rows are not worth a new file
    more = [f"more {i}" for i in range(3)]
    fill(st.path, more, np.full((3, 3), 5, np.float32))
    reads = []
    original = ZarrBackend.read_ids
    monkeypatch.setattr(ZarrBackend, "read_ids", lambda self, name, n, start=0: reads.append((start, n)) or
                        original(self, name, n, start))
    fresh = Store.open(st.path)
    assert fresh.contains(KEY, ["text 19", "more 2", "nope"]).tolist() == [True, True, False]
    assert reads == [(20, 23)] and saved_files(st) == ["ids.index-g0-20.npy"]
    np.testing.assert_array_equal(fresh.get(KEY, ["more 1", "text 1"]), [[5, 5, 5], VECS[1]])


def test_after_a_repair_no_saved_index_is_used_even_at_the_same_row_count(tmp_path, always_save):
    """A repair drops rows and encode appends others: the count can come back to the same number with other
    ids in the rows. The rows generation, bumped by the repair, tells the indexes apart."""
    st = fill(tmp_path / "s.zarr")
    st.contains(KEY, ["text 0"])
    path = st.path / KEY.group_name / "vectors" / "c" / "0" / "0"
    path.unlink()  # the only shard: every row is lost
    st.repair()
    assert Store.open(st.path).rows(KEY) == 0 and saved_files(st) == []
    new = [f"new {i}" for i in range(20)]
    fill(st.path, new, VECS * 2)
    fresh = Store.open(st.path)
    assert fresh.attrs(KEY)["rows_generation"] == 1 and fresh.rows(KEY) == 20
    assert not fresh.contains(KEY, TEXTS).any() and fresh.contains(KEY, new).all()
    np.testing.assert_array_equal(fresh.get(KEY, new[::-1]), (VECS * 2)[::-1])
    assert saved_files(st) == ["ids.index-g1-20.npy"]


def test_a_saved_index_that_lies_never_returns_another_texts_vector(tmp_path, always_save):
    st = fill(tmp_path / "s.zarr")
    st.contains(KEY, ["text 0"])
    file = st.path / KEY.group_name / "ids.index-g0-20.npy"
    table = np.load(file)
    table[2] = table[2][::-1]  # every id now points at another row
    np.save(file, table)
    fresh = Store.open(st.path)
    np.testing.assert_array_equal(fresh.get(KEY, TEXTS), VECS)  # the read-back check re-read the ids
    assert Store.open(st.path)._index(KEY, fresh.attrs(KEY)).find(text_ids(TEXTS)).tolist() == list(range(20))


def test_a_sparse_gather_proves_ids_by_the_row_digests_and_a_lying_index_still_fails_safe(tmp_path, always_save,
                                                                                          monkeypatch):
    """Rows taken singly from 64-row chunks: their digests (crc32c of id and vector) prove they hold the ids asked
    for, so no id is read; an index that names other rows fails those digests and is rebuilt from the ids."""
    texts = [f"text {i}" for i in range(256)]
    vecs = np.random.default_rng(3).standard_normal((256, 3)).astype(np.float32)
    st = Store.open(tmp_path / "s.zarr")
    with st.writer() as w:
        w.key(KEY, 3, {}, chunk_rows=64).append(text_ids(texts), vecs)
    st.contains(KEY, texts[:1])  # saves the index
    wanted = [5, 70, 200]
    reads = []
    original = ZarrBackend._read
    monkeypatch.setattr(ZarrBackend, "_read",
                        lambda self, name, which, *a, **k: reads.append(which) or original(self, name, which, *a, **k))
    np.testing.assert_array_equal(Store.open(st.path).get(KEY, [texts[i] for i in wanted]), vecs[wanted])
    assert sorted(set(reads)) == ["row_digests", "vectors"]
    file = st.path / KEY.group_name / "ids.index-g0-256.npy"
    table = np.load(file)
    table[2] = np.roll(table[2], 1)  # every id now points at another row
    np.save(file, table)
    reads.clear()
    np.testing.assert_array_equal(Store.open(st.path).get(KEY, [texts[i] for i in wanted]), vecs[wanted])
    assert "ids" in reads  # the rows named were found to hold other ids, and the index was rebuilt from the ids


@pytest.mark.parametrize("content", [b"", b"\x93NUMPY garbage", b"x" * 100])
def test_an_unreadable_saved_index_is_rebuilt(tmp_path, always_save, content):
    st = fill(tmp_path / "s.zarr")
    (st.path / KEY.group_name / "ids.index-g0-20.npy").write_bytes(content)
    fresh = Store.open(st.path)
    np.testing.assert_array_equal(fresh.get(KEY, TEXTS[::3]), VECS[::3])
    assert np.load(st.path / KEY.group_name / "ids.index-g0-20.npy").shape == (3, 20)


def test_a_saved_index_does_not_hide_a_missing_file(tmp_path, always_save):
    st = fill(tmp_path / "s.zarr")
    st.contains(KEY, ["text 0"])
    (st.path / KEY.group_name / "vectors" / "c" / "0" / "0").unlink()
    with pytest.raises(Exception, match=r"vectors rows 0\.\.20: shard file missing"):
        Store.open(st.path).contains(KEY, ["text 0"])


def test_hdf5_keeps_nothing_beside_the_store(tmp_path, always_save):
    st = fill(tmp_path / "s.h5")
    assert st.contains(KEY, TEXTS).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5", "s.h5.lock"]


@pytest.mark.parametrize("shards", [None, (64, 5)])
def test_the_direct_chunk_reader_reads_what_zarr_reads(tmp_path, shards):
    """Including a chunk never written inside a shard (zarr's fill value) and rows across files. (Without
    shards, an absent chunk file is damage, found by the stat before any read: see test_store_integrity.)"""
    import zarr
    from zarr.codecs import Crc32cCodec
    from embedstore.store import chunk_files
    arr = zarr.create_array(str(tmp_path / "a"), shape=(256, 5), chunks=(8, 5), shards=shards, dtype="float16",
                            compressors=[Crc32cCodec()], fill_value=0)
    data = np.random.default_rng(0).normal(size=(256, 5)).astype(np.float16)
    if shards:
        data[16:24] = 0  # an all-zero chunk is not written at all
    arr[:] = data
    assert chunk_files.supported(arr)
    rows = np.array([0, 1, 2, 17, 23, 63, 64, 65, 200, 255])
    np.testing.assert_array_equal(chunk_files.read_rows(arr, str(tmp_path / "a"), rows)[0], data[rows])
    np.testing.assert_array_equal(chunk_files.read_rows(arr, str(tmp_path / "a"), np.arange(256))[0], data)
    assert chunk_files.read_rows(arr, str(tmp_path / "a"), np.arange(0))[0].shape == (0, 5)
    plain = zarr.create_array(str(tmp_path / "b"), shape=(8, 5), chunks=(8, 5), dtype="float16", fill_value=0,
                              compressors=None)
    assert not chunk_files.supported(plain)  # no checksum: read through zarr


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_the_index_is_built_once_per_key_and_count_and_extended_when_the_key_grows(tmp_path, suffix, monkeypatch):
    st = fill(tmp_path / f"s{suffix}")
    other = StoreKey(model="m", fingerprint="f" * 16, pooling="cls", layer=2, max_length=128, prefix="")
    with st.writer() as w:
        w.key(other, 3, {}, chunk_rows=4).append(text_ids(["x"]), np.ones((1, 3), np.float32))
    backend_type = type(st.backend)
    reads = []
    original = backend_type.read_ids
    monkeypatch.setattr(backend_type, "read_ids", lambda self, name, n, start=0: reads.append((name, start, n)) or
                        original(self, name, n, start))
    for _ in range(3):  # alternating keys (a layer each) rebuild nothing
        assert st.contains(KEY, ["text 1"]).all() and st.contains(other, ["x"]).all()
        np.testing.assert_array_equal(st.get(KEY, ["text 4"]), VECS[[4]])
    assert reads == [(KEY.group_name, 0, 20), (other.group_name, 0, 1)]
    fill(st.path, ["text 20"], np.ones((1, 3), np.float32))
    assert st.contains(KEY, ["text 20"]).all()
    assert reads[-1] == (KEY.group_name, 20, 21)  # only the new row's id
