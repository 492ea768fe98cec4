"""One process at a time: the writer lock of stores, sweep results files and training output directories.

`flock` is released by the kernel when its holder dies, so a `kill -9`ed writer never leaves a stale lock, and
a second writer is told at once who holds it (the holder writes its pid into the lock file) instead of
corrupting what the first one writes.
"""
from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Callable
from pathlib import Path

from embedstore.base.errors import ConfigError, EmbedstoreError


class WriterLock:
    """An exclusive, non-blocking lock on `lock_path`; `busy(pid)` makes the error raised when another process
    (pid as text, "unknown" if unreadable) holds it, so each caller names what is locked in its own terms.

    `records_pid=False` locks a file that holds data of its own (a sweep's results file): nothing is written
    into it, and `busy` is given "unknown".
    """

    def __init__(self, lock_path: Path, busy: Callable[[str], EmbedstoreError], *, records_pid: bool = True) -> None:
        self.lock_path = lock_path
        self.busy = busy
        self.records_pid = records_pid
        self._fd: int | None = None

    def acquire(self) -> "WriterLock":
        """O_NOFOLLOW: a symbolic link planted at the lock's path is refused, never followed (the pid written
        into the lock, or a truncation, would land in the link's target)."""
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            if e.errno == errno.ELOOP or self.lock_path.is_symlink():
                raise ConfigError(f"{self.lock_path}: is a symbolic link; a lock file is never followed (remove "
                                  "the link, or choose another path)") from None
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() if self.records_pid else ""
            os.close(fd)
            raise self.busy(holder or "unknown") from None
        if self.records_pid:
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
