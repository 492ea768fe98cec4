"""Zarr directory backend: the resumable one.

Rows are written chunk by chunk (zarr >= 3.1.3 writes each chunk file atomically), then the group's
`committed_rows` attribute is advanced. zarr 3.1 reads never-written chunks back as zeros without a word,
so readers trust only `committed_rows`, never the array's shape, and check that every chunk file of the
committed rows they read exists. New arrays carry a crc32c checksum per chunk (a bytes-to-bytes codec that
zarr verifies on every read), so a corrupted chunk is an error too; stores written before have no checksum,
and a truncated chunk of theirs still fails to decode.

Layout. Keys created now are sharded: `SHARD_CHUNKS` chunks of rows share one file (zarr's sharding codec),
each chunk still crc32c-checked on its own, and the shard's index of its chunks carries its own
crc32c. A key of 100M rows in 1024-row chunks is then ~1,500 files per array instead of ~100,000, while a
sparse read still decodes single chunks. The file (shard) is the unit of writing: zarr rewrites a partly
written shard whole (atomically, like a chunk), so processes writing one key must own whole shards, which is
what `ZarrWriter.chunk_rows` reports. Keys created before sharding (one file per chunk) keep that layout, are
read and appended to as before: every array says in its own metadata which layout it has.

Row digests. Keys created now also hold `row_digests`, the crc32c of each row's id and vector together
(chunk_files.py says why): written with the vectors and before the ids, moved by a repair with their rows,
verified like the other arrays. Every read of their vectors, sparse or dense, checks the rows it returns against
them (row_check.py: one crc32c per chunk), and `damaged` (verify) checks every committed row: a chunk's own
checksum cannot tell a file from an earlier state of the key (restored from a backup, copied before the key
grew), whose rows read as zeros or as another state's rows (issue 28). A gather, which knows the id each row
must hold, proves it from the digest without reading the ids. Keys created before have none and are read as
before, each chunk checked whole (a `digests` array of vector-only crc32c, written by development versions
between 2026-12-03 and 2026-12-04, is not read).
"""
from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec
from zarr.core.group import GroupMetadata
from zarr.storage import LocalStore, StorePath

from embedstore.base.atomic import remove_dead_temps
from embedstore.base.errors import StoreError
from embedstore.data.hashing import ID_BYTES
from . import chunk_files, row_check
from .backend import ARRAYS, REPAIR_BLOCK_ROWS, ROWS, Damage, RowReads, chunk_ranges, row_runs, runs
from .index import discard
from .lock import store_lock

DIGESTS = "row_digests"
STAGING = ".creating-"  # a key's group being built, renamed to the key's name once whole
SHARD_CHUNKS = 64  # chunks per file in keys created now (65,536 rows at the default 1,024); 1: a file per chunk


def _file_rows(arr: zarr.Array) -> int:
    """Rows per file: a shard of a sharded array, a chunk otherwise."""
    return (arr.shards or arr.chunks)[0]


