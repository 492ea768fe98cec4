"""`embedstore store merge`: combine stores encoded on different machines into one.

Machines without a shared filesystem each encode into a store of their own; a merge turns them into the one
store trainers read. The rules, and why:

- Only identical keys are merged (model fingerprint, pooling, layer, max length, prefix and dtype all equal,
  which is exactly when the group names match): vectors under different keys are not comparable, so a key
  found in some inputs only is copied as its own key, never folded into another.
- Rows are deduplicated by text id; the first input (in the order given) that holds an id supplies its row.
- The same id under the same key must carry the same vector. Two encodes of one text differ only by float
  noise (batch composition, hardware: about 1e-6), so a larger difference means the stores were not made the
  same way (different tokenizer files or library versions under one model fingerprint). That is an error,
  not a warning: a merged store is read as one computation, and silently keeping either vector would hide
  the mismatch. `tolerance` widens the check for a user who has looked and accepts the first input's vectors.
  float16 keys also allow one float16 step (relative 1e-3), since fp32 noise can flip the rounding.
- The output is built at a temporary sibling path and renamed into place at the end, under the output's
  writer lock, so a half-merged store never sits at the output path and no encode writes it meanwhile.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from embedstore.base.atomic import publish, remove_dead_temps
from embedstore.base.errors import ConfigError, StoreError
from embedstore.data.hashing import ID_BYTES
from .key import StoreKey
from .lock import release_store_lock, store_lock
from .object_backend import is_url
from .store import Store, StoreWriter

BLOCK_ROWS = 65536  # rows copied per read: bounds memory whatever the store size
FLOAT16_RTOL = 1e-3  # about one float16 step: fp32 noise may round to neighbouring float16 values


@dataclass
class KeyMerge:
    """What happened to one key: rows in the output, rows taken from each input, duplicates dropped."""

    key: dict
    group: str
    rows: int
    rows_from: dict[str, int]
    duplicates: int
    max_difference: float


@dataclass
class MergeReport:
    out: str
    inputs: list[str]
    keys: list[KeyMerge]
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def merge_stores(inputs: Sequence[str | Path], out: str | Path, *, force: bool = False,
                 tolerance: float = 1e-5) -> MergeReport:
    """Write the union of `inputs` to `out` (a new .zarr or .h5 path; `force` replaces an existing one)."""
    t0 = time.perf_counter()
    if not inputs:
        raise ConfigError("merge: no input stores given; expected at least one .zarr or .h5 store")
    if tolerance < 0:
        raise ConfigError(f"tolerance: {tolerance}; expected a non-negative number")
    stores = [Store.open(p) for p in inputs]
    out_store = Store.open(out)  # validates the suffix before any work
    out_path = out_store.path
    resolved = [_identity(st.path) for st in stores]
    for st, path in zip(stores, resolved):
        if resolved.count(path) > 1:
            raise ConfigError(f"{st.path}: given twice; expected distinct input stores")
        if not st.exists():
            raise StoreError(f"{st.path}: no store here; expected an existing .zarr directory or .h5 file")
        if path == _identity(out_path):
            raise StoreError(f"{out_path}: is also an input; write the merge to a new path")
    if is_url(out_path):
        return _merge_to_objects(out_store, stores, tolerance, t0)
    if out_path.exists() and not force:
        raise StoreError(f"{out_path}: already exists; choose a new out path or pass force=True to replace it")

    out_path.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_temps(out_path.parent)  # what killed writers of any store or artifact here left
    lock = store_lock(out_path)
    created_lock = not lock.lock_path.exists()
    with contextlib.ExitStack() as held:
        lock.acquire()
        held.callback(release_store_lock, lock, out_path, created_lock)  # a failed merge leaves no lock file
        for stale in out_path.parent.glob(f"{out_path.stem}.merging-*{out_path.suffix}*"):
            _remove(stale)  # left by a killed merge; we hold the output's lock, so nobody else is using it
        tmp = out_path.with_name(f"{out_path.stem}.merging-{os.getpid()}{out_path.suffix}")
        try:
            with Store.open(tmp).writer() as writer:
                merged = [_merge_key(writer, stores, key, tolerance) for key in _keys_in_order(stores)]
            publish(tmp, out_path)
        finally:
            _remove(tmp)
            tmp.with_name(tmp.name + ".lock").unlink(missing_ok=True)
    return MergeReport(out=str(out_path), inputs=[str(st.path) for st in stores], keys=merged,
                       seconds=time.perf_counter() - t0)


def _identity(path: Path | str) -> Path | str:
    return path if is_url(path) else Path(path).resolve()


def _merge_to_objects(out: Store, stores: list[Store], tolerance: float, t0: float) -> MergeReport:
    """A merge into object storage writes the new store in place, under its writer's lease: there is no rename
    to publish it with, but readers trust only committed rows (manifests), so an interrupted merge leaves a
    store with fewer rows, never wrong ones. A store already at that URL is refused (no `force`: deleting a
    prefix of a bucket is left to the user)."""
    if out.exists():
        raise StoreError(f"{out.path}: a store already exists at this URL; choose a new one (or delete it first)")
    with out.writer() as writer:
        merged = [_merge_key(writer, stores, key, tolerance) for key in _keys_in_order(stores)]
    return MergeReport(out=str(out.path), inputs=[str(st.path) for st in stores], keys=merged,
                       seconds=time.perf_counter() - t0)


def _keys_in_order(stores: list[Store]) -> list[StoreKey]:
    """Every key of every input, once, in order of first appearance (so the output lists keys predictably)."""
    seen: dict[str, StoreKey] = {}
    for st in stores:
        for key in st.keys():
            seen.setdefault(key.group_name, key)
    return list(seen.values())


def _merge_key(writer: StoreWriter, stores: list[Store], key: StoreKey, tolerance: float) -> KeyMerge:
    holding = [(st, attrs) for st in stores if (attrs := st.attrs(key))]
    dims = {int(attrs["dim"]) for _, attrs in holding}
    if len(dims) > 1:
        raise StoreError(f"key {key.describe()}: inputs hold vectors of different sizes {sorted(dims)}; "
                         "expected one dimension per key")
    name = key.group_name
    counts = [int(attrs.get("committed_rows", 0)) for _, attrs in holding]
    provenance = {"merged_from": [{"store": str(st.path), "rows": n, "provenance": attrs.get("provenance", {})}
                                  for (st, attrs), n in zip(holding, counts)]}
    kw = writer.key(key, dims.pop(), provenance, chunk_rows=holding[0][0].chunk_rows(key))

    # dedupe over all inputs at once: ID_BYTES per row, sorted in numpy rather than a Python dict per id
    all_ids = np.concatenate([st.read_ids(key, n) for (st, _), n in zip(holding, counts)])
    as_void = np.ascontiguousarray(all_ids).view(np.dtype((np.void, ID_BYTES))).ravel()
    _, first, inverse = np.unique(as_void, return_index=True, return_inverse=True)
    source = first[inverse.ravel()]  # global row of each row's first occurrence
    offsets = np.concatenate([[0], np.cumsum(counts)])
    rtol = FLOAT16_RTOL if key.dtype == "float16" else 0.0

    rows_from: dict[str, int] = {}
    max_diff = 0.0
    for i, ((st, _), n) in enumerate(zip(holding, counts)):
        taken = 0
        for start in range(0, n, BLOCK_ROWS):
            stop = min(start + BLOCK_ROWS, n)
            ids, vectors = st.read_block(key, start, stop)
            src = source[offsets[i] + start: offsets[i] + stop]
            new = src == np.arange(offsets[i] + start, offsets[i] + stop)
            if new.any():
                kw.append(ids[new], vectors[new])
                taken += int(new.sum())
            if not new.all():
                max_diff = max(max_diff, _check_duplicates(holding, counts, offsets, key, src[~new],
                                                           vectors[~new], ids[~new], st.path, tolerance, rtol))
        rows_from[str(st.path)] = taken
    return KeyMerge(key=key.to_dict(), group=name, rows=kw.committed, rows_from=rows_from,
                    duplicates=int(sum(counts) - kw.committed), max_difference=max_diff)


def _check_duplicates(holding: list[tuple[Store, dict]], counts: list[int], offsets: np.ndarray, key: StoreKey,
                      first_rows: np.ndarray, vectors: np.ndarray, ids: np.ndarray, where: Path,
                      tolerance: float, rtol: float) -> float:
    """Compare duplicates with the vectors already taken (read back from their input); returns the max diff."""
    max_diff = 0.0
    owner = np.searchsorted(offsets, first_rows, side="right") - 1
    for j in np.unique(owner):
        st, _ = holding[j]
        mine = owner == j
        local = first_rows[mine] - offsets[j]
        rows, back = np.unique(local, return_inverse=True)  # h5py reads sorted, distinct rows only
        kept = np.asarray(st.read_rows(key, counts[j], rows), np.float32)[back.ravel()]
        dup = np.asarray(vectors[mine], np.float32)
        diff = np.abs(dup - kept)
        bad = diff > tolerance + rtol * np.abs(kept)
        if bad.any():
            row = int(np.flatnonzero(bad.any(axis=1))[0])
            raise StoreError(
                f"key {key.describe()}: text id {ids[mine][row].tobytes().hex()} has vectors differing by "
                f"{float(diff[row].max()):.2e} in {st.path} and {where} (tolerance {tolerance:g}); the stores were "
                "not encoded the same way (tokenizer files, library versions?); raise tolerance to keep the "
                "first input's vectors")
        max_diff = max(max_diff, float(diff.max()))
    return max_diff


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
