"""Where a store's writer lock lives and what a second writer is told."""
from __future__ import annotations

from pathlib import Path

from embedstore.base.errors import StoreError
from embedstore.base.lock import WriterLock


def store_lock(store_path: Path) -> WriterLock:
    """`<store>.lock` beside the store, not inside it: zarr warns about files it does not know."""
    return WriterLock(store_path.with_name(store_path.name + ".lock"), lambda pid: StoreError(
        f"{store_path}: another process (pid {pid}) is writing this store; wait for it to finish or stop it"))
