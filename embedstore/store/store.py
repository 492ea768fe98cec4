"""The content-addressed vector store: many keys, each a group of `vectors` and `ids` rows.

Only rows below a key's `committed_rows` exist for readers. Writers append rows and then advance that
count, so a killed writer leaves at most uncommitted rows, which the next writer overwrites.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, cast

import numpy as np

from embedstore.base.errors import ConfigError, StoreError
from embedstore.base.schema import options_of
from embedstore.data.hashing import ID_BYTES, Text, text_ids
from .backend import Backend, BackendWriter, Damage, SharedBackend, SharedWriter, runs
from .hdf5_backend import HDF5Backend
from .index import SAVE_MIN_ROWS, IdIndex, discard, save, saved
from .key import StoreKey
from .object_backend import ObjectBackend, is_url
from .zarr_backend import ZarrBackend

HDF5_SUFFIXES = (".h5", ".hdf5")
GATHER_BLOCK_ROWS = 65536  # rows per step of a gather: the memory a read needs beyond its result


def backend_for(path: Path | str) -> Backend:
    if is_url(path):
        return ObjectBackend(str(path))
    path = Path(path)
    if path.suffix.lower() in HDF5_SUFFIXES:
        return HDF5Backend(path)
    if path.suffix.lower() != ".zarr":
        raise StoreError(f"{path}: a store path must end in .zarr (directory) or .h5 (HDF5 file)")
    return ZarrBackend(path)


_KEY_TYPES = {o.name: o.type for o in options_of(StoreKey)}
"""A stored key's fields and their types, as `StoreKey` declares them."""


def _checked_attrs(path: Path, name: str, attrs: object) -> dict:
    """A group's attributes are data read from disk: anything but what a writer puts there (a key that names this
    very group, typed fields, a non-negative `committed_rows`, a positive `dim`, a `provenance` table) is refused
    with the group and field named, rather than surfacing later as a TypeError or a wrong row count."""
    where = f"{path}: key {name}"
    if not isinstance(attrs, dict):
        raise StoreError(f"{where}: attributes are {type(attrs).__name__}; expected a JSON object")
    if "key" not in attrs:
        return attrs  # not a key group: readers skip it
    raw = attrs["key"]
    if not isinstance(raw, dict) or set(raw) != set(_KEY_TYPES) or any(
            not isinstance(raw[f], t) or isinstance(raw[f], bool) for f, t in _KEY_TYPES.items()):
        raise StoreError(f"{where}: attribute key: {str(raw)[:80]}; expected a store key ({', '.join(_KEY_TYPES)})")
    try:
        key = StoreKey.from_dict(raw)
    except ConfigError as e:
        raise StoreError(f"{where}: attribute key.{e}") from None
    if key.group_name != name:
        raise StoreError(f"{where}: attribute key names group {key.group_name}; the group's key was altered")
    for field, low in (("dim", 1), ("committed_rows", 0), ("rows_generation", 0)):
        value = attrs.get(field, low)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise StoreError(f"{where}: attribute {field}: {str(value)[:40]}; expected an integer >= {low}")
    if not isinstance(attrs.get("provenance", {}), dict):
        raise StoreError(f"{where}: attribute provenance: expected a table")
    return attrs


@contextlib.contextmanager
def _disk_errors(path: Path) -> Iterator[None]:
    """A write the filesystem refuses (full, read-only, quota) is a one-line StoreError. Both formats write rows
    before committing them (zarr each chunk file atomically; HDF5 into a copy), so the rows committed before
    stay readable and correct."""
    try:
        yield
    except OSError as e:
        raise StoreError(f"{path}: cannot write the store ({e.strerror or e}); it keeps its committed rows; "
                         "free space or choose another store path") from None


