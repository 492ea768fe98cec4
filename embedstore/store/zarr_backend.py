"""Zarr directory backend: the resumable one.

Rows are written chunk by chunk (zarr >= 3.1.3 writes each chunk file atomically), then the group's
`committed_rows` attribute is advanced. zarr 3.1 reads never-written chunks back as zeros without a word,
so readers trust only `committed_rows`, never the array's shape.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import zarr

from embedstore.base.errors import StoreError
from embedstore.data.hashing import ID_BYTES
from .lock import store_lock


def _root_group(path: Path, mode: str) -> zarr.Group:
    try:
        return zarr.open_group(str(path), mode=mode, use_consolidated=False)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        raise StoreError(f"{path}: no store here; create one with `embedstore encode ... --store {path}`") from None
    except (ValueError, zarr.errors.NodeTypeValidationError) as e:
        raise StoreError(f"{path}: not a readable zarr store ({e})") from None


class ZarrBackend:
    kind = "zarr"
    shared_writes = True  # zarr is process-safe when each process writes whole chunks of its own

    def __init__(self, path: Path) -> None:
        self.path = path

    def exists(self) -> bool:
        return (self.path / "zarr.json").is_file()

    def list_groups(self) -> dict[str, dict]:
        root = _root_group(self.path, "r")
        with warnings.catch_warnings():  # a killed writer's temp files are not members; zarr warns about each
            warnings.filterwarnings("ignore", message=r"Object at .*\.partial is not recognized")
            return {name: dict(group.attrs) for name, group in root.groups()}

    def read_ids(self, name: str, n: int) -> np.ndarray:
        return _root_group(self.path, "r")[name]["ids"][:n]

    def read_vectors(self, name: str, n: int, rows: np.ndarray | None) -> np.ndarray:
        arr = _root_group(self.path, "r")[name]["vectors"]
        if rows is None:
            return arr[:n]
        return arr.get_orthogonal_selection((rows, slice(None)))

    def read_block(self, name: str, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """ids and vectors (stored dtype) of rows start..stop: a merge copies a store block by block."""
        group = _root_group(self.path, "r")[name]
        return group["ids"][start:stop], group["vectors"][start:stop]

    def chunk_rows(self, name: str) -> int:
        return _root_group(self.path, "r")[name]["vectors"].chunks[0]

    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())

    def writer(self) -> "ZarrWriter":
        return ZarrWriter(self.path)

    def row_writer(self) -> "ZarrRowWriter":
        return ZarrRowWriter(self.path)


#: zarr's atomic write goes to `<name>.<uuid4 hex>.partial` beside the file, then renames it into place
_ZARR_TEMP_FILE = re.compile(r".*\.[0-9a-f]{32}\.partial")


def _remove_temp_files(path: Path) -> None:
    """Delete what writes cut short by a kill left behind. Only the lock holder calls this, before anyone
    writes, so no temp file found here belongs to a write still in progress."""
    for f in path.rglob("*.partial"):
        if _ZARR_TEMP_FILE.fullmatch(f.name):
            f.unlink(missing_ok=True)


def _write_rows(group: zarr.Group, start: int, ids: np.ndarray, vectors: np.ndarray) -> None:
    """Vectors first, ids last: a row's id on disk then means its vector is there too (a distributed encode
    commits rows once it sees their ids)."""
    stop = start + len(ids)
    for arr, data in ((group["vectors"], vectors), (group["ids"], ids)):
        arr[start:stop] = data


class ZarrWriter:
    """Holds the store's writer lock for its lifetime; see the module docstring for the commit order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = store_lock(path)

    def __enter__(self) -> "ZarrWriter":
        self.path.mkdir(parents=True, exist_ok=True)
        self.lock.acquire()
        try:
            _remove_temp_files(self.path)
            self.root = zarr.open_group(str(self.path), mode="a", use_consolidated=False)
        except Exception:
            self.lock.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.lock.release()

    def ensure_group(self, name: str, attrs: dict, dim: int, dtype: str, chunk_rows: int) -> dict:
        if name in self.root:
            return dict(self.root[name].attrs)
        group = self.root.create_group(name, attributes={**attrs, "committed_rows": 0})
        group.create_array("vectors", shape=(0, dim), chunks=(chunk_rows, dim), dtype=dtype,
                           compressors=None, fill_value=0)
        group.create_array("ids", shape=(0, ID_BYTES), chunks=(chunk_rows, ID_BYTES), dtype="uint8",
                           compressors=None, fill_value=0)
        return dict(group.attrs)

    def write(self, name: str, start: int, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.reserve(name, start + len(ids))
        _write_rows(self.root[name], start, ids, vectors)

    def reserve(self, name: str, rows: int) -> None:
        """Grow the arrays (in whole chunks) to hold `rows` rows. Only the lock holder changes array metadata;
        once space is reserved, other processes can fill it with `ZarrRowWriter` without touching metadata."""
        group = self.root[name]
        for arr in (group["vectors"], group["ids"]):
            if arr.shape[0] < rows:
                chunk = arr.chunks[0]
                arr.resize((-(-rows // chunk) * chunk, arr.shape[1]))

    def read_ids(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows as they are on disk now, committed or not: lets the lock holder check other processes' writes."""
        return self.root[name]["ids"][start:stop]

    def clear_ids(self, name: str, start: int) -> None:
        """Zero the ids of every row from `start` on (what a killed run left there), so that an id on disk
        proves this run wrote its row."""
        arr = self.root[name]["ids"]
        if arr.shape[0] > start:
            arr[start:] = 0

    def commit(self, name: str, committed_rows: int, attrs: dict) -> None:
        self.root[name].attrs.update({**attrs, "committed_rows": committed_rows})

    def chunk_rows(self, name: str) -> int:
        return self.root[name]["vectors"].chunks[0]


class ZarrRowWriter:
    """Fills rows the lock holder has reserved, without taking the lock and without writing any metadata.

    For the other ranks of a distributed encode: zarr is process-safe only when processes write different
    chunks, so each caller must own whole chunks (the distributed plan guarantees it), and the lock holder
    alone resizes arrays and advances `committed_rows`.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.root = _root_group(path, "r+")

    def write(self, name: str, start: int, ids: np.ndarray, vectors: np.ndarray) -> None:
        group = self.root[name]
        reserved = group["ids"].shape[0]
        if start + len(ids) > reserved:
            raise StoreError(f"{self.path}: rows {start}..{start + len(ids)} of {name} lie beyond the {reserved} "
                             "rows the writer reserved; was the store changed by another process?")
        _write_rows(group, start, ids, vectors)
