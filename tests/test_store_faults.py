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

pytestmark = pytest.mark.fault('store: stale shards, half-made keys, damaged metadata, kills during key creation')

KEY = StoreKey(model="m", fingerprint="f" * 16, pooling="mean", layer=2, max_length=128, prefix="")


def vectors_of(texts, dim=3) -> np.ndarray:
    """Vectors derived from each text alone (never zero), so any row's expected vector is known."""
    seeds = text_ids(texts)[:, :8].copy().view("<u8").ravel()
    rows = [np.random.default_rng(int(s)).standard_normal(dim) for s in seeds]
    return np.array(rows, np.float32).reshape(len(rows), dim) + np.float32(0.01)


def append(path, texts, chunk_rows=8) -> Store:
    st = Store.open(path)
    with st.writer() as w:
        kw = w.key(KEY, 3, {}, chunk_rows=chunk_rows)
        have = kw.committed
        new = texts[have:]
        if new:
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


class Killed(BaseException):
    """Stands for kill -9: nothing the writer does after the step runs (it catches no BaseException)."""


def kill_at_step(monkeypatch, step: int) -> list[str]:
    """Make the `step`-th file write or rename of the store raise Killed; returns the steps seen."""
    import os as os_module
    from zarr.storage import LocalStore
    seen: list[str] = []
    set_file, rename = LocalStore.set, os_module.rename

    def count(what: str) -> None:
        seen.append(what)
        if len(seen) == step:
            raise Killed(what)

    async def set_counted(self, key, value):
        count(f"write {key}")
        return await set_file(self, key, value)

    def rename_counted(a, b, *args, **kwargs):
        count(f"rename {a} -> {b}")
        return rename(a, b, *args, **kwargs)

    monkeypatch.setattr(LocalStore, "set", set_counted)
    monkeypatch.setattr(os_module, "rename", rename_counted)
    return seen


def test_a_key_appears_whole_or_not_at_all_whatever_step_of_its_creation_is_killed(tmp_path, monkeypatch):
    """Issue 28 item 2: a writer killed as it created a key's group, then its arrays one by one, left a group
    without `ids` or `vectors`, and encode, verify, repair and merge all ended in KeyError from then on."""
    with monkeypatch.context() as m:
        steps = kill_at_step(m, 0)
        append(tmp_path / "count.zarr", TEXTS[:0])  # no rows: only the key's creation writes
    assert len(steps) >= 5, steps  # the store, the key's group, its three arrays (and a rename, since issue 28)
    for step in range(1, len(steps) + 1):
        path = tmp_path / f"s{step}.zarr"
        with monkeypatch.context() as m:
            kill_at_step(m, step)
            with pytest.raises(Killed):
                append(path, TEXTS[:0])
        st = Store.open(path)
        if st.exists():  # readers see no key, or a whole empty one
            assert st.keys() in ([], [KEY]) and st.verify() == [] and st.rows(KEY) == 0
            assert merge_stores([path], tmp_path / f"m{step}.zarr").keys[0].rows == 0 if st.keys() else True
        append(path, TEXTS)  # the next writer completes the store
        st = Store.open(path)
        assert st.keys() == [KEY] and st.verify() == []
        np.testing.assert_array_equal(st.get(KEY, TEXTS), vectors_of(TEXTS))


@pytest.mark.parametrize("arrays", [(), ("vectors",), ("vectors", "row_digests")])
def test_a_half_made_group_left_by_an_earlier_version_is_completed_by_the_next_writer(tmp_path, arrays):
    """A group written by the code before issue 28 (group first, then arrays) and killed between: readers take it
    as an empty key, the next writer rebuilds it whole."""
    path = tmp_path / "s.zarr"
    append(path, TEXTS[:0])
    group = path / KEY.group_name
    for which in ("ids", "vectors", "row_digests"):
        if which not in arrays:
            shutil.rmtree(group / which)
    st = Store.open(path)
    assert st.keys() == [] and st.verify() == [] and st.rows(KEY) == 0
    assert merge_stores([path], tmp_path / "m.zarr").keys == []
    result = CliRunner().invoke(app, ["store", "verify", str(path), "--repair"])
    assert result.exit_code == 0, result.output
    append(path, TEXTS)
    st = Store.open(path)
    assert st.keys() == [KEY] and st.verify() == []
    np.testing.assert_array_equal(st.get(KEY, TEXTS), vectors_of(TEXTS))