class Store:
    """Read access to a store; `writer()` for the single writer. Open with `Store.open(path)`."""

    def __init__(self, path: Path | str) -> None:
        self.path = path  # a URL (str) for a store on object storage
        self.backend: Backend = backend_for(path)
        self._index_cache: dict[str, tuple[tuple[int, int], IdIndex]] = {}  # by key: (generation, rows), index

    @classmethod
    def open(cls, path: str | Path) -> "Store":
        return cls(str(path) if is_url(path) else Path(path))

    def exists(self) -> bool:
        return self.backend.exists()

    def _groups(self) -> dict[str, dict]:
        if not self.exists():
            return {}
        try:
            groups = self.backend.list_groups()
        except StoreError:
            raise  # the backend already named the group and what is wrong with it
        except (TypeError, ValueError) as e:  # zarr refusing a group's metadata (attributes that are not a table)
            raise StoreError(f"{self.path}: unreadable group metadata ({' '.join(str(e).split())[:200]})") from None
        return {name: _checked_attrs(self.path, name, attrs) for name, attrs in groups.items()}

    def keys(self) -> list[StoreKey]:
        return [StoreKey.from_dict(attrs["key"]) for attrs in self._groups().values() if "key" in attrs]

    def attrs(self, key: StoreKey) -> dict:
        return self._groups().get(key.group_name, {})

    def rows(self, key: StoreKey) -> int:
        return int(self.attrs(key).get("committed_rows", 0))

    def _index(self, key: StoreKey, attrs: dict) -> IdIndex:
        """The id index of the committed rows; kept per key for its committed count and rows generation, so a
        growing or repaired store is re-indexed (from the saved index plus the rows after it, when there is
        one), and callers alternating between keys (one per layer) do not rebuild each other's."""
        name, n = key.group_name, int(attrs.get("committed_rows", 0))
        state = (int(attrs.get("rows_generation", 0)), n)
        cached = self._index_cache.get(name)
        if cached is not None and cached[0][0] == state[0] and cached[0][1] < n:  # appended to: extend
            old = cached[0][1]
            cached = self._index_cache[name] = (state, cached[1].extended(self.backend.read_ids(name, n, old), old))
        elif cached is None or cached[0] != state:
            cached = self._index_cache[name] = (state, self._load_index(name, *state))
        return cached[1]

    def _load_index(self, name: str, generation: int, n: int) -> IdIndex:
        if not n:
            return IdIndex.build(np.zeros((0, ID_BYTES), np.uint8))
        directory = self.backend.index_dir(name)
        found = saved(directory, generation, n) if directory else None
        if found is None:
            index, have = IdIndex.build(self.backend.read_ids(name, n)), 0
        else:
            index, have = found
            self.backend.check_present(name, have)  # what reading those ids would have checked
            if have < n:
                index = index.extended(self.backend.read_ids(name, n, start=have), have)
        if directory and n - have >= max(SAVE_MIN_ROWS, have // 8):  # worth saving: large, or grown by 1/8
            save(directory, generation, index)
        return index

    def contains_ids(self, key: StoreKey, ids: np.ndarray) -> np.ndarray:
        return self._index(key, self.attrs(key)).find(ids) >= 0

    def contains(self, key: StoreKey, texts: Sequence[Text]) -> np.ndarray:
        return self.contains_ids(key, text_ids(texts))

    def get(self, key: StoreKey, texts: Sequence[Text]) -> np.ndarray:
        """float32 vectors of `texts` in input order; every text must have been encoded under `key`."""
        return self.get_ids(key, text_ids(texts))

    def get_ids(self, key: StoreKey, ids: np.ndarray) -> np.ndarray:
        attrs = self._groups().get(key.group_name)
        if attrs is None:
            raise StoreError(f"{self.path}: no vectors under key {key.describe()}; encode the texts first "
                             f"with `embedstore encode FILE --store {self.path}`")
        ids = np.ascontiguousarray(ids, dtype=np.uint8).reshape(-1, ID_BYTES)
        n, dim = int(attrs.get("committed_rows", 0)), int(attrs.get("dim", 1))
        out = self._gather(key.group_name, n, dim, ids, self._rows(key, attrs, ids))
        if out is None:  # a saved index that does not match the rows: discard it, re-read the ids, once
            self._index_cache = {}
            if directory := self.backend.index_dir(key.group_name):
                discard(directory)
            out = self._gather(key.group_name, n, dim, ids, self._rows(key, attrs, ids))
            if out is None:
                raise StoreError(f"{self.path}: key {key.group_name}: rows do not hold the ids their index names, "
                                 "even after re-reading the ids; was the store changed during the read?")
        return out

    def _rows(self, key: StoreKey, attrs: dict, ids: np.ndarray) -> np.ndarray:
        rows = self._index(key, attrs).find(ids)
        missing = int((rows < 0).sum())
        if missing:
            raise StoreError(f"{self.path}: {missing} of {len(ids)} texts are not encoded under key "
                             f"{key.describe()}; run `embedstore encode` on them with the same options")
        return rows

    def _gather(self, name: str, n: int, dim: int, ids: np.ndarray, rows: np.ndarray) -> np.ndarray | None:
        """float32 vectors of `rows` (in that order, repeats allowed), read in row order GATHER_BLOCK_ROWS distinct
        rows at a time, each block converted as it arrives, so memory is the result plus one block. Blocks count
        the rows asked for, not the rows they span: a sparse request is then one read of each file it touches
        (blocks of stored rows cost a pass over the files per block: 0.33 s for 10k random rows of 10M, against
        0.14 s for a memory map). Each block's rows must be proven to hold `ids` (`Backend.read_vectors_of`): a
        stale or damaged index can then never hand out another text's vector (None is returned instead)."""
        out = np.empty((len(ids), dim), np.float32)
        order = np.argsort(rows, kind="stable")
        by_row = rows[order]
        unique, starts, slot = runs(by_row)  # slot: which distinct row each request takes
        owners = ids[order[starts]]  # the id each distinct row must hold
        for a in range(0, len(unique), GATHER_BLOCK_ROWS):
            b = a + GATHER_BLOCK_ROWS
            lo, hi = int(starts[a]), int(starts[b]) if b < len(unique) else len(by_row)
            vectors = self.backend.read_vectors_of(name, n, unique[a:b], owners[a:b])
            if vectors is None:
                return None
            out[order[lo:hi]] = vectors if hi - lo == len(vectors) else vectors[slot[lo:hi] - a]  # (no repeats)
        return out

    def read_ids(self, key: StoreKey, n: int) -> np.ndarray:
        """The ids of the first `n` rows, in row order."""
        return self.backend.read_ids(key.group_name, n)

    def read_rows(self, key: StoreKey, n: int, rows: np.ndarray) -> np.ndarray:
        """Vectors in the stored dtype of the sorted, distinct `rows` (below `n`): what a merge compares."""
        return self.backend.read_vectors(key.group_name, n, rows)

    def read_block(self, key: StoreKey, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """ids and vectors (stored dtype) of rows start..stop: a merge copies a store block by block."""
        return self.backend.read_block(key.group_name, start, stop)

    def chunk_rows(self, key: StoreKey) -> int:
        return self.backend.chunk_rows(key.group_name)

    def info(self) -> dict:
        """What `embedstore store info` prints: keys, rows, dim, size on disk."""
        if not self.exists():
            raise StoreError(f"{self.path}: no store here")
        keys = []
        for name, attrs in self._groups().items():
            if "key" not in attrs:
                continue
            keys.append({"group": name, **attrs["key"], "rows": attrs.get("committed_rows", 0),
                         "dim": attrs.get("dim"), "provenance": attrs.get("provenance", {})})
        return {"path": str(self.path), "backend": self.backend.kind, "size_bytes": self.backend.size_bytes(),
                "keys": keys}

    def check_writable(self) -> None:
        """Refuse a store that cannot be written before any expensive work (loading a model, encoding): create
        and delete a file where the writer will (the store directory, and beside it, where the lock lives).
        A real write rather than permission bits: these do not show a read-only mount, nor apply to root.
        A store on object storage is checked by its writer's first request (the lease)."""
        if is_url(self.path):
            return
        places = [self.path.parent] + ([self.path] if self.path.is_dir() else [])
        for place in places:
            existing = next(p for p in (place, *place.parents) if p.exists())
            try:
                with tempfile.TemporaryFile(dir=existing):
                    pass
            except OSError as e:
                raise StoreError(f"{self.path}: cannot write the store here ({existing}: "
                                 f"{e.strerror or e}); expected a writable directory") from None
        if self.path.is_file() and not os.access(self.path, os.W_OK):
            raise StoreError(f"{self.path}: the store file is read-only; expected a writable file")

    def verify(self) -> list[Damage]:
        """Every committed chunk of every key (ids and vectors) that is missing or fails to read back (a
        checksum mismatch, a truncated file). Reads the whole store once."""
        return [d for name, attrs in self._groups().items()
                for d in self.backend.damaged(name, int(attrs.get("committed_rows", 0)))]

    def repair(self) -> "Repair":
        """Under the writer lock: rebuild row digests that are damaged alone (their rows pass their own
        checksums), and drop every other damaged row from its key's committed rows, so that the next encode
        recomputes exactly those texts."""
        dropped, rebuilt = [], []
        with self.writer() as writer:
            damage = self.verify()
            for name, attrs in self._groups().items():
                mine = [d for d in damage if d.group == name]
                if mine:
                    n = int(attrs.get("committed_rows", 0))
                    mended = writer.rebuild_digests(name, n, mine)
                    rest = [d for d in mine if d not in mended]
                    if rest:
                        writer.drop_rows(name, n, rest)
                    dropped += rest
                    rebuilt += mended
        self._index_cache = {}
        return Repair(dropped, rebuilt)

    def writer(self) -> "StoreWriter":
        return StoreWriter(self)


@dataclass(frozen=True)
class Repair:
    """What `Store.repair` did: rows dropped (encode recomputes them) and rows whose digests were rebuilt."""

    dropped: list[Damage]
    rebuilt: list[Damage]

    @property
    def dropped_rows(self) -> int:
        return damaged_rows(self.dropped)

    @property
    def rebuilt_rows(self) -> int:
        return damaged_rows(self.rebuilt)


def damaged_rows(damage: list[Damage]) -> int:
    """Rows covered by `damage`, each counted once (a row may be in a damaged chunk and fail its digest)."""
    total, group, reach = 0, None, 0
    for d in sorted(damage, key=lambda d: (d.group, d.start)):
        if d.group != group:
            group, reach = d.group, 0
        total += max(0, d.stop - max(d.start, reach))
        reach = max(reach, d.stop)
    return total


@dataclass
class KeyWriter:
    """Appends to one key; `committed` is where the next row goes."""

    backend_writer: BackendWriter
    store_path: Path
    key: StoreKey
    committed: int
    provenance: dict

    def append(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        name = self.key.group_name
        with _disk_errors(self.store_path):
            self.backend_writer.write(name, self.committed, ids, vectors.astype(self.key.dtype, copy=False))
        self.commit(self.committed + len(ids))

    def commit(self, rows: int) -> None:
        """Make rows below `rows` visible to readers; the caller guarantees they are all written."""
        with _disk_errors(self.store_path):
            self.backend_writer.commit(self.key.group_name, rows, {"provenance": self.provenance})
        self.committed = rows

    @property
    def chunk_rows(self) -> int:
        return self.backend_writer.chunk_rows(self.key.group_name)

    # stores with shared writes only (see `require_shared_writes`): for a distributed encode, whose other
    # ranks write through `RowWriter`
    def _shared(self) -> SharedWriter:
        return cast(SharedWriter, self.backend_writer)

    def reserve(self, rows: int) -> None:
        self._shared().reserve(self.key.group_name, rows)

    def read_ids(self, start: int, stop: int) -> np.ndarray:
        return self._shared().read_ids(self.key.group_name, start, stop)

    def clear_uncommitted_ids(self) -> None:
        self._shared().clear_ids(self.key.group_name, self.committed)


class StoreWriter:
    """The single writer of a store (a lock is held until exit)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._writer = store.backend.writer()

    def __enter__(self) -> "StoreWriter":
        with _disk_errors(self.store.path):
            self._writer.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        with _disk_errors(self.store.path):
            self._writer.__exit__(*exc)

    def rebuild_digests(self, group: str, committed_rows: int, damage: list[Damage]) -> list[Damage]:
        """Mend what of `damage` is in row digests alone (see `Store.repair`); returns it."""
        return self._writer.rebuild_digests(group, committed_rows, damage)

    def drop_rows(self, group: str, committed_rows: int, damage: list[Damage]) -> int:
        """Remove damaged rows from `group`'s committed rows (see `Store.repair`); returns the new count."""
        return self._writer.drop_rows(group, committed_rows, damage)

    def key(self, key: StoreKey, dim: int, provenance: dict, chunk_rows: int = 1024) -> KeyWriter:
        attrs = {"key": key.to_dict(), "dim": dim, "dtype": key.dtype, "provenance": provenance}
        with _disk_errors(self.store.path):
            existing = self._writer.ensure_group(key.group_name, attrs, dim, key.dtype, chunk_rows)
        if existing.get("dim", dim) != dim:
            raise StoreError(f"{self.store.path}: key {key.describe()} holds {existing['dim']}-d vectors, not {dim}-d")
        return KeyWriter(self._writer, self.store.path, key, int(existing.get("committed_rows", 0)), provenance)


def require_shared_writes(store: Store) -> None:
    """Only zarr stores take writes from several processes (each owning whole chunks); HDF5 has one writer."""
    if not store.backend.shared_writes:
        raise StoreError(f"{store.path}: an HDF5 store has a single writer, so several processes cannot encode "
                         "into it; use a .zarr store (convert later with `embedstore store merge A.zarr --out B.h5`)")


class RowWriter:
    """Writes rows into space the lock holder reserved, without the lock and without committing them.

    The other ranks of a distributed encode use this; readers see the rows only once the lock holder
    advances `committed_rows` after checking them.
    """

    def __init__(self, store: Store) -> None:
        require_shared_writes(store)
        self._rows = cast(SharedBackend, store.backend).row_writer()

    def write(self, key: StoreKey, start: int, ids: np.ndarray, vectors: np.ndarray) -> None:
        self._rows.write(key.group_name, start, ids, vectors.astype(key.dtype, copy=False))