def _file_path(path: Path, name: str, which: str, arr: zarr.Array, row: int, unit: int) -> str:
    """The file that holds `row`, `unit` being `_file_rows(arr)` (a string, and `unit` computed once by the
    caller: this runs once per file of every read)."""
    key = arr.metadata.chunk_key_encoding.encode_chunk_key((row // unit, 0))
    return f"{path}/{name}/{which}/{key}"


class _NotTheirIds(Exception):
    """A row read for an id holds another id: the index that named the row is stale (not damage)."""


class _RowsOffDigests(ValueError):
    """Rows whose id and vector do not give their stored digest, in chunks that pass their own checksums."""

    def __init__(self, rows: np.ndarray) -> None:
        super().__init__(f"{len(rows)} rows do not match their row digests")
        self.rows = rows


def _off_digests(name: str, rows: np.ndarray) -> list[Damage]:
    """The damage of rows failing their digests, as runs of consecutive rows: which of id, vector or digest is
    wrong cannot be told, so a repair drops the rows and encode recomputes them."""
    return [Damage(name, ROWS, lo, hi, "ids and vectors do not match their row digests (a file from an earlier "
                   "state of the key, or altered)") for lo, hi in row_runs(rows)]


def _root_group(path: Path, mode: str) -> zarr.Group:
    try:
        return zarr.open_group(str(path), mode=mode, use_consolidated=False)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        raise StoreError(f"{path}: no store here; create one with `embedstore encode ... --store {path}`") from None
    except (ValueError, zarr.errors.NodeTypeValidationError) as e:
        raise StoreError(f"{path}: not a readable zarr store ({e})") from None


def _node_metadata(where: str, node_type: str) -> dict:
    """A node's `zarr.json`, parsed here rather than by opening the node through zarr: zarr opens every node
    through its event loop (a thread, several round trips, ~7 ms of CPU for a key's group and arrays), which was a
    tenth of a fresh process's 10k-row gather that reads no data through zarr. zarr's own metadata classes still
    validate what is read."""
    meta = json.loads(Path(where).read_bytes())
    if not isinstance(meta, dict) or meta.get("node_type") != node_type:
        raise ValueError(f"expected the metadata of a zarr {node_type}")
    return meta


class ZarrBackend(RowReads):
    kind = "zarr"
    shared_writes = True  # zarr is process-safe when each process writes whole chunks of its own

    def __init__(self, path: Path) -> None:
        self.path = path
        self._arrays: dict[tuple[str, str], tuple[tuple | None, zarr.Array]] = {}
        self._local: LocalStore | None = None  # the store as zarr reads it, opened with the first array

    def exists(self) -> bool:
        return (self.path / "zarr.json").is_file()

    def list_groups(self) -> dict[str, dict]:
        """Groups are found by listing the directory, and read one by one, so that a group whose metadata
        is nonsense is named in the error rather than failing the listing of all."""
        try:
            GroupMetadata.from_dict(_node_metadata(f"{self.path}/zarr.json", "group"))
        except FileNotFoundError:
            raise StoreError(f"{self.path}: no store here; create one with `embedstore encode ... --store "
                             f"{self.path}`") from None
        except (OSError, TypeError, ValueError) as e:
            raise StoreError(f"{self.path}: not a readable zarr store ({e})") from None
        names = sorted(p.name for p in self.path.iterdir()
                       if (p / "zarr.json").is_file() and not p.name.startswith(STAGING))
        groups = {}
        for name in names:
            try:
                attrs = dict(GroupMetadata.from_dict(_node_metadata(f"{self.path}/{name}/zarr.json", "group"))
                             .attributes)
            except (OSError, TypeError, ValueError, KeyError) as e:
                raise StoreError(f"{self.path}: key {name}: unreadable metadata in {name}/zarr.json ({e}); "
                                 "expected a zarr group whose attributes are a JSON object") from None
            if _whole(self.path, name) or attrs.get("committed_rows") != 0:
                groups[name] = attrs  # (a group missing an array with rows committed is damage: verify says so)
        return groups

    def _array(self, name: str, which: str) -> zarr.Array:
        """Opening an array is parsing its metadata file (`_node_metadata`); a gather reads each array block by
        block, so the array is kept while that file is unchanged (a resize or a replaced store rewrites it)."""
        where = f"{self.path}/{name}/{which}/zarr.json"
        try:
            meta = os.stat(where)
            stamp = (meta.st_ino, meta.st_mtime_ns, meta.st_size)
        except OSError:
            stamp = None
        cached = self._arrays.get((name, which))
        if stamp is None or cached is None or cached[0] != stamp:
            if stamp is None:
                raise StoreError(f"{self.path}: key {name}: array {which} missing ({where}); the store is damaged "
                                 "(`embedstore store verify --repair` drops the key's rows)")
            if self._local is None:
                self._local = LocalStore(self.path, read_only=True)
            try:
                cached = (stamp, zarr.Array.from_dict(StorePath(self._local, f"{name}/{which}"),
                                                      _node_metadata(where, "array")))
            except (OSError, TypeError, ValueError, KeyError, zarr.errors.NodeTypeValidationError) as e:
                raise StoreError(f"{self.path}: key {name}: unreadable array metadata in {where} "
                                 f"({' '.join(str(e).split())[:160]}); the store is damaged") from None
            self._arrays[(name, which)] = cached
        return cached[1]

    def _missing(self, name: str, which: str, arr: zarr.Array, start: int, stop: int) -> Damage | None:
        """The first file (chunk or shard) of rows start..stop that is absent: zarr would read it as zeros. A
        stat per file, no data read."""
        if arr.shape[0] < stop:
            return Damage(name, which, arr.shape[0], stop, f"the array holds only {arr.shape[0]} rows")
        unit = _file_rows(arr)
        what = "shard file missing" if arr.shards else "chunk file missing"
        for lo, hi in chunk_ranges(start, stop, unit):
            if not os.path.isfile(_file_path(self.path, name, which, arr, lo, unit)):
                return Damage(name, which, lo, hi, what)
        return None

    def _arrays_of(self, name: str) -> tuple[str, ...]:
        return ARRAYS + ((DIGESTS,) if _has_digests(self.path, name) else ())

    def check_present(self, name: str, n: int) -> None:
        for which in self._arrays_of(name):
            if damage := self._missing(name, which, self._array(name, which), 0, n):
                raise damage.error(self.path)

    def _read(self, name: str, which: str, start: int, stop: int, rows: np.ndarray | None = None,
              ids: np.ndarray | None = None, compared: bool = False, whole_chunks: bool = False) -> np.ndarray:
        """Rows start..stop of one array (or the sorted `rows` within them), refusing a missing or damaged
        chunk with the rows it holds; never the fill value in place of committed data. With `ids` (vectors
        read sparsely), the rows must also be those ids' rows, else _NotTheirIds. `compared`: the caller
        compares the rows against digests that check them, so sparse chunks are not checked whole. `whole_chunks`:
        every chunk the rows touch is checked whole by its checksum all the same (a dense read: a damaged chunk
        is an error for each of its rows, as when the span was read)."""
        arr = self._array(name, which)
        if rows is not None and len(rows):
            unit = _file_rows(arr)
            for c in runs(rows // unit)[0].tolist():  # rows are sorted (np.unique imports numpy.ma: ~8 ms a process)
                if damage := self._missing(name, which, arr, c * unit, min((c + 1) * unit, stop)):
                    raise damage.error(self.path)
        elif damage := self._missing(name, which, arr, start, stop):
            raise damage.error(self.path)
        try:
            if chunk_files.supported(arr):
                return self._read_direct(name, which, arr, start, stop, rows, ids, compared, whole_chunks)
            out = arr[start:stop] if rows is None else arr.get_orthogonal_selection((rows, slice(None)))
        except (ValueError, OSError) as e:  # a truncated chunk, one failing its crc32c, a file gone since the stat:
            checked_with = ("ids", DIGESTS) if which == "vectors" and _has_digests(self.path, name) else ()
            for array in (which, *checked_with):  # find which, for the message
                for damage in self._damaged_array(name, array, start, stop):
                    raise damage.error(self.path) from None
            if isinstance(e, _RowsOffDigests):  # rows failing their digests in chunks that pass their own checksums
                raise _off_digests(name, e.rows)[0].error(self.path) from None
            raise
        if ids is not None and not np.array_equal(self._read(name, "ids", start, stop, rows), ids):
            raise _NotTheirIds
        return out

    def _read_direct(self, name: str, which: str, arr: zarr.Array, start: int, stop: int, rows: np.ndarray | None,
                     ids: np.ndarray | None, compared: bool, whole_chunks: bool = False) -> np.ndarray:
        """`_read` straight from the files (chunk_files.py). The vectors of a key with row digests are checked
        row by row against them (row_check.py), which proves more than their chunks' checksums could: that each
        row is the key's current one, not zeros or another state's row from a stale file, and, when `ids` are
        given, that it is those ids' row. Other arrays are checked chunk by chunk."""
        selected = np.arange(start, stop) if rows is None else rows
        digested = which == "vectors" and _has_digests(self.path, name)
        sparse_below = 0 if whole_chunks else arr.chunks[0] + 1 if digested \
            else -(-arr.chunks[0] // chunk_files.SPARSE_ROWS) if compared else 0
        out, _ = chunk_files.read_rows(arr, f"{self.path}/{name}/{which}", selected, sparse_below)
        if not digested:
            if ids is not None and not np.array_equal(self._read(name, "ids", start, stop, rows), ids):
                raise _NotTheirIds
            return out
        found = self._read(name, "ids", start, stop, rows, compared=True) if ids is None else ids
        expected = self._read(name, DIGESTS, start, stop, rows, compared=True)
        wrong = row_check.failing_rows(found, out, expected, selected // arr.chunks[0])
        if len(wrong):
            if ids is not None and not np.array_equal(self._read(name, "ids", start, stop, selected[wrong]), ids[wrong]):
                raise _NotTheirIds
            raise _RowsOffDigests(selected[wrong])
        return out

    def read_vectors_of(self, name: str, n: int, rows: np.ndarray, ids: np.ndarray) -> np.ndarray | None:
        """A read of a key with row digests proves each row's id from its digest, without reading ids, and takes
        only the rows asked for from the memory-mapped files, dense or not (read as their span, dense rows cost
        the span's ids twice, its digests and a copy of it: a 1M-row gather of a third faulted in ~3.1 GiB for a
        0.5 GiB result); dense rows still have every chunk they touch checked whole."""
        if not _has_digests(self.path, name):
            return super().read_vectors_of(name, n, rows, ids)
        try:
            return self._read(name, "vectors", 0, n, rows, ids, whole_chunks=self.dense(rows))
        except _NotTheirIds:
            return None

    def _damaged_array(self, name: str, which: str, start: int, stop: int) -> list[Damage]:
        try:
            arr = self._array(name, which)
        except StoreError as e:  # missing or unreadable metadata: every row of the key is lost with the array
            return [Damage(name, which, 0, stop, str(e).split(f"key {name}: ", 1)[-1].split("; the store")[0])]
        if arr.shape[0] < stop:
            return [Damage(name, which, arr.shape[0], stop, f"the array holds only {arr.shape[0]} rows")]
        found = []
        direct, directory = chunk_files.supported(arr), f"{self.path}/{name}/{which}"
        for file_lo, file_hi in chunk_ranges(start, stop, _file_rows(arr)):
            if damage := self._missing(name, which, arr, file_lo, file_hi):
                found.append(damage)
                continue
            for lo, hi in chunk_ranges(max(start, file_lo), file_hi, arr.chunks[0]):
                try:
                    chunk_files.read_rows(arr, directory, np.arange(lo, hi)) if direct else arr[lo:hi]
                except (ValueError, OSError) as e:  # a checksum, a short chunk, a damaged shard index
                    found.append(Damage(name, which, lo, hi, f"chunk unreadable ({e})"))
        return found

    def damaged(self, name: str, n: int) -> list[Damage]:
        """Every chunk that fails to read back, then every row of the other chunks whose id and vector do not
        match its row digest: a stale file holds chunks that pass their checksums."""
        found = [d for which in self._arrays_of(name) for d in self._damaged_array(name, which, 0, n)]
        return found + (self._rows_off_digests(name, n, found) if _has_digests(self.path, name) else [])

    def _rows_off_digests(self, name: str, n: int, found: list[Damage]) -> list[Damage]:
        try:
            arrays = {which: self._array(name, which) for which in (*ARRAYS, DIGESTS)}
        except StoreError:  # an array that cannot be opened: already damage of every row
            return []
        if not all(chunk_files.supported(arr) for arr in arrays.values()):
            return []
        skip = np.zeros(n, bool)
        for d in found:
            skip[d.start:d.stop] = True
        chunk = arrays["vectors"].chunks[0]
        step = max(1, REPAIR_BLOCK_ROWS // chunk) * chunk
        wrong = []
        for lo in range(0, n, step):
            rows = np.flatnonzero(~skip[lo:lo + step]) + lo
            if len(rows):
                ids, vectors, digests = (chunk_files.read_rows(arr, f"{self.path}/{name}/{which}", rows)[0]
                                         for which, arr in arrays.items())
                wrong.append(rows[row_check.failing_rows(ids, vectors, digests, rows // chunk)])
        return _off_digests(name, np.concatenate(wrong)) if wrong else []

    def read_ids(self, name: str, n: int, start: int = 0) -> np.ndarray:
        """Also stats the vectors' chunk files: every reader (encode's "already stored" check, a merge) starts
        from the ids, so a deleted vectors chunk is found there rather than read later as zeros or trusted."""
        if damage := self._missing(name, "vectors", self._array(name, "vectors"), start, n):
            raise damage.error(self.path)
        return self._read(name, "ids", start, n)

    def chunk_rows(self, name: str) -> int:
        return self._array(name, "vectors").chunks[0]

    def index_dir(self, name: str) -> Path:
        return self.path / name

    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())

    def writer(self) -> "ZarrWriter":
        return ZarrWriter(self.path)

    def row_writer(self) -> "ZarrRowWriter":
        return ZarrRowWriter(self.path)


def _remove_temp_files(path: Path) -> None:
    """Delete what writes cut short by a kill left behind. Only the lock holder calls this, before anyone
    writes, so no temp file found here belongs to a write still in progress."""
    for f in path.rglob("*.partial"):
        if chunk_files.TEMP_FILE.fullmatch(f.name):
            f.unlink(missing_ok=True)
    for staged in path.glob(f"{STAGING}*"):
        shutil.rmtree(staged, ignore_errors=True)


def _whole(path: Path, name: str) -> bool:
    """A group holding its ids and vectors: a key (a writer before issue 28 could be killed between creating
    the group and its arrays; one without rows is then replaced by the next writer)."""
    return all(os.path.isfile(f"{path}/{name}/{which}/zarr.json") for which in ARRAYS)


def _openable(group: zarr.Group) -> bool:
    try:
        for which in ARRAYS + ((DIGESTS,) if DIGESTS in group else ()):
            group[which]
    except (TypeError, ValueError, KeyError, zarr.errors.NodeTypeValidationError):
        return False
    return True


def _has_digests(path: Path, name: str) -> bool:
    return os.path.isfile(f"{path}/{name}/{DIGESTS}/zarr.json")


def _write_rows(group: zarr.Group, start: int, ids: np.ndarray, vectors: np.ndarray) -> None:
    """Vectors (and their digests) first, ids last: a row's id on disk then means its vector is there too (a
    distributed encode commits rows once it sees their ids)."""
    stored = group["vectors"]
    _write_array(stored, start, vectors)
    if _has_digests(Path(group.store_path.store.root), group.path):
        _write_array(group[DIGESTS], start, chunk_files.row_digests(ids, np.asarray(vectors, stored.dtype)))
    _write_array(group["ids"], start, ids)


def _write_array(arr: zarr.Array, start: int, data: np.ndarray) -> None:
    """The files the rows cover whole are written directly (chunk_files.write_file: no read, no merge); the
    rows at either end that share a file with other rows go through zarr."""
    stop, unit = start + len(data), _file_rows(arr)
    first, last = -(-start // unit) * unit, stop // unit * unit
    if last <= first or not chunk_files.supported(arr):
        arr[start:stop] = data
        return
    if start < first:
        arr[start:first] = data[:first - start]
    directory = f"{arr.store_path.store.root}/{arr.path}"
    for row in range(first, last, unit):
        chunk_files.write_file(arr, directory, row, data[row - start:row - start + unit])
    if last < stop:
        arr[last:stop] = data[last - start:]


class ZarrWriter:
    """Holds the store's writer lock for its lifetime; see the module docstring for the commit order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = store_lock(path)

    def __enter__(self) -> "ZarrWriter":
        self.path.mkdir(parents=True, exist_ok=True)
        remove_dead_temps(self.path.parent)  # what killed writers of any store or artifact here left
        self.lock.acquire()
        try:
            _remove_temp_files(self.path)
            self.root = zarr.open_group(str(self.path), mode="a", use_consolidated=False)
        except BaseException:  # Ctrl-C too: the lock goes with the failed writer
            self.lock.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.lock.release()

    def ensure_group(self, name: str, attrs: dict, dim: int, dtype: str, chunk_rows: int) -> dict:
        """A new key is built aside (`.creating-<name>`, which readers skip) and renamed into place whole, so a
        kill at any step leaves no key or a whole one. A group without its arrays and without committed rows
        (left by a writer before issue 28) is replaced."""
        target = self.path / name
        if (target / "zarr.json").is_file():
            existing = dict(self.root[name].attrs)
            if _whole(self.path, name) or existing.get("committed_rows") != 0:
                return existing
            shutil.rmtree(target)
        staging = self.path / f"{STAGING}{name}"
        shutil.rmtree(staging, ignore_errors=True)
        group = zarr.open_group(str(staging), mode="w", attributes={**attrs, "committed_rows": 0},
                                use_consolidated=False)
        for which, width, kind in (("vectors", dim, dtype), ("ids", ID_BYTES, "uint8"), (DIGESTS, 1, "uint32")):
            group.create_array(which, shape=(0, width), chunks=(chunk_rows, width),
                               shards=(chunk_rows * SHARD_CHUNKS, width) if SHARD_CHUNKS > 1 else None,
                               dtype=kind, compressors=[Crc32cCodec()], fill_value=0)
        os.rename(staging, target)
        return dict(self.root[name].attrs)

    def write(self, name: str, start: int, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.reserve(name, start + len(ids))
        _write_rows(self.root[name], start, ids, vectors)

    def reserve(self, name: str, rows: int) -> None:
        """Grow the arrays (in whole files) to hold `rows` rows. Only the lock holder changes array metadata;
        once space is reserved, other processes can fill it with `ZarrRowWriter` without touching metadata."""
        group = self.root[name]
        for arr in (group[which] for which in ARRAYS + ((DIGESTS,) if DIGESTS in group else ())):
            if arr.shape[0] < rows:
                unit = _file_rows(arr)
                arr.resize((-(-rows // unit) * unit, arr.shape[1]))

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
        """The unit of writing (a shard, or a chunk of an unsharded key): processes writing one key concurrently
        must each own whole ones."""
        return _file_rows(self.root[name]["vectors"])

    def rebuild_digests(self, name: str, committed_rows: int, damage: list[Damage]) -> list[Damage]:
        """Recompute the digest chunks that fail their checksum while the ids and vectors of their rows pass
        theirs, instead of dropping intact rows (up to 1,024 re-encodes per 4 KB chunk); returns the damage so
        mended. A chunk holding an all-zero id or vector is left as damage: that is how a row never written
        reads, and a digest recomputed from it would vouch for it."""
        group = self.root[name]
        if DIGESTS not in group:
            return []
        elsewhere = np.zeros(committed_rows, bool)
        for d in damage:
            if d.array != DIGESTS:
                elsewhere[d.start:d.stop] = True
        mendable = [d for d in damage if d.array == DIGESTS and not elsewhere[d.start:d.stop].any()]
        if not mendable:
            return []
        self._clear_damaged(name, group[DIGESTS], mendable, committed_rows)
        mended = []
        for d in mendable:
            ids, vectors = (group[which][d.start:d.stop] for which in ARRAYS)
            if not (ids == 0).all(axis=1).any() and not (vectors == 0).all(axis=1).any():
                group[DIGESTS][d.start:d.stop] = chunk_files.row_digests(ids, vectors)
                mended.append(d)
        return mended

    def drop_rows(self, name: str, committed_rows: int, damage: list[Damage]) -> int:
        """Move the undamaged rows after the first damaged one down over it, in place.

        Order, so that a kill at any moment leaves only correct (id, vector) pairs committed: first lower
        `committed_rows` to the first damaged row and bump `rows_generation` in the same write (rows beyond it
        are then uncommitted and may be overwritten; a killed repair merely loses them, and encode recomputes
        them; every saved id index is stale from that write on), clear the damaged chunks (so that rewriting
        part of one does not decode it), move the kept rows down block by block (each block is read before
        anything overwrites it: kept rows only ever move to lower positions), and commit the new count last."""
        bad = np.zeros(committed_rows, bool)
        for d in damage:
            bad[d.start:d.stop] = True
        if not bad.any():
            return committed_rows
        first = int(np.argmax(bad))
        group = self.root[name]
        generation = int(group.attrs.get("rows_generation", 0)) + 1
        if not _openable(group):  # an array missing or unreadable: the key goes whole, the next writer remakes it
            self.commit(name, 0, {"rows_generation": generation})
            shutil.rmtree(self.path / name)
            return 0
        keep = np.flatnonzero(~bad[first:]) + first
        if len(keep) > REPAIR_BLOCK_ROWS:
            warnings.warn(f"{self.path}: key {name}: moving {len(keep):,} kept rows down over the damaged ones; if "
                          "this repair is killed before it ends, those rows are lost too (encode recomputes them)",
                          stacklevel=3)
        self.commit(name, first, {"rows_generation": generation})
        discard(self.path / name)
        for which in ARRAYS + ((DIGESTS,) if DIGESTS in group else ()):
            self._clear_damaged(name, group[which], [d for d in damage if d.array == which], committed_rows)
        at = first
        for block in np.array_split(keep, max(1, -(-len(keep) // REPAIR_BLOCK_ROWS))):
            if len(block):
                ids, vectors = (group[w].get_orthogonal_selection((block, slice(None))) for w in ARRAYS)
                _write_rows(group, at, ids, vectors)
                at += len(block)
        self.commit(name, at, {})
        return at

    def _clear_damaged(self, name: str, arr: zarr.Array, damage: list[Damage], committed_rows: int) -> None:
        """Delete a file all of whose committed rows are damaged (a missing or unreadable shard, a chunk of an
        unsharded key); in a shard with some good chunks, overwrite just the damaged chunks with zeros (zarr
        rewrites a shard without decoding the chunks a write does not touch)."""
        bad = np.zeros(committed_rows, bool)
        for d in damage:
            bad[d.start:d.stop] = True
        unit, chunk = _file_rows(arr), arr.chunks[0]
        for lo, hi in chunk_ranges(0, committed_rows, unit):
            if bad[lo:hi].all():
                Path(_file_path(self.path, name, arr.basename, arr, lo, unit)).unlink(missing_ok=True)
            else:
                for start in np.flatnonzero(bad[lo:hi:chunk]) * chunk + lo:
                    arr[start:start + chunk] = 0  # a whole chunk: written without reading the damaged one


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
