"""File helpers of text training: durable writes, content hashes and the one-run-per-directory lock.

Durable (fsync before rename) because a resumed run trusts whatever a killed one left on disk.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from embedstore.base.errors import ConfigError

_HASH_CHUNK = 1 << 20


def fsync_file(path: Path) -> None:
    with path.open("rb") as f:
        os.fsync(f.fileno())


def write_atomic(path: Path, data: bytes) -> None:
    """Temporary file, fsync, rename: a reader (or a resumed run) sees the old file or the new one, whole."""
    _replace_atomic(path, lambda tmp: tmp.write_bytes(data))


def json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=1, ensure_ascii=False) + "\n").encode("utf-8")


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """safetensors wants contiguous CPU tensors; the graph's may live on a GPU or be views."""
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))


def save_tensors_atomic(tensors: dict[str, torch.Tensor], path: Path) -> None:
    _replace_atomic(path, lambda tmp: save_tensors(tensors, tmp))


def _replace_atomic(path: Path, write: Callable[[Path], object]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def file_hash(path: Path) -> str:
    """sha256 (16 hex chars) of a file's bytes: provenance that says which data a result came from."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()[:16]


def dir_hash(path: Path) -> str:
    """Hash of a saved aligner's files, so a resume with a refitted aligner in the same directory is refused."""
    h = hashlib.sha256()
    for p in sorted(q for q in path.iterdir() if q.is_file()):
        h.update(f"{p.name}\n{file_hash(p)}\n".encode())
    return h.hexdigest()[:16]


@contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """One run per output directory: two processes resuming the same checkpoints would interleave them."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / ".embedstore-train.lock").open("w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"out: {out} is in use by another training run") from None
        yield
