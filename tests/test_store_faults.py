"""Issue 28, second pass on the store: files from an earlier state of a key (a stale or short shard) are damage,
never zeros; a key's group and arrays appear together or not at all whatever step a kill interrupts; a damaged
`row_digests` chunk is rebuilt from the rows that pass their own checksums rather than dropping them."""
import shutil

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from embedstore.base.errors import StoreError
from embedstore.cli.app import app
from embedstore.data.hashing import text_ids
from embedstore.encoding.encode import encode
from embedstore.encoding.options import ComputeOptions, EncodeOptions
from embedstore.store import Store, StoreKey, merge_stores

KEY = StoreKey(model="m", fingerprint="f" * 16, pooling="mean", layer=2, max_length=128, prefix="")


def vectors_of(texts, dim=3) -> np.ndarray:
    """Vectors derived from each text alone (never zero), so any row's expected vector is known."""
    seeds = text_ids(texts)[:, :8].copy().view("<u8").ravel()
    return np.stack([np.random.default_rng(int(s)).standard_normal(dim) for s in seeds]).astype(np.float32) + 0.01


def append(path, texts, chunk_rows=8) -> Store:
    st = Store.open(path)
    with st.writer() as w:
        kw = w.key(KEY, 3, {}, chunk_rows=chunk_rows)
        have = kw.committed
        new = texts[have:]
        kw.append(text_ids(new), vectors_of(new))
    return st


def shard(st: Store, which: str, n: int = 0):
    return st.path / KEY.group_name / which / "c" / str(n) / "0"


TEXTS = [f"text {i}" for i in range(30)]


@pytest.mark.parametrize("rows_before", [4, 10], ids=["chunk-padded-with-zeros", "chunk-never-written"])
def test_a_stale_vectors_shard_is_damage_listed_row_by_row_never_zeros(tmp_path, rows_before):
    """The vectors shard copied back from when the key held fewer rows: the rows written since read as zeros
    with valid chunk checksums. 4 rows before: chunk 0 is there, padded with zeros; 10 rows: chunks 2, 3 are
    absent from the shard's index."""
    st = append(tmp_path / "s.zarr", TEXTS[:rows_before])
    old = shard(st, "vectors").read_bytes()
    append(st.path, TEXTS)
    shard(st, "vectors").write_bytes(old)
    st = Store.open(st.path)
    damage = st.verify()
    bad = np.zeros(30, bool)
    for d in damage:
        bad[d.start:d.stop] = True
    assert np.flatnonzero(bad).tolist() == list(range(rows_before, 30)), damage
    # every read that would hand out one of those rows refuses, naming the first of them
    for read in (lambda: st.get(KEY, TEXTS), lambda: st.get(KEY, [TEXTS[20]]), lambda: st.read_block(KEY, 0, 30),
                 lambda: st.get(KEY, TEXTS[rows_before:]), lambda: st.get(KEY, TEXTS[::7])):
        with pytest.raises(StoreError, match=KEY.group_name + r".* rows \d+\.\.\d+"):
            read()
    with pytest.raises(StoreError, match=KEY.group_name):
        merge_stores([st.path], tmp_path / "merged.zarr")
    assert not (tmp_path / "merged.zarr").exists()
    result = CliRunner().invoke(app, ["store", "verify", str(st.path)])
    assert result.exit_code == 1 and "intact" not in result.output
    assert f"{30 - rows_before} committed rows damaged" in result.output, result.output
    # repair drops exactly those rows; writing them again restores every vector
    st.repair()
    assert Store.open(st.path).rows(KEY) == rows_before and Store.open(st.path).verify() == []
    append(st.path, TEXTS)
    np.testing.assert_array_equal(Store.open(st.path).get(KEY, TEXTS), vectors_of(TEXTS))


def test_a_stale_shard_restored_as_the_issue_did_through_encode_and_the_cli(tiny_model_dir, tmp_path):
    """The issue's reproduction: encode 100 rows, copy the vectors shard, encode 300 into the same store, copy the
    old shard back. verify lists the 200 rows, training reads refuse them, repair + encode restores the vectors."""
    opts, compute = EncodeOptions(model=str(tiny_model_dir)), ComputeOptions(batch_size=64)
    texts = [f"sentence {i}" for i in range(300)]
    path = tmp_path / "s.zarr"
    encode(texts[:100], store=path, options=opts, compute=compute)
    key = Store.open(path).keys()[0]
    vectors_shard = path / key.group_name / "vectors" / "c" / "0" / "0"
    old = vectors_shard.read_bytes()
    encode(texts, store=path, options=opts, compute=compute)
    intact = Store.open(path).get(key, texts)
    shutil.copyfile(vectors_shard, tmp_path / "new-shard")
    vectors_shard.write_bytes(old)
    result = CliRunner().invoke(app, ["store", "verify", str(path)])
    assert result.exit_code == 1, result.output
    assert "200 committed rows damaged" in result.output and "rows 100..300" in result.output
    with pytest.raises(StoreError, match="rows 100..300"):
        Store.open(path).get(key, texts)
    result = CliRunner().invoke(app, ["store", "verify", str(path), "--repair"])
    assert result.exit_code == 0 and "dropped 200 rows" in result.output, result.output
    report = encode(texts, store=path, options=opts, compute=compute)
    assert (report.present, report.encoded) == (100, 200)
    np.testing.assert_array_equal(Store.open(path).get(key, texts), intact)
    assert (path / key.group_name / "vectors" / "c" / "0" / "0").read_bytes() == (tmp_path / "new-shard").read_bytes()


