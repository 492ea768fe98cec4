"""File helpers of text training, on the package's one atomic-write policy, file hasher and writer lock.

Durable writes matter here because a resumed run trusts whatever a killed one left on disk.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from embedstore.base.atomic import atomic_path
from embedstore.base.errors import ConfigError
from embedstore.base.files import dir_sha256
from embedstore.base.provenance import input_digest
from embedstore.base.lock import WriterLock

LOCK_FILE = ".embedstore-train.lock"


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """safetensors wants contiguous CPU tensors; the graph's may live on a GPU or be views."""
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))


def save_tensors_atomic(tensors: dict[str, torch.Tensor], path: Path) -> None:
    with atomic_path(path) as tmp:
        save_tensors(tensors, tmp)


def file_hash(path: Path) -> str:
    """16 hex digits of the input's sha256 (a file, or a `datasets` directory): provenance that says which data a
    result came from."""
    return input_digest(path)[:16]


def dir_hash(path: Path) -> str:
    """Hash of a saved aligner's files, so a resume with a refitted aligner in the same directory is refused."""
    return dir_sha256(path)[:16]


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """A JSON object this package wrote (run marker, checkpoint state, result record); anything else, a
    truncated or hand-edited file, is one ConfigError naming it rather than a JSONDecodeError or KeyError."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        value = None
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: not {what} (a JSON object); delete it only if the directory holds nothing "
                          "you need")
    return value


def run_lock(out: Path) -> WriterLock:
    """One run per output directory: two processes resuming the same checkpoints would interleave them."""
    out.mkdir(parents=True, exist_ok=True)
    return WriterLock(out / LOCK_FILE,
                      lambda pid: ConfigError(f"out: {out} is in use by another training run (pid {pid})"))
