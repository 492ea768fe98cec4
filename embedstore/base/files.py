"""Content hashes of files: provenance names input data, saved aligners and model weights by their bytes."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20  # read 1 MiB at a time: model weights are too large to read whole


def update_with_file(h: Any, path: str | os.PathLike[str]) -> None:
    """Feed the bytes of `path` into the hash object `h`, in chunks (for digests over several files)."""
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 (64 hex digits) of the file's bytes."""
    h = hashlib.sha256()
    update_with_file(h, path)
    return h.hexdigest()


def dir_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 over the name and 16-digit file digest of every file directly in `path`, in name order: a saved
    artifact's identity (a refitted aligner in the same directory gets another). The 16-digit inner digests
    keep the identities that resumable runs already recorded."""
    h = hashlib.sha256()
    for p in sorted(q for q in Path(path).iterdir() if q.is_file()):
        h.update(f"{p.name}\n{file_sha256(p)[:16]}\n".encode())
    return h.hexdigest()


def input_sha256(path: str | os.PathLike[str]) -> str:
    """An input's content identity: a file's sha256, or `dir_sha256` for a directory input (a `datasets`
    save_to_disk directory keeps its files directly inside)."""
    return dir_sha256(path) if Path(path).is_dir() else file_sha256(path)


def input_mtime_ns(path: str | os.PathLike[str]) -> int:
    """The latest modification time of an input (of its files, for a directory), for caches keyed on it."""
    path = Path(path)
    if not path.is_dir():
        return path.stat().st_mtime_ns
    return max([path.stat().st_mtime_ns, *(q.stat().st_mtime_ns for q in path.iterdir() if q.is_file())])
