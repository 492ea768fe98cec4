"""Vectors a process's cells looked up or computed, kept by where they came from and text id.

Why: a sweep's worker runs many cells of one task, and each reads the same test rows, English test rows, pairs
and training rows from the store again (six to eight reads a cell, ~50 ms of CPU: a fifth of a demo cell's CPU
besides its head; docs/performance.md, "The demo"). A vector under a store key never changes (the key names
everything that changes a vector, and the store only appends), so a vector read once serves every later cell.
The same holds for a fitted aligner's output on a text (its id names the fit): `study.experiments` keeps those
too, so the cells of an aligner map each training, validation and test row once a process, not once a cell.
"""
from __future__ import annotations

from collections.abc import Callable, Hashable

import numpy as np

from embedstore.data.hashing import ID_BYTES
from embedstore.store import Store, StoreKey

LIMIT_BYTES = 256 << 20
"""What one process keeps at most (the demo needs ~6 MB); past it the memory starts again empty."""


class RememberedVectors:
    """`Store.get_ids` (or any function of text ids to rows) that remembers each row it gave, for the rest of the
    process."""

    def __init__(self, limit_bytes: int = LIMIT_BYTES) -> None:
        self.limit_bytes = limit_bytes
        self._kept: dict[Hashable, dict[bytes, np.ndarray]] = {}
        self._bytes = 0

    def get(self, store: Store, key: StoreKey, ids: np.ndarray) -> np.ndarray:
        """float32 vectors of `ids` in order, as `store.get_ids` gives them (a fresh array: a caller may change it)."""
        return self.rows((str(store.path), key.group_name), ids, lambda missing: store.get_ids(key, missing))

    def rows(self, source: Hashable, ids: np.ndarray, fetch: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """The rows of `ids` in order, as `fetch` (ids -> one row each) gives them, each fetched once per `source`
        (what names the function: a store key, a fitted aligner); a fresh array, as `get`'s."""
        ids = np.ascontiguousarray(ids, dtype=np.uint8).reshape(-1, ID_BYTES)
        if not len(ids):
            return fetch(ids)
        names = [row.tobytes() for row in ids]
        kept = self._kept.setdefault(source, {})
        missing = [name for name in dict.fromkeys(names) if name not in kept]
        if missing:
            rows = fetch(np.frombuffer(b"".join(missing), dtype=np.uint8).reshape(-1, ID_BYTES))
            kept.update(zip(missing, rows))  # rows of an array no caller holds
            self._bytes += rows.nbytes
        out = np.stack([kept[name] for name in names])
        if self._bytes > self.limit_bytes:
            self._kept.clear()
            self._bytes = 0
        return out