def test_a_group_with_committed_rows_but_a_missing_array_is_damage_not_a_key_error(tmp_path):
    path = tmp_path / "s.zarr"
    append(path, TEXTS)
    shutil.rmtree(path / KEY.group_name / "ids")
    st = Store.open(path)
    damage = st.verify()
    assert [(d.array, d.start, d.stop) for d in damage] == [("ids", 0, 30)], damage
    assert "missing" in damage[0].reason and "ids/zarr.json" in damage[0].reason
    with pytest.raises(StoreError, match="ids"):
        st.get(KEY, TEXTS)
    st.repair()
    append(path, TEXTS)
    np.testing.assert_array_equal(Store.open(path).get(KEY, TEXTS), vectors_of(TEXTS))


def test_a_half_made_hdf5_key_is_never_published(tmp_path, monkeypatch):
    """The HDF5 writer publishes its copy at exit once it wrote rows: a second key whose creation fails half-way
    must not appear without its arrays."""
    import h5py
    path = tmp_path / "s.h5"
    other = StoreKey(model="m", fingerprint="f" * 16, pooling="cls", layer=2, max_length=128, prefix="")
    create = h5py.Group.create_dataset
    calls = []

    def failing(self, name, *args, **kwargs):
        calls.append(name)
        if len(calls) == 4:  # the second key's second array
            raise OSError("disk full (simulated)")
        return create(self, name, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", failing)
    st = Store.open(path)
    with pytest.raises(StoreError):
        with st.writer() as w:
            w.key(KEY, 3, {}).append(text_ids(TEXTS), vectors_of(TEXTS))
            w.key(other, 3, {})
    monkeypatch.undo()
    st = Store.open(path)
    assert st.keys() == [KEY] and st.verify() == []
    with st.writer() as w:
        w.key(other, 3, {}).append(text_ids(TEXTS), vectors_of(TEXTS))
    assert Store.open(path).verify() == []


@pytest.mark.heavy
def test_kill_9_during_key_creation_leaves_a_store_the_next_run_completes(tmp_path):
    """A real kill -9 of a process creating key after key, at moments spread over its run."""
    import os
    import signal
    import subprocess
    import sys
    import time
    script = tmp_path / "keys.py"
    script.write_text(
        "import sys, numpy as np\n"
        "from embedstore.store import Store, StoreKey\n"
        "from embedstore.data.hashing import text_ids\n"
        "st = Store.open(sys.argv[1])\n"
        "print('ready', flush=True)\n"
        "for layer in range(10_000):\n"
        "    key = StoreKey(model='m', fingerprint='f' * 16, pooling='mean', layer=layer, max_length=128, prefix='')\n"
        "    with st.writer() as w:\n"
        "        w.key(key, 3, {}).append(text_ids(['a', 'b']), np.ones((2, 3), np.float32))\n")
    for attempt in range(5):
        path = tmp_path / f"s{attempt}.zarr"
        proc = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE,
                                env={**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")})
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(0.5 + 0.37 * attempt)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        st = Store.open(path)
        keys = st.keys()
        assert keys and st.verify() == []
        for key in keys:
            assert st.rows(key) in (0, 2)
            if st.rows(key):
                np.testing.assert_array_equal(st.get(key, ["a", "b"]), np.ones((2, 3), np.float32))
        with st.writer() as w:  # the next writer completes whatever was half-made
            w.key(keys[-1], 3, {})
            nxt = StoreKey(model="m", fingerprint="f" * 16, pooling="mean", layer=len(keys), max_length=128,
                           prefix="")
            w.key(nxt, 3, {}).append(text_ids(["a"]), np.ones((1, 3), np.float32))
        assert Store.open(path).verify() == []


@pytest.mark.parametrize("metadata", [b"not json", b'{"zarr_format": 3, "node_type": "array"}'])
def test_damaged_array_metadata_names_the_file_and_verify_lists_it_and_goes_on(tmp_path, metadata):
    other = StoreKey(model="m", fingerprint="f" * 16, pooling="cls", layer=2, max_length=128, prefix="")
    path = tmp_path / "s.zarr"
    append(path, TEXTS)
    with Store.open(path).writer() as w:
        w.key(other, 3, {}, chunk_rows=8).append(text_ids(TEXTS), vectors_of(TEXTS))
    meta = path / KEY.group_name / "vectors" / "zarr.json"
    meta.write_bytes(metadata)
    st = Store.open(path)
    damage = st.verify()
    assert [(d.group, d.array, d.start, d.stop) for d in damage] == [(KEY.group_name, "vectors", 0, 30)]
    assert str(meta) in damage[0].reason
    with pytest.raises(StoreError, match=str(meta)):
        st.get(KEY, TEXTS)
    np.testing.assert_array_equal(st.get(other, TEXTS), vectors_of(TEXTS))  # the other key reads on
