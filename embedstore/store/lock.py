"""One writer per store.

`flock` is released by the kernel when its holder dies, so a `kill -9`ed encode never leaves a stale lock,
and a second writer is told at once who holds it instead of corrupting chunks.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

from embedstore.base.errors import StoreError


class WriterLock:
    def __init__(self, lock_path: Path, store_path: Path) -> None:
        self.lock_path = lock_path
        self.store_path = store_path
        self._fd: int | None = None

    def acquire(self) -> "WriterLock":
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreError(f"{self.store_path}: another process (pid {holder}) is writing this store; "
                             "wait for it to finish or stop it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "WriterLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
