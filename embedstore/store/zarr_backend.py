"""Zarr directory backend: the resumable one.

Rows are written chunk by chunk (zarr >= 3.1.3 writes each chunk file atomically), then the group's
`committed_rows` attribute is advanced. zarr 3.1 reads never-written chunks back as zeros without a word,
so readers trust only `committed_rows`, never the array's shape.
"""
from __future__ import annotations


from pathlib import Path

import numpy as np
import zarr

from ..errors import StoreError
from .lock import WriterLock



def _root_group(path: Path, mode: str) -> zarr.Group:
    try:
        return zarr.open_group(str(path), mode=mode, use_consolidated=False)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        raise StoreError(f"{path}: no store here; create one with `embedstore encode ... --store {path}`") from None
    except (ValueError, zarr.errors.NodeTypeValidationError) as e:
        raise StoreError(f"{path}: not a readable zarr store ({e})") from None


class ZarrBackend:
    kind = "zarr"

    def __init__(self, path: Path) -> None:
        self.path = path

    def exists(self) -> bool:
        return (self.path / "zarr.json").is_file()

    def list_groups(self) -> dict[str, dict]:
        root = _root_group(self.path, "r")
        return {name: dict(group.attrs) for name, group in root.groups()}

    def read_ids(self, name: str, n: int) -> np.ndarray:
        return _root_group(self.path, "r")[name]["ids"][:n]

    def read_vectors(self, name: str, n: int, rows: np.ndarray | None) -> np.ndarray:
        arr = _root_group(self.path, "r")[name]["vectors"]
        if rows is None:
            return arr[:n]
        return arr.get_orthogonal_selection((rows, slice(None)))

    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())

    def writer(self) -> "ZarrWriter":
        return ZarrWriter(self.path)


class ZarrWriter:
    """Holds the store's writer lock for its lifetime; see the module docstring for the commit order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = WriterLock(path.with_name(path.name + ".lock"), path)  # outside: zarr warns on foreign files

    def __enter__(self) -> "ZarrWriter":
        self.path.mkdir(parents=True, exist_ok=True)
        self.lock.acquire()
        try:
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
        group.create_array("ids", shape=(0, 16), chunks=(chunk_rows, 16), dtype="uint8",
                           compressors=None, fill_value=0)
        return dict(group.attrs)

    def write(self, name: str, start: int, ids: np.ndarray, vectors: np.ndarray) -> None:
        group = self.root[name]
        stop = start + len(ids)
        for arr, data in ((group["vectors"], vectors), (group["ids"], ids)):
            if arr.shape[0] < stop:
                chunk = arr.chunks[0]
                arr.resize((-(-stop // chunk) * chunk, arr.shape[1]))
            arr[start:stop] = data

    def commit(self, name: str, committed_rows: int, attrs: dict) -> None:
        self.root[name].attrs.update({**attrs, "committed_rows": committed_rows})

    def chunk_rows(self, name: str) -> int:
        return self.root[name]["vectors"].chunks[0]


