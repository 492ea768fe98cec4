"""The vectors a process's cells looked up, kept by store, key and text id.

Why: a sweep's worker runs many cells of one task, and each reads the same test rows, English test rows, pairs
and training rows from the store again (six to eight reads a cell, ~50 ms of CPU: a fifth of a demo cell's CPU
besides its head; docs/performance.md, "The demo"). A vector under a store key never changes (the key names
everything that changes a vector, and the store only appends), so a vector read once serves every later cell.
"""
from __future__ import annotations

import numpy as np

from embedstore.data.hashing import ID_BYTES
from embedstore.store import Store, StoreKey

LIMIT_BYTES = 256 << 20
"""What one process keeps at most (the demo needs ~6 MB); past it the memory starts again empty."""


class RememberedVectors:
    """`Store.get_ids` that remembers each vector it read, for the rest of the process."""

    def __init__(self, limit_bytes: int = LIMIT_BYTES) -> None:
        self.limit_bytes = limit_bytes
        self._kept: dict[tuple[str, str], dict[bytes, np.ndarray]] = {}
        self._bytes = 0

    def get(self, store: Store, key: StoreKey, ids: np.ndarray) -> np.ndarray:
        """float32 vectors of `ids` in order, as `store.get_ids` gives them (a fresh array: a caller may change it)."""
        ids = np.ascontiguousarray(ids, dtype=np.uint8).reshape(-1, ID_BYTES)
        if not len(ids):
            return store.get_ids(key, ids)
        names = [row.tobytes() for row in ids]
        kept = self._kept.setdefault((str(store.path), key.group_name), {})
        missing = [name for name in dict.fromkeys(names) if name not in kept]
        if missing:
            vectors = store.get_ids(key, np.frombuffer(b"".join(missing), dtype=np.uint8).reshape(-1, ID_BYTES))
            kept.update(zip(missing, vectors))  # rows of an array no caller holds
            self._bytes += vectors.nbytes
        out = np.stack([kept[name] for name in names])
        if self._bytes > self.limit_bytes:
            self._kept.clear()
            self._bytes = 0
        return out
