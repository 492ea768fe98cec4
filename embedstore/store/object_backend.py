"""A store on object storage (S3 and S3-compatible servers, or any fsspec URL): `--store s3://bucket/prefix/s.zarr`.

Object stores have no rename, no flock and no partial overwrite, so the local backends' commit (write chunks,
then advance a `committed_rows` attribute in place, under a flock) cannot be used. Here rows are committed by
*creating* objects that never change afterwards (docs/contracts.md, "Store on object storage", has the whole
protocol and why it is safe):

- A writer writes each batch of rows as one immutable **segment** object under a name no other writer uses
  (`<group>/segments/<start>-<stop>-<writer token>`): ids, vectors and each row's crc32c (the local backends'
  row digest), one PUT, so a segment is there whole or not at all.
- Then it **commits** the rows by creating the **manifest** `<group>/manifests/<start>.json` (start row, stop
  row, segment name, the segment's crc32c and size) with a conditional create (`If-None-Match: *`): of two
  writers committing rows from the same start, exactly one succeeds; the other is refused.
- Readers trust only manifests: a key's committed rows are the chain of manifests from row 0, each starting
  where the previous stopped. A segment without a manifest (a writer killed between the two PUTs) or a manifest
  beyond a gap (a rank ahead of a slower one) is invisible, and the next writer of those rows ignores it.
- A **lease** object (`writer.lease`: owner, host, pid, expiry) keeps a second writer from encoding the same
  texts meanwhile; it is created conditionally, renewed with `If-Match` on its ETag by a background thread,
  and taken over only once expired (or, on the same host, once its process is gone). Correctness never depends
  on the lease: manifests are what excludes double commits; the lease only spares wasted work.

Reads fetch whole segments (kept in a small cache: they never change), check the segment's crc32c against its
manifest and every row taken against its digest, so a damaged or swapped object is an error, never data.
"""
from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import google_crc32c
import numpy as np

from embedstore.base.errors import StoreError
from embedstore.base.optional import require
from embedstore.base.provenance import hostname, read_provenance
from embedstore.data.hashing import ID_BYTES
from .backend import Damage, RowReads
from .chunk_files import row_digests

FORMAT = {"format": "embedstore-objects", "version": 1}
MARKER = "embedstore.json"  # at the root: what `exists` looks for
LEASE = "writer.lease"
LEASE_SECONDS = float(os.environ.get("EMBEDSTORE_LEASE_SECONDS", "120"))
"""How long a writer's lease lasts without renewal; renewed every third of it. A writer killed without
releasing it blocks other hosts for at most this long (on its own host, a dead pid frees it at once)."""
SEGMENT_CACHE = 16  # segments kept in memory by a reader: a gather walks rows in order, segment by segment


def is_url(path: object) -> bool:
    """A store location with a scheme (`s3://`, `gs://`, `memory://`, `file://`): served by this backend."""
    return "://" in str(path)


@dataclass(frozen=True)
class Manifest:
    start: int
    stop: int
    segment: str
    crc32c: int
    size: int
    writer: str

    def to_bytes(self) -> bytes:
        return json.dumps(self.__dict__, sort_keys=True).encode()

    @classmethod
    def parse(cls, where: str, data: bytes) -> "Manifest":
        try:
            raw = json.loads(data)
            manifest = cls(**{k: raw[k] for k in cls.__dataclass_fields__})
        except (ValueError, KeyError, TypeError):
            raise StoreError(f"{where}: not a manifest of this store; the store is damaged") from None
        if not (0 <= manifest.start < manifest.stop) or not isinstance(manifest.segment, str):
            raise StoreError(f"{where}: manifest rows {manifest.start}..{manifest.stop}; the store is damaged")
        return manifest


