"""Committed rows are read back as written or not at all: a missing, truncated or corrupted chunk is a one-line
StoreError naming store, key and rows (never zeros), `verify` finds every damaged chunk, `repair` drops exactly
their rows so that encode recomputes them, and merge refuses a damaged input. zarr stores are tested in both
layouts: sharded (keys created now) and one file per chunk (keys created before sharding)."""
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from embedstore.base.errors import StoreError
from embedstore.cli.app import app
from embedstore.data.hashing import text_ids
from embedstore.encoding.encode import encode
from embedstore.encoding.options import ComputeOptions, EncodeOptions
from embedstore.store import Store, StoreKey, chunk_files, merge_stores, row_check, zarr_backend

KEY = StoreKey(model="m", fingerprint="f" * 16, pooling="mean", layer=2, max_length=128, prefix="")
TEXTS = [f"text {i}" for i in range(20)]
VECS = np.arange(20 * 3, dtype=np.float32).reshape(20, 3) + 1  # no zero row: zeros would be indistinguishable


def fill(path: Path, texts=TEXTS, vecs=VECS, chunk_rows=4) -> Store:
    st = Store.open(path)
    with st.writer() as w:
        w.key(KEY, vecs.shape[1], {}, chunk_rows=chunk_rows).append(text_ids(texts), vecs)
    return st


def chunk_file(st: Store, which: str, chunk: int, key: StoreKey = KEY) -> Path:
    """The file of a chunk of a key written one file per chunk (or of a shard of a sharded key)."""
    return st.path / key.group_name / which / "c" / str(chunk) / "0"


def flip_shard_chunk_byte(st: Store, which: str, chunk: int, key: StoreKey = KEY) -> None:
    """Corrupt one byte of a chunk inside its shard: the shard ends with its index of (offset, size) pairs."""
    arr = zarr.open_array(str(st.path / key.group_name / which), mode="r")
    per_shard = arr.shards[0] // arr.chunks[0]
    path = chunk_file(st, which, chunk // per_shard, key)
    data = bytearray(path.read_bytes())
    index = np.frombuffer(bytes(data[-(16 * per_shard + 4):-4]), "<u8").reshape(per_shard, 2)
    data[int(index[chunk % per_shard, 0]) + 2] ^= 0xFF
    path.write_bytes(bytes(data))


def flip_hdf5_byte(path: Path, which: str, chunk: int) -> None:
    """Corrupt one byte inside a chunk's data, where HDF5 keeps it in the file."""
    with h5py.File(path, "r") as f:
        info = f[KEY.group_name][which].id.get_chunk_info(chunk)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + 2)
        byte = fh.read(1)
        fh.seek(info.byte_offset + 2)
        fh.write(bytes([byte[0] ^ 0xFF]))


def sharded(st: Store, key: StoreKey = KEY) -> bool:
    return zarr.open_array(str(st.path / key.group_name / "vectors"), mode="r").shards is not None


def damage(st: Store, which: str, chunk: int) -> None:
    """zarr, a file per chunk: delete the chunk file (read back as zeros before); a sharded zarr key: flip a byte
    of the chunk inside its shard; HDF5: flip a byte (read back wrong before)."""
    if st.path.suffix == ".h5":
        flip_hdf5_byte(st.path, which, chunk)
    elif sharded(st):
        flip_shard_chunk_byte(st, which, chunk)
    else:
        chunk_file(st, which, chunk).unlink()


@pytest.fixture(params=["s.zarr", "unsharded.zarr", "s.h5"])
def store_path(request, tmp_path, monkeypatch):
    if request.param == "unsharded.zarr":
        monkeypatch.setattr(zarr_backend, "SHARD_CHUNKS", 1)  # the layout of keys created before sharding
    return tmp_path / request.param


@pytest.fixture(params=[64, 1], ids=["sharded", "unsharded"])
def zarr_layout(request, monkeypatch):
    monkeypatch.setattr(zarr_backend, "SHARD_CHUNKS", request.param)
    return request.param


