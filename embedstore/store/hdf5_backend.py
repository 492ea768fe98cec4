"""HDF5 single-file backend: the portable one.

HDF5 cannot survive a killed writer by itself (a crash can leave the file unopenable until `h5clear`, and
h5py has no atomic chunk writes), so a writer works on a temporary copy that replaces the file only when the
encode finishes. New arrays carry a Fletcher-32 checksum per chunk, verified by HDF5 on every read.
The file on disk is therefore always a complete earlier state; an interrupted HDF5 encode
loses that run's new rows (a Python-level interruption such as Ctrl-C still closes the file cleanly and keeps
them). Use a `.zarr` store when surviving `kill -9` mid-run matters.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np

from embedstore.base.atomic import publish, remove_dead_temps
from embedstore.base.errors import StoreError
from embedstore.data.hashing import ID_BYTES
from .backend import ARRAYS, REPAIR_BLOCK_ROWS, Damage, RowReads, chunk_ranges
from .lock import release_store_lock, store_lock

STAGING = ".creating"  # suffix of a key's group being built, moved to the key's name once whole
HDF5_SPACE_MARGIN = 1 << 16  # room kept for what HDF5 writes besides the chunks (chunk index, attributes)


def _attrs(obj: h5py.Group) -> dict:
    """Attributes are stored as JSON strings so nested provenance round-trips like zarr's JSON attributes."""
    return {k: json.loads(v) for k, v in obj.attrs.items()}


def _damaged_array(ds: h5py.Dataset, name: str, which: str, start: int, stop: int) -> list[Damage]:
    """Chunks of rows start..stop that do not read back: h5py raises OSError when Fletcher-32 fails."""
    if ds.shape[0] < stop:
        return [Damage(name, which, ds.shape[0], stop, f"the array holds only {ds.shape[0]} rows")]
    found = []
    for lo, hi in chunk_ranges(start, stop, ds.chunks[0]):
        try:
            ds[lo:hi]
        except OSError as e:
            found.append(Damage(name, which, lo, hi, f"chunk unreadable ({str(e).splitlines()[0]})"))
    return found


class HDF5Backend(RowReads):
    kind = "hdf5"
    shared_writes = False  # one HDF5 file, one writer

    def __init__(self, path: Path) -> None:
        self.path = path

    def exists(self) -> bool:
        return self.path.is_file()

    def _open(self) -> h5py.File:
        try:
            return h5py.File(self.path, "r")
        except FileNotFoundError:
            raise StoreError(f"{self.path}: no store here; create one with `embedstore encode ... --store {self.path}`") from None
        except OSError as e:
            raise StoreError(f"{self.path}: not a readable HDF5 store ({e})") from None

    def list_groups(self) -> dict[str, dict]:
        """Groups holding their arrays (or rows: one missing an array is then damage that verify names)."""
        with self._open() as f:
            return {name: attrs for name, g in f.items() if isinstance(g, h5py.Group) and not name.endswith(STAGING)
                    and ((attrs := _attrs(g)).get("committed_rows", 0) or all(w in g for w in ARRAYS))}

    def _read(self, name: str, which: str, start: int, stop: int, rows: np.ndarray | None = None) -> np.ndarray:
        """Rows start..stop of one array (or the sorted `rows`), refusing a chunk that fails its Fletcher-32
        checksum (stores written before checksums were added read unchecked) with the rows it holds."""
        with self._open() as f:
            ds = f[name][which]
            try:
                if ds.shape[0] < stop:
                    raise Damage(name, which, ds.shape[0], stop, f"the array holds only {ds.shape[0]} rows"
                                 ).error(self.path)
                return ds[start:stop] if rows is None else ds[rows]
            except OSError:
                for damage in _damaged_array(ds, name, which, start, stop):
                    raise damage.error(self.path) from None
                raise

    def damaged(self, name: str, n: int) -> list[Damage]:
        with self._open() as f:
            return [d for which in ARRAYS for d in (
                _damaged_array(f[name][which], name, which, 0, n) if which in f[name]
                else [Damage(name, which, 0, n, f"array {which} missing from group {name}")])]

    def read_ids(self, name: str, n: int, start: int = 0) -> np.ndarray:
        return self._read(name, "ids", start, n)

    def check_present(self, name: str, n: int) -> None:
        """Chunks live inside the one file: none can go missing on its own."""

    def index_dir(self, name: str) -> None:
        """Nothing is kept beside an HDF5 store: the file is replaced whole by every writer, which would leave
        an index beside it stale. The index is built once per process and key instead."""
        return None

    def chunk_rows(self, name: str) -> int:
        with self._open() as f:
            return f[name]["vectors"].chunks[0]

    def size_bytes(self) -> int:
        return self.path.stat().st_size

    def writer(self) -> "HDF5Writer":
        return HDF5Writer(self.path)


