"""Issue 28 item 11: the store as a state machine (hypothesis). Random sequences of writes, writes killed at a
random file operation, shard files copied aside and restored later (a stale or short shard), verify, repair,
merge and reads, on tiny synthetic vectors derived from each text's id, so the right vector of every row is
known. Invariants after every step:

- no read returns a vector that differs from the one of its text (a read may refuse, and only if a row is
  really damaged);
- `verify` reports exactly the damaged rows: those whose id, vector and row digest are not a text of the run,
  its vector and their crc32c (judged from the raw arrays, outside the store's code);
- a merge never copies a damaged row (it refuses), and a repair followed by a write of every text restores
  every vector bit for bit.

The fast tier runs a few examples; the heavy-marked variant many more. Each kill that fired and each restore that
changed a shard is a fault case of `fault_tally` (issue 28's count), with the outcome its reads had right after it:
refused, right, or silent wrong (recorded, then failed)."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from zarr.storage import LocalStore

import fault_tally
from embedstore.base.errors import StoreError
from embedstore.data.hashing import text_ids
from embedstore.store import Store, StoreKey, chunk_files, merge_stores, zarr_backend

KEY = StoreKey(model="m", fingerprint="f" * 16, pooling="mean", layer=2, max_length=128, prefix="")
TEXTS = [f"text {i}" for i in range(40)]
IDS = text_ids(TEXTS)
CHUNK_ROWS, SHARD_CHUNKS = 4, 2  # 8-row shard files: a few per key
ARRAYS = ("ids", "vectors", "row_digests")


def vectors_of(ids: np.ndarray) -> np.ndarray:
    """The "model": a vector derived from the id alone (never zero)."""
    seeds = np.ascontiguousarray(ids[:, :8]).view("<u8").ravel()
    return np.array([np.random.default_rng(int(s)).standard_normal(3) for s in seeds], np.float32).reshape(-1, 3) + 1


EXPECTED = {bytes(i): v for i, v in zip(IDS, vectors_of(IDS))}


class Killed(BaseException):
    pass


class KillAt:
    """Raise Killed at the `step`-th file write or rename (zarr's, and the direct whole-file writer's)."""

    def __init__(self, step: int) -> None:
        self.step, self.seen = step, 0

    def __enter__(self):
        self.saved = (LocalStore.set, os.rename, os.replace)
        set_file, rename, replace = self.saved
        killer = self

        async def set_counted(store, key, value):
            killer.count()
            return await set_file(store, key, value)

        def counted(real):
            return lambda *a, **k: killer.count() or real(*a, **k)

        LocalStore.set, os.rename, os.replace = set_counted, counted(rename), counted(replace)
        return self

    def count(self) -> None:
        self.seen += 1
        if self.seen == self.step:
            raise Killed

    def __exit__(self, *exc):
        LocalStore.set, os.rename, os.replace = self.saved
        return exc[0] is Killed


class StoreMachine(RuleBasedStateMachine):
    @initialize()
    def setup(self):
        self.saved_layout = zarr_backend.SHARD_CHUNKS
        zarr_backend.SHARD_CHUNKS = SHARD_CHUNKS
        self.dir = Path(tempfile.mkdtemp(prefix="store-states-"))
        self.path = self.dir / "s.zarr"
        self.backups: list[tuple[Path, bytes]] = []
        self.merges = 0

    def teardown(self):
        zarr_backend.SHARD_CHUNKS = getattr(self, "saved_layout", zarr_backend.SHARD_CHUNKS)
        if hasattr(self, "dir"):
            shutil.rmtree(self.dir, ignore_errors=True)

    # what is on disk, judged without the store's code ------------------------------------------------------
    def committed(self) -> int:
        st = Store.open(self.path)
        return st.rows(KEY) if st.exists() and KEY in st.keys() else 0

    def truly_damaged(self) -> set[int]:
        n = self.committed()
        if not n:
            return set()
        raw = {w: zarr.open_array(str(self.path / KEY.group_name / w), mode="r")[:n] for w in ARRAYS}
        digests = chunk_files.row_digests(raw["ids"], raw["vectors"]).ravel()
        bad = set()
        for row in range(n):
            expected = EXPECTED.get(bytes(raw["ids"][row]))
            if expected is None or not np.array_equal(raw["vectors"][row], expected) or \
                    digests[row] != raw["row_digests"][row, 0]:
                bad.add(row)
        return bad

    # steps --------------------------------------------------------------------------------------------------
    def _write(self, count: int) -> None:
        st = Store.open(self.path)
        with st.writer() as w:
            kw = w.key(KEY, 3, {}, chunk_rows=CHUNK_ROWS)
            have = Store.open(self.path).contains_ids(KEY, IDS) if kw.committed else np.zeros(len(IDS), bool)
            new = IDS[~have][:count]
            if len(new):
                kw.append(new, vectors_of(new))

    @rule(count=st.integers(1, 12))
    def write(self, count):
        try:
            self._write(count)
        except StoreError:
            assert self.truly_damaged(), "a write refused an undamaged store"

    @rule(count=st.integers(1, 12), step=st.integers(1, 30))
    def write_killed(self, count, step):
        with KillAt(step) as kill:
            try:
                self._write(count)
            except StoreError:
                assert self.truly_damaged(), "a write refused an undamaged store"
        if kill.seen >= step:  # the kill fired
            fault_tally.record("kill at a file operation of a write", self.read_outcome())

    @precondition(lambda self: self.committed())
    @rule(which=st.sampled_from(ARRAYS), shard=st.integers(0, 4))
    def copy_shard_aside(self, which, shard):
        path = self.path / KEY.group_name / which / "c" / str(shard) / "0"
        if path.is_file():
            self.backups.append((path, path.read_bytes()))

    @precondition(lambda self: self.backups)
    @rule(index=st.integers(0, 100))
    def restore_shard(self, index):
        path, data = self.backups[index % len(self.backups)]
        if path.parent.is_dir():
            changed = not path.is_file() or path.read_bytes() != data
            path.write_bytes(data)
            if changed:
                fault_tally.record(f"stale {path.parent.parent.parent.name} shard restored", self.read_outcome())

    @rule()
    def verify(self):
        st = Store.open(self.path)
        if not st.exists():
            return
        found = {r for d in st.verify() for r in range(d.start, d.stop)}
        assert found == self.truly_damaged()

    @rule()
    def repair_and_rewrite(self):
        st = Store.open(self.path)
        if not st.exists():
            return
        st.repair()
        assert self.truly_damaged() == set() and Store.open(self.path).verify() == []
        self._write(len(TEXTS))
        got = Store.open(self.path).get(KEY, TEXTS)
        np.testing.assert_array_equal(got, vectors_of(IDS))

    @precondition(lambda self: self.committed())
    @rule()
    def merge(self):
        self.merges += 1
        out = self.dir / f"m{self.merges}.zarr"
        damaged = self.truly_damaged()
        try:
            merge_stores([self.path], out)
        except StoreError:
            assert damaged, "a merge refused an undamaged store"
            assert not out.exists()
            return
        assert not damaged, "a merge copied a damaged store"
        merged = Store.open(out)
        assert merged.verify() == [] and merged.rows(KEY) == self.committed()

    # invariants ---------------------------------------------------------------------------------------------
    @invariant()
    def reads_are_right_or_refused(self):
        if hasattr(self, "path"):
            self.read_outcome()

    def read_outcome(self) -> str:
        """"refused" or "right": what reading every stored text gives now (fails on anything else)."""
        if not self.committed():
            return "right"
        st = Store.open(self.path)
        damaged = self.truly_damaged()
        try:
            present = st.contains_ids(KEY, IDS)
            got = st.get_ids(KEY, IDS[present])
        except StoreError:
            assert damaged, "a read refused an undamaged store"
            return "refused"
        if not np.array_equal(got, vectors_of(IDS[present])):
            fault_tally.record("a read after a fault", "silent wrong")
        np.testing.assert_array_equal(got, vectors_of(IDS[present]))
        for row in sorted(damaged)[:3]:  # each damaged row, read alone, is refused or right
            ids = zarr.open_array(str(self.path / KEY.group_name / "ids"), mode="r")[row:row + 1]
            if bytes(ids[0]) in EXPECTED:
                try:
                    alone = st.get_ids(KEY, ids)
                except StoreError:
                    continue
                if not np.array_equal(alone, vectors_of(ids)):
                    fault_tally.record("a damaged row read alone", "silent wrong")
                np.testing.assert_array_equal(alone, vectors_of(ids))
        return "right"


SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def test_the_store_state_machine():
    run = StoreMachine.TestCase
    run.settings = settings(max_examples=10, stateful_step_count=20, **SETTINGS)
    run().runTest()


@pytest.mark.heavy
@pytest.mark.parallel
def test_the_store_state_machine_at_length():
    run = StoreMachine.TestCase
    run.settings = settings(max_examples=30, stateful_step_count=30, **SETTINGS)
    run().runTest()