class Objects:
    """The few object operations the protocol needs, over an fsspec filesystem (s3fs for s3:// URLs)."""

    def __init__(self, url: str) -> None:
        fsspec = require("fsspec", "s3", f"a store at {url}")
        if url.startswith(("s3://", "s3a://")):
            require("s3fs", "s3", f"a store at {url}")
        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url)

    def _p(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def read(self, rel: str) -> bytes | None:
        try:
            return self.fs.cat_file(self._p(rel))
        except FileNotFoundError:
            return None

    def put(self, rel: str, data: bytes) -> None:
        self.fs.pipe_file(self._p(rel), data)

    def create(self, rel: str, data: bytes) -> bool:
        """Write `rel` only if no object has that name (`If-None-Match: *` on S3); False if one had."""
        return self._conditional(rel, data, mode="create")

    def etag(self, rel: str) -> str | None:
        try:
            self.fs.invalidate_cache(self._p(rel))
            return self.fs.info(self._p(rel)).get("ETag")
        except FileNotFoundError:
            return None

    def replace(self, rel: str, data: bytes, etag: str) -> bool:
        """Overwrite `rel` only if it still has `etag` (`If-Match`); False if another writer changed it."""
        return self._conditional(rel, data, IfMatch=etag)

    def _conditional(self, rel: str, data: bytes, **condition: str) -> bool:
        """A PUT under a condition; False when the server answers 412 (s3fs raises FileExistsError for a failed
        If-None-Match, an OSError naming the pre-condition for If-Match) or the object is gone."""
        try:
            self.fs.pipe_file(self._p(rel), data, **condition)
        except (FileExistsError, FileNotFoundError):
            return False
        except OSError as e:
            if "pre-condition" in str(e).lower() or "precondition" in str(e).lower():
                return False
            raise
        return True

    def names(self, rel: str) -> dict[str, tuple]:
        """Object names directly under `rel`, each with what changes when the object is replaced (ETag, size,
        time); listed afresh, since listing caches would hide new manifests."""
        path = self._p(rel).rstrip("/")
        self.fs.invalidate_cache(path)
        try:
            entries = self.fs.ls(path, detail=True)
        except FileNotFoundError:
            return {}
        return {e["name"].rstrip("/").rsplit("/", 1)[-1]: (e.get("ETag"), e.get("size"), str(e.get("LastModified",
                e.get("mtime")))) for e in entries}

    def delete(self, rel: str) -> None:
        try:
            self.fs.rm_file(self._p(rel))
        except FileNotFoundError:
            pass

    def size(self) -> int:
        self.fs.invalidate_cache(self.root)
        try:
            return int(self.fs.du(self.root))
        except FileNotFoundError:
            return 0


def _segment_bytes(ids: np.ndarray, vectors: np.ndarray) -> bytes:
    ids = np.ascontiguousarray(ids, np.uint8)
    body = np.ascontiguousarray(vectors, vectors.dtype.newbyteorder("<"))
    return ids.tobytes() + body.tobytes() + row_digests(ids, body).tobytes()


class ObjectBackend(RowReads):
    kind = "objects"
    shared_writes = True  # each rank commits its own segments; manifests keep them apart

    def __init__(self, url: str) -> None:
        self.path = url
        self.objects = Objects(url)
        self._segments: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._attrs: dict[str, dict] = {}
        self._manifests: dict[tuple[str, str, tuple], Manifest] = {}  # by (group, object, its version)

    # ---- what readers trust: the manifest chain
    def manifests(self, name: str) -> list[Manifest]:
        """Every manifest of a group, by start row (chain or not)."""
        found = []
        for file, version in self.objects.names(f"{name}/manifests").items():
            cached = self._manifests.get((name, file, version))
            if cached is None and file.endswith(".json"):
                data = self.objects.read(f"{name}/manifests/{file}")
                if data is None:  # deleted since the listing
                    continue
                cached = self._manifests[(name, file, version)] = Manifest.parse(
                    f"{self.path}/{name}/manifests/{file}", data)
            if cached is not None:
                found.append(cached)
        return sorted(found, key=lambda m: m.start)

    def chain(self, name: str) -> list[Manifest]:
        """The committed segments: manifests from row 0, each starting where the previous one stopped."""
        by_start = {m.start: m for m in self.manifests(name)}
        out, at = [], 0
        while at in by_start:
            out.append(by_start[at])
            at = by_start[at].stop
        return out

    def exists(self) -> bool:
        return self.objects.read(MARKER) is not None

    def _group_attrs(self, name: str) -> dict:
        if name not in self._attrs:  # written once, when the group is created: safe to keep
            data = self.objects.read(f"{name}/group.json")
            if data is None:
                raise StoreError(f"{self.path}: key {name}: group.json missing; the store is damaged")
            try:
                self._attrs[name] = json.loads(data)
            except ValueError:
                raise StoreError(f"{self.path}: key {name}: group.json is not JSON; the store is damaged") from None
        return self._attrs[name]

    def list_groups(self) -> dict[str, dict]:
        groups = {}
        for name in self.objects.names(""):
            if name in (MARKER, LEASE) or (name not in self._attrs and self.objects.read(f"{name}/group.json") is None):
                continue
            chain = self.chain(name)
            groups[name] = {**self._group_attrs(name), "committed_rows": chain[-1].stop if chain else 0}
        return groups

    def chunk_rows(self, name: str) -> int:
        return int(self._group_attrs(name).get("chunk_rows", 1024))

    def index_dir(self, name: str) -> None:
        return None

    def size_bytes(self) -> int:
        return self.objects.size()

    # ---- reading segments, checked
    def _load(self, name: str, m: Manifest) -> tuple[np.ndarray, np.ndarray]:
        """ids and vectors of one committed segment, refused unless the object matches its manifest and every
        row its digest. Raises the Damage of the segment's rows otherwise."""
        key = f"{name}/{m.segment}"
        if key in self._segments:
            self._segments.move_to_end(key)
            return self._segments[key]
        if damage := self._check(name, m):
            raise damage[0].error(self.path)
        return self._segments[key]

    def _check(self, name: str, m: Manifest) -> list[Damage]:
        """Load and check a segment (cached when good); the damage found, for both arrays, otherwise."""
        def damaged(reason: str) -> list[Damage]:
            return [Damage(name, which, m.start, m.stop, reason) for which in ("ids", "vectors")]

        data = self.objects.read(f"{name}/segments/{m.segment}")
        if data is None:
            return damaged("segment object missing")
        if len(data) != m.size or google_crc32c.value(data) != m.crc32c:
            return damaged("segment object fails its manifest's crc32c")
        attrs = self._group_attrs(name)
        n, dim, dtype = m.stop - m.start, int(attrs["dim"]), np.dtype(attrs["dtype"]).newbyteorder("<")
        if len(data) != n * (ID_BYTES + dim * dtype.itemsize + 4):
            return damaged(f"segment of {len(data)} bytes for {n} rows of {dim} {dtype.name}")
        buf = np.frombuffer(data, np.uint8)
        ids = buf[:n * ID_BYTES].reshape(n, ID_BYTES)
        vectors = buf[n * ID_BYTES:len(data) - 4 * n].view(dtype).reshape(n, dim)
        digests = buf[len(data) - 4 * n:].view("<u4").reshape(n, 1)
        wrong = np.flatnonzero(row_digests(ids, vectors) != digests)
        if len(wrong):
            return damaged(f"row {m.start + int(wrong[0])} fails its digest")
        self._segments[f"{name}/{m.segment}"] = (ids, vectors.astype(vectors.dtype.newbyteorder("=")))
        while len(self._segments) > SEGMENT_CACHE:
            self._segments.popitem(last=False)
        return []

    def _read(self, name: str, which: str, start: int, stop: int, rows: np.ndarray | None = None) -> np.ndarray:
        chain = self.chain(name)
        if (chain[-1].stop if chain else 0) < stop:
            raise Damage(name, which, chain[-1].stop if chain else 0, stop, "rows not committed").error(self.path)
        wanted = np.arange(start, stop) if rows is None else np.asarray(rows, np.int64)
        attrs = self._group_attrs(name)
        width, dtype = (ID_BYTES, np.uint8) if which == "ids" else (int(attrs["dim"]), np.dtype(attrs["dtype"]))
        out = np.empty((len(wanted), width), dtype)
        starts = np.array([m.start for m in chain], np.int64)
        owner = np.searchsorted(starts, wanted, side="right") - 1
        for i in np.unique(owner):
            m = chain[int(i)]
            ids, vectors = self._load(name, m)
            mine = owner == i
            out[mine] = (ids if which == "ids" else vectors)[wanted[mine] - m.start]
        return out

    def check_present(self, name: str, n: int) -> None:
        present = set(self.objects.names(f"{name}/segments"))
        for m in self.chain(name):
            if m.start < n and m.segment not in present:
                raise Damage(name, "vectors", m.start, m.stop, "segment object missing").error(self.path)

    def read_ids(self, name: str, n: int, start: int = 0) -> np.ndarray:
        return self._read(name, "ids", start, n)

    def damaged(self, name: str, n: int) -> list[Damage]:
        self._segments.clear()  # verify reads everything afresh
        found = [d for m in self.chain(name) if m.start < n for d in self._check(name, m)]
        self._segments.clear()
        return found

    def writer(self) -> "ObjectWriter":
        return ObjectWriter(self)

    def row_writer(self) -> "ObjectRowWriter":
        return ObjectRowWriter(self)

    # ---- writing (used by ObjectWriter and ObjectRowWriter)
    def commit_segment(self, name: str, start: int, ids: np.ndarray, vectors: np.ndarray, token: str) -> None:
        """Write rows start.. as a segment, then commit them by creating their manifest; refused (StoreError) if
        another writer committed rows from `start` first."""
        stop = start + len(ids)
        segment = f"{start:016d}-{stop:016d}-{token}"
        data = _segment_bytes(ids, vectors)
        self.objects.put(f"{name}/segments/{segment}", data)
        manifest = Manifest(start, stop, segment, google_crc32c.value(data), len(data), token)
        if not self.objects.create(f"{name}/manifests/{start:016d}.json", manifest.to_bytes()):
            self.objects.delete(f"{name}/segments/{segment}")
            raise StoreError(f"{self.path}: key {name}: rows from {start} were committed by another writer "
                             "meanwhile; nothing of this writer's was committed there; run the encode again to "
                             "add what is still missing")


class _Lease:
    """The writer's lease object: taken by a conditional create, renewed by If-Match, released by its owner."""

    def __init__(self, objects: Objects, token: str) -> None:
        self.objects, self.token = objects, token
        self.etag: str | None = None
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _body(self) -> bytes:
        return json.dumps({"owner": self.token, "hostname": hostname(), "pid": os.getpid(),
                           "expires": time.time() + LEASE_SECONDS}).encode()

    def acquire(self) -> None:
        if not self.objects.create(LEASE, self._body()):
            etag, data = self.objects.etag(LEASE), self.objects.read(LEASE)
            holder = _parse_lease(data)
            if etag is None or not _expired(holder) or not self.objects.replace(LEASE, self._body(), etag):
                raise StoreError(f"{self.objects.url}: another writer ({holder.get('hostname')} pid {holder.get('pid')}) "
                                 f"holds this store's lease until "
                                 f"{time.strftime('%H:%M:%S', time.localtime(holder.get('expires', 0)))}; wait "
                                 "for it to finish (a killed writer's lease expires by then)")
        self.etag = self.objects.etag(LEASE)
        self._thread = threading.Thread(target=self._renew, name="embedstore-lease", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(LEASE_SECONDS / 3):
            if self.etag is None or not self.objects.replace(LEASE, self._body(), self.etag):
                self.lost.set()
                return
            self.etag = self.objects.etag(LEASE)

    def check(self) -> None:
        if self.lost.is_set():
            raise StoreError(f"{self.objects.url}: this writer's lease was taken over (it could not renew it in "
                             f"{LEASE_SECONDS:.0f} s); rows committed so far stay, run the encode again")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if not self.lost.is_set() and _parse_lease(self.objects.read(LEASE)).get("owner") == self.token:
            self.objects.delete(LEASE)


def _parse_lease(data: bytes | None) -> dict[str, Any]:
    """The lease's holder under the provenance names (a lease written before them said `host`: still read, since
    a writer of the older version may hold a live lease)."""
    try:
        holder = json.loads(data or b"{}")
    except ValueError:
        return {}
    return read_provenance(holder) if isinstance(holder, dict) else {}


def _expired(holder: dict[str, Any]) -> bool:
    """Past its expiry, or held by a process of this host that no longer exists (killed: free it at once)."""
    if not isinstance(holder.get("expires"), (int, float)) or holder["expires"] < time.time():
        return True
    if holder.get("hostname") == hostname() and isinstance(holder.get("pid"), int):
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
    return False


class ObjectWriter:
    """The writer of an object store: holds the lease between `__enter__` and `__exit__`."""

    def __init__(self, backend: ObjectBackend) -> None:
        self.backend, self.objects = backend, backend.objects
        self.token = uuid.uuid4().hex[:16]
        self.lease = _Lease(self.objects, self.token)

    def __enter__(self) -> "ObjectWriter":
        self.objects.create(MARKER, json.dumps(FORMAT).encode())
        self.lease.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.lease.release()

    def ensure_group(self, name: str, attrs: dict, dim: int, dtype: str, chunk_rows: int) -> dict:
        body = {**attrs, "dim": dim, "dtype": dtype, "chunk_rows": chunk_rows}
        self.objects.create(f"{name}/group.json", json.dumps(body).encode())  # the first creator's attrs stand
        return self.backend.list_groups()[name]

    def write(self, name: str, start: int, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.lease.check()
        self.backend.commit_segment(name, start, ids, vectors, self.token)

    def commit(self, name: str, committed_rows: int, attrs: dict) -> None:
        """Rows are committed by their manifests as they are written: check that the chain reaches this far."""
        self.lease.check()
        chain = self.backend.chain(name)
        if (chain[-1].stop if chain else 0) < committed_rows:
            raise StoreError(f"{self.backend.path}: key {name}: rows below {committed_rows} are not all committed "
                             f"(the manifests reach row {chain[-1].stop if chain else 0}); a writer's rows are "
                             "missing")

    def chunk_rows(self, name: str) -> int:
        return self.backend.chunk_rows(name)

    def rebuild_digests(self, name: str, committed_rows: int, damage: list[Damage]) -> list[Damage]:
        """Nothing to mend alone: a segment's row digests travel in the same object as its rows, under one
        crc32c, so damage there is damage of the segment."""
        return []

    def drop_rows(self, name: str, committed_rows: int, damage: list[Damage]) -> int:
        """Uncommit every row from the first damaged one on, by deleting their manifests last first (so a kill
        meanwhile leaves a shorter chain, never a gap with rows after it); encode recomputes them all."""
        if not damage:
            return committed_rows
        first = min(d.start for d in damage)
        for m in reversed(self.backend.chain(name)):
            if m.stop > first:
                self.objects.delete(f"{name}/manifests/{m.start:016d}.json")
        return self.backend.chain(name)[-1].stop if self.backend.chain(name) else 0

    # shared writes: a distributed encode's ranks commit their own segments
    def reserve(self, name: str, rows: int) -> None:
        """Nothing to grow: segments are objects of their own."""

    def read_ids(self, name: str, start: int, stop: int) -> np.ndarray:
        """ids of rows start..stop committed by any manifest, on the chain or not (zeros where none is yet)."""
        out = np.zeros((stop - start, ID_BYTES), np.uint8)
        for m in self.backend.manifests(name):
            lo, hi = max(m.start, start), min(m.stop, stop)
            if lo < hi:
                ids, _ = self.backend._load(name, m)
                out[lo - start:hi - start] = ids[lo - m.start:hi - m.start]
        return out

    def clear_ids(self, name: str, start: int) -> None:
        """Delete manifests off the chain from `start` on (left by a killed run), so rows there are written anew."""
        for m in self.backend.manifests(name):
            if m.start >= start:
                self.objects.delete(f"{name}/manifests/{m.start:016d}.json")
                self.objects.delete(f"{name}/segments/{m.segment}")


class ObjectRowWriter:
    """A distributed encode's other ranks: commit their own rows' segments, without the lease."""

    def __init__(self, backend: ObjectBackend) -> None:
        self.backend, self.token = backend, uuid.uuid4().hex[:16]

    def write(self, name: str, start: int, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.backend.commit_segment(name, start, ids, vectors, self.token)