def test_a_stale_ids_shard_is_damage_too(tmp_path):
    st = append(tmp_path / "s.zarr", TEXTS[:4])
    old = shard(st, "ids").read_bytes()
    append(st.path, TEXTS)
    shard(st, "ids").write_bytes(old)
    st = Store.open(st.path)
    bad = sorted({r for d in st.verify() for r in range(d.start, d.stop)})
    assert bad == list(range(4, 30))
    with pytest.raises(StoreError):
        st.read_block(KEY, 0, 30)


def flip_digest_chunk(st: Store, chunk: int) -> None:
    """Flip a byte of one chunk of `row_digests` inside its shard (its crc32c then fails)."""
    arr = zarr.open_array(str(st.path / KEY.group_name / "row_digests"), mode="r")
    per_shard = arr.shards[0] // arr.chunks[0]
    path = shard(st, "row_digests", chunk // per_shard)
    data = bytearray(path.read_bytes())
    index = np.frombuffer(bytes(data[-(16 * per_shard + 4):-4]), "<u8").reshape(per_shard, 2)
    data[int(index[chunk % per_shard, 0]) + 1] ^= 0xFF
    path.write_bytes(bytes(data))


def test_repair_rebuilds_a_damaged_digests_chunk_and_keeps_its_rows(tmp_path):
    """Issue 28 item 9: the rows of a damaged `row_digests` chunk pass their own (ids and vectors) checksums, so
    their digests are recomputed rather than the rows dropped."""
    st = append(tmp_path / "s.zarr", TEXTS)
    flip_digest_chunk(st, 1)
    assert [(d.array, d.start, d.stop) for d in st.verify()] == [("row_digests", 8, 16)]
    result = CliRunner().invoke(app, ["store", "verify", str(st.path), "--repair"])
    assert result.exit_code == 0, result.output
    assert "rebuilt the row digests of 8 rows" in result.output and "dropped" not in result.output
    st = Store.open(st.path)
    assert st.rows(KEY) == 30 and st.verify() == []
    np.testing.assert_array_equal(st.get(KEY, TEXTS), vectors_of(TEXTS))


def test_repair_drops_rows_of_a_damaged_digests_chunk_whose_vectors_are_zeros(tmp_path):
    """A damaged digests chunk over rows that read as zeros (a stale vectors shard): nothing vouches for them,
    so they are dropped, not blessed with new digests."""
    st = append(tmp_path / "s.zarr", TEXTS[:4])
    old = shard(st, "vectors").read_bytes()
    append(st.path, TEXTS)
    shard(st, "vectors").write_bytes(old)
    flip_digest_chunk(st, 1)
    done = Store.open(st.path).repair()
    assert done.rebuilt == [] and done.dropped_rows == 26
    st = Store.open(st.path)
    assert st.rows(KEY) == 4 and st.verify() == []
    append(st.path, TEXTS)
    np.testing.assert_array_equal(Store.open(st.path).get(KEY, TEXTS), vectors_of(TEXTS))


def test_a_long_repair_says_first_that_a_kill_would_lose_the_rows_it_moves(tmp_path, monkeypatch):
    from embedstore.store import zarr_backend
    st = append(tmp_path / "s.zarr", TEXTS)
    flip_digest_chunk(st, 0)
    vectors = zarr.open_array(str(st.path / KEY.group_name / "vectors"), mode="r+")
    vectors[0] = 0  # rows 0..8 cannot have their digests rebuilt: they are dropped, and 22 rows move
    monkeypatch.setattr(zarr_backend, "REPAIR_BLOCK_ROWS", 16)
    with pytest.warns(UserWarning, match="moving 22 kept rows .* if this repair is killed before it ends"):
        st.repair()
    monkeypatch.setattr(zarr_backend, "REPAIR_BLOCK_ROWS", 64)
    st = append(tmp_path / "t.zarr", TEXTS)
    flip_digest_chunk(st, 3)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        st.repair()
