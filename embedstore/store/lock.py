"""Where a store's writer lock lives and what a second writer is told."""
from __future__ import annotations

from pathlib import Path

from embedstore.base.errors import StoreError
from embedstore.base.lock import WriterLock


def store_lock(store_path: Path) -> WriterLock:
    """`<store>.lock` beside the store, not inside it: zarr warns about files it does not know."""
    return WriterLock(store_path.with_name(store_path.name + ".lock"), lambda pid: StoreError(
        f"{store_path}: another process (pid {pid}) is writing this store; wait for it to finish or stop it"))


def release_store_lock(lock: WriterLock, store_path: Path, created: bool) -> None:
    """Release `lock`; if this writer created the lock file and no store exists after all (a first write or a
    merge that failed), remove it first, while still holding it, so that no stale lock file stays behind."""
    if created and not store_path.exists():
        lock.lock_path.unlink(missing_ok=True)
    lock.release()