class HDF5Writer:
    """Writes into `<file>.partial-<pid>` and renames it over the store when the writer closes.

    HDF5 must never meet a full disk: a failed write is only reported when the chunk cache is flushed (often
    at close), and once a flush has failed, closing the file or even exiting the interpreter crashes the
    process (a segfault, exit 139, leaving the partial file and the lock behind). So the free space is checked
    before the copy and before every write, and every commit flushes, so that the check sees the file as it is.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = store_lock(path)
        self.tmp = path.with_name(f"{path.name}.partial-{os.getpid()}")

    def __enter__(self) -> "HDF5Writer":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_dead_temps(self.path.parent)  # what killed writers of any store or artifact here left
        self.created_lock = not self.lock.lock_path.exists()
        self.lock.acquire()
        try:
            for stale in self.path.parent.glob(self.path.name + ".partial-*"):
                stale.unlink()  # left by a killed writer; we hold the lock, so nobody else is using it
            if self.path.exists():
                self._require_space(self.path.stat().st_size, "copying the store to write into")
                shutil.copyfile(self.path, self.tmp)
            self.file = h5py.File(self.tmp, "a")
            self.wrote_rows = False
        except BaseException:
            self.tmp.unlink(missing_ok=True)
            release_store_lock(self.lock, self.path, self.created_lock)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        """Committed rows are consistent once the file is closed, so even an interrupted run keeps them; a run
        that failed before writing any row publishes nothing (a new store does not appear empty)."""
        try:
            self.file.close()
            if self.wrote_rows or exc[0] is None:
                publish(self.tmp, self.path)
        finally:
            self.tmp.unlink(missing_ok=True)
            release_store_lock(self.lock, self.path, self.created_lock)

    def _require_space(self, nbytes: int, doing: str) -> None:
        free = shutil.disk_usage(self.path.parent).free
        if free < nbytes + HDF5_SPACE_MARGIN:
            raise StoreError(f"{self.path}: no space left for {doing} ({nbytes + HDF5_SPACE_MARGIN:,} bytes needed, "
                             f"{free:,} free); the store keeps its committed rows")

    def ensure_group(self, name: str, attrs: dict, dim: int, dtype: str, chunk_rows: int) -> dict:
        """A new key is built under a staging name and moved into place whole: this writer's copy is published
        once it wrote rows, even if creating a later key fails half-way."""
        if name in self.file and all(which in self.file[name] for which in ARRAYS):
            return _attrs(self.file[name])
        for leftover in (name, name + STAGING):  # a half-made group holds no rows
            if leftover in self.file:
                del self.file[leftover]
        group = self.file.create_group(name + STAGING)
        for which, width, kind in (("vectors", dim, dtype), ("ids", ID_BYTES, "uint8")):
            group.create_dataset(which, shape=(0, width), maxshape=(None, width), chunks=(chunk_rows, width),
                                 dtype=kind, fletcher32=True)
        self.file.move(name + STAGING, name)
        self.commit(name, 0, attrs)
        return _attrs(self.file[name])

    def write(self, name: str, start: int, ids: np.ndarray, vectors: np.ndarray) -> None:
        group = self.file[name]
        stop = start + len(ids)
        # a filtered chunk is rewritten whole, possibly to new space: count every chunk the rows touch
        touched = sum(len(chunk_ranges(start, stop, ds.chunks[0])) * ds.chunks[0] * ds.shape[1] * ds.dtype.itemsize
                      for ds in (group["vectors"], group["ids"]))
        self._require_space(touched, f"rows {start}..{stop} of key {name}")
        self.wrote_rows = True
        for ds, data in ((group["vectors"], vectors), (group["ids"], ids)):
            if ds.shape[0] < stop:
                ds.resize(stop, axis=0)
            ds[start:stop] = data

    def commit(self, name: str, committed_rows: int, attrs: dict) -> None:
        group = self.file[name]
        for k, v in {**attrs, "committed_rows": committed_rows}.items():
            group.attrs[k] = json.dumps(v)
        try:
            self.file.flush()
        except RuntimeError as e:  # HDF5 reports a failed write here; the published file keeps earlier commits
            raise StoreError(f"{self.path}: cannot save the rows of key {name} ({str(e).splitlines()[0]}); "
                             "the store keeps its earlier committed rows") from None

    def chunk_rows(self, name: str) -> int:
        return self.file[name]["vectors"].chunks[0]

    def rebuild_digests(self, name: str, committed_rows: int, damage: list[Damage]) -> list[Damage]:
        """HDF5 keys have no row digests: nothing to rebuild."""
        return []

    def drop_rows(self, name: str, committed_rows: int, damage: list[Damage]) -> int:
        """Copy the undamaged committed rows into fresh arrays that replace the old ones. The writer works on
        a temporary copy of the file, so a killed repair leaves the store as it was."""
        keep = np.ones(committed_rows, bool)
        for d in damage:
            keep[d.start:d.stop] = False
        rows = np.flatnonzero(keep)
        group = self.file[name]
        if not len(rows):  # (an array missing, say): the key goes whole, and the next writer makes it anew
            del self.file[name]
            return 0
        for which in ARRAYS:
            old = group[which]
            new = group.create_dataset(f"{which}.repaired", shape=(len(rows), old.shape[1]),
                                       maxshape=(None, old.shape[1]), chunks=old.chunks, dtype=old.dtype,
                                       fletcher32=True)
            for lo in range(0, len(rows), REPAIR_BLOCK_ROWS):
                new[lo:lo + REPAIR_BLOCK_ROWS] = old[rows[lo:lo + REPAIR_BLOCK_ROWS]]
            del group[which]
            group.move(f"{which}.repaired", which)
        generation = json.loads(group.attrs.get("rows_generation", "0"))
        self.commit(name, len(rows), {"rows_generation": generation + 1})
        return len(rows)
