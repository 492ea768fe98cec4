"""What a storage format must provide to hold a store: the interface `Store` is written against.

A new format (another file layout, an object store) is one module implementing `Backend` and `BackendWriter`,
plus a suffix in `store.backend_for`. What formats differ in is declared as attributes, so `Store` and the
encoders ask "can several processes write?" rather than "is this zarr?".
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from embedstore.base.errors import StoreError

ARRAYS = ("ids", "vectors")  # the two arrays of every group, read and verified chunk by chunk
ROWS = "ids+vectors"  # the `array` of damage found by row digests: rows whose id and vector disagree with theirs
REPAIR_BLOCK_ROWS = 65536  # rows moved per step by a repair: bounds memory whatever the store size
DENSE_READ = 4  # rows covering 1/DENSE_READ of their span are read as the span: one read beats scattered ones


@dataclass(frozen=True)
class Damage:
    """Committed rows of one key that cannot be read back as written: a chunk file missing (zarr reads it as
    zeros without a word), truncated, never written in its shard, or failing its checksum (rows are then whole
    chunks, `start`..`stop`), or rows whose id and vector do not match their row digest (`array` is ROWS)."""

    group: str
    array: str  # "ids", "vectors", "row_digests" or ROWS
    start: int
    stop: int
    reason: str

    def describe(self) -> str:
        return f"key {self.group}, {self.array} rows {self.start}..{self.stop}: {self.reason}"

    def error(self, store: Path) -> StoreError:
        return StoreError(f"{store}: {self.describe()}; the store is damaged (Store.verify lists every damaged "
                          "chunk, Store.repair drops their rows so that encode recomputes them)")


def chunk_ranges(start: int, stop: int, chunk: int) -> list[tuple[int, int]]:
    """The whole chunks (as row ranges, clipped to `stop`) that hold rows start..stop."""
    first = start // chunk * chunk
    return [(s, min(s + chunk, stop)) for s in range(first, stop, chunk)]


def row_runs(rows: np.ndarray) -> list[tuple[int, int]]:
    """Sorted, distinct rows as (start, stop) runs of consecutive rows."""
    if not len(rows):
        return []
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    return [(int(r[0]), int(r[-1]) + 1) for r in np.split(np.asarray(rows), breaks)]


def runs(numbers: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The runs of equal values in a sorted array: (each run's value, where each run starts, which run each
    element belongs to). np.unique gives the same but sorts first, which cost a fifth of a 10k-row gather."""
    first = np.ones(len(numbers), bool)
    first[1:] = numbers[1:] != numbers[:-1]
    return numbers[first], np.flatnonzero(first), np.cumsum(first) - 1


@runtime_checkable
class BackendWriter(Protocol):
    """The single writer, holding the store's lock between `__enter__` and `__exit__`. Groups are named by
    `StoreKey.group_name`; rows below a group's `committed_rows` attribute are the only ones readers see."""

    def __enter__(self) -> "BackendWriter": ...

    def __exit__(self, *exc: object) -> None: ...

    def ensure_group(self, name: str, attrs: dict, dim: int, dtype: str, chunk_rows: int) -> dict:
        """Create the group (empty, with `attrs`) unless it exists; return its attributes."""
        ...

    def write(self, name: str, start: int, ids: np.ndarray, vectors: np.ndarray) -> None: ...

    def commit(self, name: str, committed_rows: int, attrs: dict) -> None: ...

    def chunk_rows(self, name: str) -> int: ...

    def rebuild_digests(self, name: str, committed_rows: int, damage: list[Damage]) -> list[Damage]:
        """Mend what of `damage` is in row digests alone, from rows that pass their own checksums; returns it."""
        ...

    def drop_rows(self, name: str, committed_rows: int, damage: list[Damage]) -> int:
        """Remove the damaged rows from the committed ones, keeping every other row's (id, vector) pair intact
        even if killed meanwhile; returns the new committed count."""
        ...


