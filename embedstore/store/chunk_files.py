"""Reads rows of the zarr arrays this package writes straight from their files, checking every chunk's crc32c,
and writes whole files of them the same way.

Why not zarr's own read: measured on a 1M x 384 float16 key, zarr 3.1 spends most of a read in per-chunk
machinery (an event loop round trip, a buffer copy per codec): a third of the rows through
`get_orthogonal_selection` took 17 s, where a memory-mapped `.npy` took 1.1 s. The layout here is fixed and
simple (zarr's specification, not a format of ours): a chunk file is the row-major little-endian bytes followed
by their crc32c; a shard file is such chunks followed by an index of (offset, length) uint64 pairs per chunk
and the index's own crc32c. Files are memory-mapped and each chunk's checksum is computed over the mapped
bytes, so nothing is copied but the rows asked for.

Why write whole files here too: zarr's sharded write of 1M x 384 float16 rows took 4.1 s of a 4.5 s build
(a memory-mapped `.npy` 1.8 s, ids sorted included). A file that a write covers entirely needs no reading
and no merging, only its bytes, checksums and index laid out as above, written to a temporary file and renamed
into place as zarr does (the same `.partial` name, so a killed write is cleaned up the same way). Rows that
fill a file only in part still go through zarr, which merges them with the rows already there.

Why rows carry their own checksum too (the `row_digests` array of keys created since 2026-12-04, one crc32c of
each row's id and vector bytes together): a chunk's crc32c can only be checked over the whole chunk, so 10k random
rows of a 1M-row key touched nearly every 1,024-row chunk and checked 770 MB to return 15 MB (0.10 s of crc32c in
a 0.2 s gather, the memory-mapped anchor 0.09 s in all). A sparse read (under 1/SPARSE_ROWS of a chunk's rows)
leaves the rows it takes to the caller, who checks each against its digest instead: that catches the same damage
in the bytes it returns, and since the digest covers the id too, a reader that knows which id a row should hold
proves that as well without reading the id (at 10M rows, reading ids and digests chunk-checked cost 0.1 s of a
0.27 s gather of 10k rows). Since issue 28 every read of such a key's vectors is checked by the digests (a stale
file's chunks pass their own checksums), a chunk at a time (row_check.py); ids and digests check their chunks.

Only arrays of exactly that layout are read or written here (`supported`); anything else (older stores without a
checksum, other codecs) goes through zarr. A chunk that fails its checksum or has the wrong length raises
ValueError, as zarr's decoders do, so the caller's damage report (which re-reads through zarr) is the same
whichever reader met the damage.
"""
from __future__ import annotations

import contextlib
import mmap
import os
import re
import uuid

import google_crc32c
import numpy as np
import zarr
from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec

from .backend import runs

SPARSE_ROWS = 16  # a read taking fewer than chunk_rows / SPARSE_ROWS rows of a chunk checks them by their digests
TEMP_FILE = re.compile(r".*\.[0-9a-f]{32}\.partial")
"""The name of a file being written, by zarr (>= 3.1.3: `<name>.<uuid4 hex>.partial`, renamed into place when
complete) and by `write_file`, which follows zarr rather than base.atomic's policy so that one cleanup removes
what a killed write of either left, and so that no fsync is added per file (zarr does none: a store is made
safe against a killed process, which loses nothing the page cache holds, not against a power cut)."""
ABSENT = 2**64 - 1  # a shard index entry for a chunk that was never written (read as the fill value, 0)


def _checked_bytes_codecs(codecs: tuple) -> bool:
    return (len(codecs) == 2 and isinstance(codecs[0], BytesCodec) and isinstance(codecs[1], Crc32cCodec)
            and (codecs[0].endian is None or codecs[0].endian.value == "little"))


def supported(arr: zarr.Array) -> bool:
    """Arrays written by this package since checksums: [bytes, crc32c], sharded or not, 2-d, fill value 0."""
    codecs = arr.metadata.codecs
    if len(arr.shape) != 2 or arr.metadata.fill_value != 0 or arr.dtype.byteorder == ">":
        return False
    if len(codecs) == 1 and isinstance(codecs[0], ShardingCodec):
        shard = codecs[0]
        return (_checked_bytes_codecs(tuple(shard.codecs)) and _checked_bytes_codecs(tuple(shard.index_codecs))
                and shard.index_location.value == "end")
    return _checked_bytes_codecs(tuple(codecs))


def _crc_ok(body: np.ndarray, stored: np.ndarray) -> bool:
    return google_crc32c.value(body) == int.from_bytes(stored.tobytes(), "little")


