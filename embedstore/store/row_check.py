"""Check many rows against their `row_digests` at the cost of one crc32c per chunk, not one per row.

Why: a chunk's own crc32c proves its bytes are the ones written into that file, not that the file is the key's
current one. A shard restored from a backup, or copied before the key grew, holds valid chunks whose rows are
zeros or another state's rows; only each row's digest (the crc32c of its id and vector, written with it) tells.
Digesting every row of a dense read is a Python-level call per row (about 0.5 s per million rows); this module
checks a chunk's rows with one crc32c over the chunk's vector bytes as they lie in memory (no copy) plus a few
numpy table look-ups per row, using that crc32c is affine over GF(2):

- `G(M) = crc(M) ^ crc(zeros(len(M)))` is linear in the bits of M, and `G(A + B) = Z_len(B)(G(A)) ^ G(B)`, where
  `Z_k` (the register advanced over k zero bytes) is a linear map of 32-bit values, applied as four 256-entry
  tables;
- a row's digest `d = crc(id + v)` gives `G(v) = d ^ crc(zeros(16 + V)) ^ Z_V(G(id))`, and `Z_V(G(id))` is
  sixteen table look-ups of the id's bytes;
- the chunk's vectors `v_0 + ... + v_m-1` then must have `G = XOR_i Z_V^(m-1-i)(G(v_i))`, which a pairwise tree
  (log2 m levels, each one table application over all chunks at once) computes.

The check is exact but for a crc collision (2^-32 per chunk): a row out of place, a zero row, another state's
row all change the chunk's crc. Only the chunks that fail are then digested row by row, to name their rows.
"""
from __future__ import annotations

import functools

import google_crc32c
import numpy as np

from embedstore.data.hashing import ID_BYTES

from . import chunk_files
from .backend import runs

_ONES = 0xFFFFFFFF


@functools.lru_cache(maxsize=64)
def _zeros_crc(length: int) -> int:
    return google_crc32c.value(bytes(length))


def _byte_tables(images: np.ndarray) -> np.ndarray:
    """(len(images) // 8, 256) tables of a linear map of bytes into 32-bit values, given the images of each
    byte's 8 single bits: entry [p, b] is the XOR of the images of the bits set in byte b at position p."""
    bits = ((np.arange(256)[:, None] >> np.arange(8)) & 1).astype(bool)  # (256, 8)
    per_byte = np.asarray(images, np.uint32).reshape(-1, 1, 8)
    return np.bitwise_xor.reduce(np.where(bits[None], per_byte, np.uint32(0)), axis=2).astype(np.uint32)


def _apply(tables: np.ndarray, x: np.ndarray) -> np.ndarray:
    return (tables[0][x & 0xFF] ^ tables[1][(x >> 8) & 0xFF] ^ tables[2][(x >> 16) & 0xFF]
            ^ tables[3][x >> 24])


_BASIS = np.left_shift(np.uint32(1), np.arange(32, dtype=np.uint32))  # the 32 single bits of a crc register


@functools.lru_cache(maxsize=64)
def _advance_tables(nbytes: int) -> np.ndarray:
    """The tables of Z_nbytes. Why composed: a read's tree advances by width, 2 width, 4 width... bytes, and
    the register advanced over k zeros twice is the register advanced over 2k, so each level is 64 table
    look-ups of the level below instead of 32 crc32c runs over up to a chunk of zeros (cached per process, but
    every gather runs in a fresh process)."""
    if nbytes % 2 == 0 and nbytes > 64:
        half = _advance_tables(nbytes // 2)
        return _byte_tables(_apply(half, _apply(half, _BASIS)))
    ones = np.uint32(_ONES)
    return _byte_tables(np.array([google_crc32c.extend(int(x ^ ones), bytes(nbytes)) ^ _ONES for x in _BASIS],
                                 np.uint32))


@functools.lru_cache(maxsize=8)
def _id_tables(width: int) -> np.ndarray:
    """(ID_BYTES, 256): Z_width(G(id)) as the XOR of one entry per id byte. G is linear, so the images of the
    ID_BYTES * 8 single bits of an id (one crc32c each) give every entry."""
    zeros = _zeros_crc(ID_BYTES)
    images = np.zeros(ID_BYTES * 8, np.uint32)
    for p in range(ID_BYTES):
        for k in range(8):
            message = bytearray(ID_BYTES)
            message[p] = 1 << k
            images[8 * p + k] = google_crc32c.value(bytes(message)) ^ zeros
    return _byte_tables(_apply(_advance_tables(width), images))


def failing_rows(ids: np.ndarray, vectors: np.ndarray, digests: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Positions of the rows whose id and vector do not give their stored digest. `groups` (sorted, one value per
    row, e.g. the chunk of each row) says which rows are checked together: one crc32c over each group's vector
    bytes; a group that fails is digested row by row."""
    n = len(vectors)
    if not n:
        return np.zeros(0, np.int64)
    body = np.ascontiguousarray(vectors, dtype=vectors.dtype.newbyteorder("<")).reshape(n, -1).view(np.uint8)
    width = body.shape[1]
    id_bytes = np.ascontiguousarray(ids, np.uint8).reshape(n, ID_BYTES)
    stored = np.ascontiguousarray(digests, np.uint32).reshape(n)
    id_part = np.bitwise_xor.reduce(_id_tables(width)[np.arange(ID_BYTES), id_bytes], axis=1)
    own = stored ^ np.uint32(_zeros_crc(ID_BYTES + width)) ^ id_part  # G(v_i) as the digests say
    _, starts, _ = runs(np.asarray(groups))
    stops = np.append(starts[1:], n)
    size = 1 << int(max(stops - starts) - 1).bit_length()
    tree = np.zeros((len(starts), size), np.uint32)  # each group's values right-aligned: leading zeros add nothing
    counts = stops - starts
    position = np.arange(n) - np.repeat(starts, counts) + np.repeat(size - counts, counts)
    tree[np.repeat(np.arange(len(starts)), counts), position] = own
    span = width
    while tree.shape[1] > 1:
        tree = _apply(_advance_tables(span), tree[:, 0::2]) ^ tree[:, 1::2]
        span *= 2
    failing = [np.arange(a, b) for g, (a, b) in enumerate(zip(starts.tolist(), stops.tolist()))
               if google_crc32c.value(body[a:b]) ^ _zeros_crc((b - a) * width) != int(tree[g, 0])]
    if not failing:
        return np.zeros(0, np.int64)
    suspects = np.concatenate(failing)
    return suspects[chunk_files.row_digests(id_bytes[suspects], body[suspects]).ravel() != stored[suspects]]

