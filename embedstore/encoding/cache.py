"""What the cache directory holds (`embedstore cache list`) and removing what can be rebuilt (`cache prune`).

Why: ONNX graphs are exported once per model, layer set and quantization and kept; a user's cache grew to 3.1 GB
of them with no way to see or reclaim it. Graphs and built models rebuild themselves on next use; stores hold
work that cannot be recomputed without the model, so `prune` never touches them.
"""
from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from embedstore.base.errors import ConfigError
from embedstore.encoding.models import cache_dir, dir_size

KINDS = {"onnx": "ONNX graph", "models": "model"}
"""Sub-directories whose entries rebuild on next use, by the kind `list` reports them as."""
PRUNABLE = tuple(KINDS)


@dataclass(frozen=True)
class CacheEntry:
    kind: str  # "ONNX graph", "model", "store" or "other"
    path: Path
    size_bytes: int
    modified: float  # the entry's mtime: when it was last written

    def to_dict(self) -> dict:
        return {**asdict(self), "path": str(self.path)}


def _kind(entry: Path) -> str:
    if entry.suffix in (".zarr", ".h5") and not entry.name.endswith(".lock"):
        return "store"
    return "other"


def cache_entries(root: Path | None = None) -> list[CacheEntry]:
    """Every entry of the cache (`cache_dir()`, i.e. $EMBEDSTORE_CACHE or ./cache), largest first."""
    root = root or cache_dir()
    if not root.is_dir():
        return []
    entries = []
    for child in root.iterdir():
        if child.name in KINDS and child.is_dir():
            entries += [CacheEntry(KINDS[child.name], p, dir_size(p) if p.is_dir() else p.stat().st_size,
                                   p.stat().st_mtime) for p in child.iterdir()]
        else:
            size = dir_size(child) if child.is_dir() else child.stat().st_size
            entries.append(CacheEntry(_kind(child), child, size, child.stat().st_mtime))
    return sorted(entries, key=lambda e: -e.size_bytes)


def prune(kinds: tuple[str, ...] = ("onnx",), *, dry_run: bool = False, root: Path | None = None) -> list[CacheEntry]:
    """Remove the cache entries of `kinds` (subsets of PRUNABLE: they rebuild on next use); returns them."""
    unknown = [k for k in kinds if k not in PRUNABLE]
    if unknown:
        raise ConfigError(f"prune: {', '.join(unknown)}; expected {' or '.join(PRUNABLE)} (stores are never pruned)")
    chosen = {KINDS[k] for k in kinds}
    removed = [e for e in cache_entries(root) if e.kind in chosen]
    if not dry_run:
        for entry in removed:
            shutil.rmtree(entry.path) if entry.path.is_dir() else entry.path.unlink()
    return removed