@pytest.mark.fault('store: deleted, truncated and flipped chunks, damaged digests and attributes')
def test_a_damaged_vectors_chunk_is_an_error_naming_store_key_and_rows(store_path):
    st = fill(store_path)
    damage(st, "vectors", 1)
    for read in (lambda: st.get(KEY, TEXTS), lambda: st.get(KEY, ["text 5"]), lambda: st.read_block(KEY, 0, 20)):
        with pytest.raises(StoreError) as e:
            read()
        msg = str(e.value)
        assert "\n" not in msg
        assert str(store_path) in msg and KEY.group_name in msg and "vectors rows 4..8" in msg
    if store_path.suffix == ".h5" or sharded(st):  # a corrupted chunk spoils only its rows (a deleted one: above)
        np.testing.assert_array_equal(st.get(KEY, ["text 0", "text 9"]), VECS[[0, 9]])


@pytest.mark.fault('store: deleted, truncated and flipped chunks, damaged digests and attributes')
def test_a_missing_vectors_file_is_found_when_the_ids_are_read(tmp_path, zarr_layout):
    """encode's "already stored" check reads only ids: it said every text was stored and repaired nothing.
    A sharded key loses the rows of the whole shard with its file."""
    st = fill(tmp_path / "s.zarr")
    if zarr_layout > 1:
        chunk_file(st, "vectors", 0).unlink()
        expected = r"vectors rows 0\.\.20: shard file missing"
    else:
        chunk_file(st, "vectors", 4).unlink()
        expected = r"vectors rows 16\.\.20: chunk file missing"
    with pytest.raises(StoreError, match=r"s.zarr: key .*" + expected):
        Store.open(st.path).contains(KEY, ["text 0"])
    assert [(d.array, d.start, d.stop) for d in st.verify()] == [("vectors", 0 if zarr_layout > 1 else 16, 20)]


@pytest.mark.fault('store: deleted, truncated and flipped chunks, damaged digests and attributes')
def test_a_flipped_byte_in_a_zarr_chunk_fails_its_crc32c(tmp_path, zarr_layout):
    st = fill(tmp_path / "s.zarr")
    if zarr_layout > 1:
        flip_shard_chunk_byte(st, "vectors", 2)
    else:
        path = chunk_file(st, "vectors", 2)
        data = bytearray(path.read_bytes())
        data[5] ^= 0x01
        path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=r"vectors rows 8\.\.12: chunk unreadable \(.*checksum"):
        st.get(KEY, TEXTS)