class _File:
    """One chunk or shard file, memory-mapped (unmapped when the last array over it goes), its chunks checked
    as rows are taken from them."""

    def __init__(self, path: str, chunks_per_file: int, sharded: bool) -> None:
        with open(path, "rb") as f:
            self.bytes = np.frombuffer(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ), np.uint8)  # empty: ValueError
        if not sharded:
            self.spans = np.array([[0, len(self.bytes)]], np.uint64)
            return
        size = 16 * chunks_per_file
        if len(self.bytes) < size + 4 or not _crc_ok(self.bytes[-size - 4:-4], self.bytes[-4:]):
            raise ValueError(f"{path}: shard index fails its checksum")
        self.spans = self.bytes[-size - 4:-4].view("<u8").reshape(-1, 2)

    def rows(self, chunks: np.ndarray, local: np.ndarray, shape: tuple[int, int], dtype: np.dtype,
             sparse_below: int, out: np.ndarray) -> np.ndarray:
        """Rows `local` of chunks `chunks` (sorted; zeros for a chunk never written), written into `out` (the
        caller's block of rows, not an array per file copied again), and which of them are left unchecked for the
        caller: those of chunks with fewer than `sparse_below` rows taken. Every other chunk touched is checked
        whole. Vectorised over the file: a random read touches thousands of chunks, and a Python step per chunk
        cost more than the reading (0.46 s of a 0.62 s gather of 10k rows of 10M)."""
        want = shape[0] * shape[1] * dtype.itemsize
        used, starts, position = runs(chunks)
        counts = np.diff(np.append(starts, len(chunks)))
        offsets, lengths = self.spans[used, 0], self.spans[used, 1]
        present = ~((offsets == ABSENT) & (lengths == ABSENT))
        wrong = present & ((lengths != want + 4) | (offsets > len(self.bytes) - np.minimum(lengths, len(self.bytes))))
        if wrong.any():
            raise ValueError(f"chunk of {int(lengths[wrong][0])} bytes; expected {want + 4}")
        sparse = counts < sparse_below
        whole = offsets[present & ~sparse].astype(np.int64)
        if len(whole):
            stored = self.bytes[(whole + want)[:, None] + np.arange(4)].view("<u4").ravel()
            if [google_crc32c.value(self.bytes[o:o + want]) for o in whole.tolist()] != stored.tolist():
                raise ValueError("Stored and computed checksum do not match")
        live = present[position]
        row_bytes = shape[1] * dtype.itemsize
        starts = offsets[position[live]].astype(np.int64) + local[live].astype(np.int64) * row_bytes
        windows = np.lib.stride_tricks.sliding_window_view(self.bytes, row_bytes)
        if live.all():
            out[:] = windows[starts].view(dtype)
        else:
            out[:] = 0
            out[live] = windows[starts].view(dtype)
        return sparse[position]


def row_digests(ids: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """crc32c of each row's id bytes followed by its bytes as stored (little-endian), shaped (n, 1) like the
    `row_digests` array."""
    body = np.ascontiguousarray(rows, dtype=rows.dtype.newbyteorder("<")).reshape(len(rows), -1).view(np.uint8)
    both = np.concatenate([np.asarray(ids, np.uint8).reshape(len(rows), -1), body], axis=1).reshape(-1)
    size = both.size // max(len(rows), 1)
    return np.array([google_crc32c.value(both[i:i + size]) for i in range(0, both.size, size)],
                    "<u4").reshape(-1, 1)


def read_rows(arr: zarr.Array, directory: str, rows: np.ndarray, sparse_below: int = 0
              ) -> tuple[np.ndarray, np.ndarray]:
    """The sorted `rows` of a `supported` array whose files are under `directory` (the array's folder), and a
    mask of those left for the caller to check by their digests: rows of chunks that give fewer than
    `sparse_below` rows to the read. Every other chunk touched is checked whole."""
    chunk_rows, width = arr.chunks
    shards, dtype = arr.shards, arr.dtype  # zarr computes these on every access
    per_file = (shards or arr.chunks)[0] // chunk_rows
    encode = arr.metadata.chunk_key_encoding.encode_chunk_key
    out, unchecked = np.empty((len(rows), width), dtype), np.zeros(len(rows), bool)
    chunk_of_row = rows // chunk_rows
    files, starts, _ = runs(chunk_of_row // per_file)
    for f, a, b in zip(files.tolist(), starts.tolist(), [*starts[1:].tolist(), len(rows)]):
        file = _File(f"{directory}/{encode((f, 0))}", per_file, shards is not None)
        unchecked[a:b] = file.rows(chunk_of_row[a:b] - f * per_file, rows[a:b] % chunk_rows,
                                   (chunk_rows, width), dtype, sparse_below, out[a:b])
    return out, unchecked


def write_file(arr: zarr.Array, directory: str, start: int, rows: np.ndarray) -> None:
    """Write the file of a `supported` array that begins at row `start` (a multiple of its rows per file) with
    exactly that many `rows`, atomically: a reader sees the old file or the new one, never a mix."""
    chunk_rows, width = arr.chunks
    sharded = arr.shards is not None
    per_file = (arr.shards or arr.chunks)[0] // chunk_rows
    body = np.ascontiguousarray(rows, dtype=arr.dtype.newbyteorder("<")).view(np.uint8)
    chunks = body.reshape(per_file, chunk_rows * width * arr.dtype.itemsize)
    size = chunks.shape[1] + 4
    out = np.empty(per_file * size + (16 * per_file + 4 if sharded else 0), np.uint8)
    laid = out[:per_file * size].reshape(per_file, size)
    laid[:, :-4] = chunks
    laid[:, -4:] = np.array([google_crc32c.value(c) for c in chunks], "<u4").view(np.uint8).reshape(-1, 4)
    if sharded:
        index = np.empty((per_file, 2), "<u8")
        index[:, 0] = np.arange(per_file, dtype=np.uint64) * size
        index[:, 1] = size
        out[per_file * size:-4] = index.reshape(-1).view(np.uint8)
        out[-4:] = np.array([google_crc32c.value(index.tobytes())], "<u4").view(np.uint8)
    path = f"{directory}/{arr.metadata.chunk_key_encoding.encode_chunk_key((start // (per_file * chunk_rows), 0))}"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temp = f"{path}.{uuid.uuid4().hex}.partial"  # zarr's own temporary name: see TEMP_FILE
    try:
        with open(temp, "wb") as f:
            f.write(out.data)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