@runtime_checkable
class SharedWriter(BackendWriter, Protocol):
    """The lock holder of a store that other processes write into (`Backend.shared_writes`): it reserves
    space for them and checks what they wrote before committing it."""

    def reserve(self, name: str, rows: int) -> None: ...

    def read_ids(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows as they are on disk now, committed or not."""
        ...

    def clear_ids(self, name: str, start: int) -> None:
        """Zero every id from `start` on, so that an id on disk proves this run wrote its row."""
        ...


@runtime_checkable
class BackendRowWriter(Protocol):
    """Writes rows into space the lock holder reserved, without the lock and without committing them."""

    def write(self, name: str, start: int, ids: np.ndarray, vectors: np.ndarray) -> None: ...


@runtime_checkable
class Backend(Protocol):
    path: Path
    kind: str  # the format's name, as `store info` reports it
    shared_writes: bool  # several processes may write (whole chunks each) while one holds the lock

    def exists(self) -> bool: ...

    def list_groups(self) -> dict[str, dict]:
        """Every group's attributes, by group name."""
        ...

    def read_ids(self, name: str, n: int, start: int = 0) -> np.ndarray:
        """ids of rows start..n (n committed)."""
        ...

    def read_vectors(self, name: str, n: int, rows: np.ndarray) -> np.ndarray:
        """Vectors (stored dtype) of the sorted, distinct `rows` (below `n`)."""
        ...

    def read_vectors_of(self, name: str, n: int, rows: np.ndarray, ids: np.ndarray) -> np.ndarray | None:
        """Vectors (stored dtype) of the sorted, distinct `rows` (below `n`), proven to be the rows of `ids`;
        None if a row holds another id (an id index that is stale)."""
        ...

    def check_present(self, name: str, n: int) -> None:
        """Raise the damage error if a file holding one of the first `n` rows is missing, as reading them would
        (a saved id index spares reading the ids, not this check)."""
        ...

    def index_dir(self, name: str) -> Path | None:
        """Where the id index of a key may be saved, or None for a format that keeps nothing beside a key."""
        ...

    def read_block(self, name: str, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """ids and vectors (stored dtype) of rows start..stop."""
        ...

    def chunk_rows(self, name: str) -> int: ...

    def damaged(self, name: str, n: int) -> list[Damage]:
        """Every chunk of the first `n` rows (ids and vectors) that is missing or fails to read back."""
        ...

    def size_bytes(self) -> int: ...

    def writer(self) -> BackendWriter: ...


class RowReads:
    """The reads every backend derives from its one checked `_read(name, array, start, stop, rows=None)`, so the
    integrity checks live in `_read` alone and no read path can skip them."""

    def _read(self, name: str, which: str, start: int, stop: int, rows: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError

    def read_vectors(self, name: str, n: int, rows: np.ndarray) -> np.ndarray:
        return self._read_rows(name, "vectors", n, rows)

    def read_vectors_of(self, name: str, n: int, rows: np.ndarray, ids: np.ndarray) -> np.ndarray | None:
        """The rows' ids are read and compared: 16 bytes per row against the vector's 2 * dim or more."""
        if not np.array_equal(self._read_rows(name, "ids", n, rows), ids):
            return None
        return self.read_vectors(name, n, rows)

    @staticmethod
    def dense(rows: np.ndarray) -> bool:
        """Sorted, distinct rows covering 1/DENSE_READ of their span or more: read as the span."""
        return bool(len(rows)) and len(rows) * DENSE_READ >= int(rows[-1]) + 1 - int(rows[0])

    def _read_rows(self, name: str, which: str, n: int, rows: np.ndarray) -> np.ndarray:
        """Sorted, distinct rows: dense ones as one sequential read of the span, sparse ones chunk by chunk;
        either way memory stays within four times the rows asked for."""
        if self.dense(rows):
            chunk = self.chunk_rows(name)  # whole chunks, so that a damaged one is named with all its rows
            lo, hi = int(rows[0]) // chunk * chunk, min(-(-(int(rows[-1]) + 1) // chunk) * chunk, n)
            return self._read(name, which, lo, hi)[rows - lo]
        return self._read(name, which, 0, n, rows)

    def chunk_rows(self, name: str) -> int:
        raise NotImplementedError

    def read_block(self, name: str, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """ids and vectors (stored dtype) of rows start..stop: a merge copies a store block by block."""
        return self._read(name, "ids", start, stop), self._read(name, "vectors", start, stop)


@runtime_checkable
class SharedBackend(Backend, Protocol):
    """A backend whose `shared_writes` is true."""

    def writer(self) -> SharedWriter: ...

    def row_writer(self) -> BackendRowWriter: ...