@pytest.mark.fault('store: deleted, truncated and flipped chunks, damaged digests and attributes')
def test_a_damaged_shard_index_spoils_its_shard_and_repair_drops_only_that_shard(tmp_path):
    """The shard's own index of its chunks is crc32c-checked too: damaged, every chunk of the shard is
    unreadable (and named as such); a repair deletes that shard and keeps the rows of the others."""
    texts = [f"text {i}" for i in range(300)]
    vecs = np.arange(300 * 3, dtype=np.float32).reshape(300, 3) + 1
    st = fill(tmp_path / "s.zarr", texts, vecs, chunk_rows=2)  # 128-row shards: rows 0..128, 128..256, 256..300
    path = chunk_file(st, "ids", 1)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    damaged = st.verify()
    assert {(d.array, d.start // 128) for d in damaged} == {("ids", 1)} and len(damaged) == 64
    with pytest.raises(StoreError, match=r"ids rows 128\.\.130: chunk unreadable"):
        Store.open(st.path).contains(KEY, ["text 0"])
    st.repair()
    st = Store.open(st.path)
    assert st.verify() == [] and st.rows(KEY) == 172  # rows 256..300 moved down into a new shard 1
    kept = [i for i in range(300) if not 128 <= i < 256]
    np.testing.assert_array_equal(st.get(KEY, [texts[i] for i in kept]), vecs[kept])


def old_zarr_store(path: Path) -> Store:
    """A store as written before checksums: no crc32c codec on its arrays."""
    root = zarr.open_group(str(path), mode="w")
    group = root.create_group(KEY.group_name, attributes={"key": KEY.to_dict(), "dim": 3, "dtype": "float32",
                                                          "provenance": {}, "committed_rows": 20})
    for which, data in (("vectors", VECS), ("ids", text_ids(TEXTS))):
        arr = group.create_array(which, shape=data.shape, chunks=(4, data.shape[1]), dtype=data.dtype,
                                 compressors=None, fill_value=0)
        arr[:] = data
    return Store.open(path)


@pytest.mark.fault('store: deleted, truncated and flipped chunks, damaged digests and attributes')
def test_stores_without_checksums_still_read_and_their_truncated_or_missing_chunks_are_errors(tmp_path):
    st = old_zarr_store(tmp_path / "old.zarr")
    np.testing.assert_array_equal(st.get(KEY, TEXTS), VECS)
    path = chunk_file(st, "vectors", 3)
    path.write_bytes(path.read_bytes()[:25])  # was: ValueError: cannot reshape array of size ...
    with pytest.raises(StoreError, match=r"old.zarr: key .*vectors rows 12\.\.16: chunk unreadable"):
        st.get(KEY, TEXTS)
    chunk_file(st, "ids", 0).unlink()
    with pytest.raises(StoreError, match=r"old.zarr: key .*ids rows 0\.\.4: chunk file missing"):
        Store.open(st.path).contains(KEY, TEXTS)  # a fresh reader: `st` has the ids cached
    assert [(d.array, d.start, d.stop) for d in st.verify()] == [("ids", 0, 4), ("vectors", 12, 16)]


@pytest.mark.fault('store: deleted, truncated and flipped chunks, damaged digests and attributes')
def test_merge_refuses_an_input_whose_ids_chunk_is_missing(tmp_path, zarr_layout):
    a = fill(tmp_path / "a.zarr")
    b = fill(tmp_path / "b.zarr")
    chunk_file(b, "ids", 0 if zarr_layout > 1 else 1).unlink()  # was: "vectors differing by ... raise tolerance"
    rows = r"0\.\.20: shard" if zarr_layout > 1 else r"4\.\.8: chunk"
    with pytest.raises(StoreError, match=rf"b.zarr: key .*ids rows {rows} file missing") as e:
        merge_stores([a.path, b.path], tmp_path / "c.zarr")
    assert "differing" not in str(e.value)
    assert not (tmp_path / "c.zarr").exists()


@pytest.mark.parametrize("attributes, field", [
    ("x", "attributes"), ({"committed_rows": "12", "key": KEY.to_dict(), "dim": 3}, "committed_rows"),
    ({"committed_rows": 4, "key": "m", "dim": 3}, "key"), ({"committed_rows": 4, "key": {"model": "m"}}, "key"),
    ({"committed_rows": 4, "key": KEY.to_dict(), "dim": -3}, "dim"),
])
@pytest.mark.fault('store: deleted, truncated and flipped chunks, damaged digests and attributes')
def test_nonsense_group_attributes_are_a_one_line_store_error(tmp_path, attributes, field):
    st = fill(tmp_path / "s.zarr")
    meta_path = st.path / KEY.group_name / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["attributes"] = attributes
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(StoreError, match=rf"s.zarr: key {KEY.group_name}: .*{field}") as e:
        Store.open(st.path).keys()
    assert "\n" not in str(e.value)
    result = CliRunner().invoke(app, ["store", "info", str(st.path)])
    assert result.exit_code == 1 and result.output.startswith("error:") and KEY.group_name in result.output


@pytest.mark.fault('store: deleted, truncated and flipped chunks, damaged digests and attributes')
def test_verify_reports_every_damaged_chunk_and_the_cli_exits_non_zero(store_path):
    st = fill(store_path)
    result = CliRunner().invoke(app, ["store", "verify", str(store_path)])
    assert result.exit_code == 0 and "intact" in result.output
    damage(st, "vectors", 1)
    damage(st, "ids", 3)
    assert [(d.group, d.array, d.start, d.stop) for d in st.verify()] == [
        (KEY.group_name, "ids", 12, 16), (KEY.group_name, "vectors", 4, 8)]
    result = CliRunner().invoke(app, ["store", "verify", str(store_path)])
    assert result.exit_code == 1, result.output
    assert "ids rows 12..16" in result.output and "vectors rows 4..8" in result.output
    assert "8 committed rows damaged" in result.output


@pytest.mark.fault('store: deleted, truncated and flipped chunks, damaged digests and attributes')
def test_repair_keeps_every_undamaged_row(store_path):
    st = fill(store_path)
    damage(st, "vectors", 1)
    damage(st, "ids", 3)
    dropped = st.repair().dropped
    assert len(dropped) == 2
    st = Store.open(store_path)
    assert st.verify() == [] and st.rows(KEY) == 12
    kept = [i for i in range(20) if not 4 <= i < 8 and not 12 <= i < 16]
    np.testing.assert_array_equal(st.get(KEY, [TEXTS[i] for i in kept]), VECS[kept])
    assert st.contains(KEY, TEXTS).tolist() == [i in kept for i in range(20)]
    with st.writer() as w:  # a writer appends after the repaired rows
        w.key(KEY, 3, {}).append(text_ids(["new"]), np.full((1, 3), 9, np.float32))
    np.testing.assert_array_equal(Store.open(store_path).get(KEY, ["new", "text 19"]), [[9] * 3, VECS[19]])


@pytest.mark.fault('store: deleted, truncated and flipped chunks, damaged digests and attributes')
def test_repair_then_encode_recomputes_exactly_the_dropped_texts(tiny_model_dir, tmp_path, store_path):
    opts, compute = EncodeOptions(model=str(tiny_model_dir)), ComputeOptions(batch_size=4, chunk_rows=8)
    texts = [f"sentence number {i} " + "word " * (i % 5) for i in range(30)]
    intact = Store.open(tmp_path / "intact.zarr")
    encode(texts, store=intact.path, options=opts, compute=compute)
    key = intact.keys()[0]
    st = Store.open(store_path)
    encode(texts, store=st.path, options=opts, compute=compute)
    if st.path.suffix == ".zarr" and sharded(st, key):
        flip_shard_chunk_byte(st, "vectors", 1, key)
    elif st.path.suffix == ".zarr":
        chunk_file(st, "vectors", 1, key).unlink()
    else:
        with h5py.File(st.path, "r") as f:
            info = f[key.group_name]["vectors"].id.get_chunk_info(1)
        with open(st.path, "r+b") as fh:
            fh.seek(info.byte_offset)
            fh.write(b"\xff\xfe\xfd")
    result = CliRunner().invoke(app, ["store", "verify", str(st.path), "--repair"])
    assert result.exit_code == 0, result.output
    assert "dropped 8 rows" in result.output
    assert Store.open(st.path).verify() == []
    report = encode(texts, store=st.path, options=opts, compute=compute)
    assert (report.present, report.encoded) == (22, 8)
    np.testing.assert_allclose(Store.open(st.path).get(key, texts), intact.get(key, texts), atol=1e-6, rtol=0)


def test_files_a_write_covers_whole_are_written_directly_and_read_back_by_zarr_itself(tmp_path, zarr_layout,
                                                                                      monkeypatch):
    """Whole files go through chunk_files.write_file, the partial ones at either end through zarr: zarr's own
    reader (which checks every crc32c and shard index) must read exactly the rows written, whichever wrote them."""
    rows = 4 * zarr_layout  # rows per file at chunk_rows=4
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((3 * rows + 5, 3)).astype(np.float32)
    texts = [f"t{i}" for i in range(len(vecs))]
    direct = []
    write_file = chunk_files.write_file
    monkeypatch.setattr(chunk_files, "write_file", lambda arr, *a: direct.append(arr.basename) or write_file(arr, *a))
    st = Store.open(tmp_path / "s.zarr")
    with st.writer() as w:
        kw = w.key(KEY, 3, {}, chunk_rows=4)
        kw.append(text_ids(texts[:3]), vecs[:3])  # the rest starts mid-file: a zarr edge, whole files, an edge
        kw.append(text_ids(texts[3:]), vecs[3:])
    whole = len(vecs) // rows - 1  # the first file holds rows of both appends, the last is partly filled
    assert direct == ["vectors"] * whole + ["row_digests"] * whole + ["ids"] * whole
    arr = zarr.open_array(str(st.path / KEY.group_name / "vectors"), mode="r")
    ids = zarr.open_array(str(st.path / KEY.group_name / "ids"), mode="r")
    np.testing.assert_array_equal(arr[:len(vecs)], vecs.astype(arr.dtype))
    np.testing.assert_array_equal(ids[:len(vecs)], text_ids(texts))
    np.testing.assert_array_equal(st.get(KEY, texts[::-1]), vecs[::-1].astype(arr.dtype).astype(np.float32))
    assert st.verify() == []
    assert not list(st.path.rglob("*.partial"))
    flip_shard_chunk_byte(st, "vectors", 1) if zarr_layout > 1 else chunk_file(st, "vectors", 1).write_bytes(b"x")
    assert [(d.array, d.start) for d in st.verify()] == [("vectors", 4)]


@pytest.mark.fault('store: deleted, truncated and flipped chunks, damaged digests and attributes')
def test_a_sparse_read_checks_the_rows_it_takes_by_their_digests_and_finds_a_flipped_byte(tmp_path, monkeypatch):
    """Vector rows are read by their row digests (issue 28: a chunk's crc32c cannot tell a stale file), sparse or
    dense; a byte flipped in one is still an error naming the key and the rows of its chunk."""
    rng = np.random.default_rng(1)
    vecs = rng.standard_normal((256, 3)).astype(np.float32)
    texts = [f"t{i}" for i in range(len(vecs))]
    st = fill(tmp_path / "s.zarr", texts, vecs, chunk_rows=64)
    checked = []
    failing_rows = row_check.failing_rows
    monkeypatch.setattr(row_check, "failing_rows", lambda ids, rows, *a: checked.append(len(rows)) or failing_rows(ids, rows, *a))
    sparse = [5, 70, 200]  # a row from each of three chunks: a sparse read
    np.testing.assert_array_equal(Store.open(st.path).get(KEY, [texts[i] for i in sparse]), vecs[sparse])
    assert checked == [3]  # the rows taken, by their digests
    checked.clear()
    np.testing.assert_array_equal(Store.open(st.path).get(KEY, texts), vecs)
    assert checked == [256]
    arr = zarr.open_array(str(st.path / KEY.group_name / "vectors"), mode="r")
    path = chunk_file(st, "vectors", 0)
    data = bytearray(path.read_bytes())
    index = np.frombuffer(bytes(data[-(16 * (arr.shards[0] // 64) + 4):-4]), "<u8").reshape(-1, 2)
    data[int(index[1, 0]) + 6 * 12 + 1] ^= 0xFF  # chunk 1 (rows 64..128), row 70, its first float
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="vectors rows 64..128"):
        Store.open(st.path).get(KEY, [texts[i] for i in sparse])
    whole = [5, 71, 200]  # the damaged chunk's other rows are whole, and a sparse read of them is right
    np.testing.assert_array_equal(Store.open(st.path).get(KEY, [texts[i] for i in whole]), vecs[whole])


@pytest.mark.fault('store: deleted, truncated and flipped chunks, damaged digests and attributes')
def test_a_row_whose_digest_disagrees_is_an_error_naming_the_row(tmp_path):
    """Chunks that pass their own checksums but a row that does not match its digest (a writer's bug, not a disk
    fault): a one-line StoreError naming the key and the row, never the row's bytes."""
    vecs = np.random.default_rng(2).standard_normal((256, 3)).astype(np.float32)
    texts = [f"t{i}" for i in range(len(vecs))]
    st = fill(tmp_path / "s.zarr", texts, vecs, chunk_rows=64)
    digests = zarr.open_array(str(st.path / KEY.group_name / "row_digests"), mode="r+")
    digests[70] = digests[70] ^ 1
    with pytest.raises(StoreError, match=r"ids\+vectors rows 70\.\.71: ids and vectors do not match their row digests"):
        Store.open(st.path).get(KEY, [texts[i] for i in (5, 70, 200)])


@pytest.mark.fault('store: deleted, truncated and flipped chunks, damaged digests and attributes')
def test_a_damaged_digest_chunk_is_named_when_a_sparse_read_meets_it(tmp_path):
    """Sparse reads do not check the digests' chunks whole (each digest is compared with its row instead), so a
    flipped digest byte shows as a row that disagrees; the error then names the damaged digests chunk."""
    vecs = np.random.default_rng(4).standard_normal((256, 3)).astype(np.float32)
    texts = [f"t{i}" for i in range(len(vecs))]
    st = fill(tmp_path / "s.zarr", texts, vecs, chunk_rows=64)
    flip_shard_chunk_byte(st, "row_digests", 0)  # chunk 0 (rows 0..64), a byte of row 0's digest
    with pytest.raises(StoreError, match="row_digests rows 0..64"):
        Store.open(st.path).get(KEY, [texts[i] for i in (0, 70, 200)])
    np.testing.assert_array_equal(Store.open(st.path).get(KEY, [texts[i] for i in (70, 200)]), vecs[[70, 200]])
