"""Which row of a key holds a text id: a sorted numpy array searched with `np.searchsorted`.

A Python `dict[bytes, int]` needed about 200 bytes per row (gigabytes at ten million rows) and was rebuilt on
every `embed` call. Here an id is two big-endian uint64 halves, so the index of n rows is three uint64 arrays
(sorted high halves, low halves, rows): 24 bytes per row, sorted once in C.

The index of a zarr key is also saved beside the key (`<key>/ids.index-g<generation>-<rows>.npy`) once it is
large, so a new process maps it instead of reading and sorting every id. It stays valid because committed rows
below a count never change except by a repair, and a repair bumps the key's `rows_generation` attribute in the
same atomic write that lowers `committed_rows` (see `ZarrWriter.drop_rows`): an index of another generation is
never used. A saved index of fewer rows than are committed is extended with the ids of the rows after it. The
file is written through `base.atomic` (appears whole or not at all, so `kill -9` at any moment leaves either no
file or a complete one); a file that does not load as three uint64 rows is ignored and rebuilt. `Store.get_ids`
additionally checks that the rows it returns hold the requested ids, so even a saved index damaged on disk can
never hand out another text's vector.
"""
from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedstore.base.atomic import atomic_path
from embedstore.data.hashing import ID_BYTES

SAVE_MIN_ROWS = 1 << 16  # below this, reading and sorting the ids takes milliseconds: no file is written
_FILE = re.compile(r"ids\.index-g(\d+)-(\d+)\.npy")


def _halves(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, ID_BYTES) uint8 ids as two native uint64 arrays whose (high, low) order is the ids' byte order."""
    both = np.ascontiguousarray(ids, dtype=np.uint8).reshape(-1, ID_BYTES).view(">u8")
    return both[:, 0].astype(np.uint64), both[:, 1].astype(np.uint64)


def _sorted(hi: np.ndarray, lo: np.ndarray, rows: np.ndarray, stable: bool) -> "IdIndex":
    """Sort by the high half alone (one C sort); only if two ids share a high half (about 1e-6 at ten million
    random ids) is the slower two-key sort needed to order them by their low half."""
    order = np.argsort(hi, kind="stable" if stable else None)
    hi_sorted = hi[order]
    if len(hi) > 1 and (hi_sorted[1:] == hi_sorted[:-1]).any():
        order = np.lexsort((lo, hi))
        hi_sorted = hi[order]
    return IdIndex(hi_sorted, lo[order], rows[order])


@dataclass(frozen=True)
class IdIndex:
    """Ids sorted by (hi, lo), and the row of each."""

    hi: np.ndarray
    lo: np.ndarray
    rows: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)

    @classmethod
    def build(cls, ids: np.ndarray, start: int = 0) -> "IdIndex":
        """The index of `ids`, which are the rows start, start + 1, ..."""
        hi, lo = _halves(ids)
        return _sorted(hi, lo, np.arange(start, start + len(hi), dtype=np.int64), stable=False)

    def extended(self, ids: np.ndarray, start: int) -> "IdIndex":
        """This index plus the rows start.. holding `ids`: two sorted runs, which a stable sort merges in
        about linear time."""
        new = IdIndex.build(ids, start)
        return _sorted(np.concatenate([self.hi, new.hi]), np.concatenate([self.lo, new.lo]),
                       np.concatenate([self.rows, new.rows]), stable=True)

    def find(self, ids: np.ndarray) -> np.ndarray:
        """The row holding each id, or -1."""
        qh, ql = _halves(ids)
        out = np.full(len(qh), -1, np.int64)
        if not len(self) or not len(qh):
            return out
        pos = np.minimum(np.searchsorted(self.hi, qh), len(self) - 1)
        same_hi = self.hi[pos] == qh
        hit = same_hi & (self.lo[pos] == ql)
        out[hit] = self.rows[pos[hit]]
        for i in np.flatnonzero(same_hi & ~hit):  # another id shares the high half: search its run by low half
            first, stop = int(pos[i]), int(np.searchsorted(self.hi, qh[i], side="right"))
            j = first + int(np.searchsorted(self.lo[first:stop], ql[i]))
            if j < stop and self.lo[j] == ql[i]:
                out[i] = self.rows[j]
        return out


def saved(directory: Path, generation: int, rows: int) -> tuple[IdIndex, int] | None:
    """The largest saved index of this generation covering at most `rows` rows, memory-mapped, and its row
    count; None if there is none that loads."""
    found = sorted(((int(m[2]), p) for p in _listing(directory)
                    if (m := _FILE.fullmatch(p.name)) and int(m[1]) == generation and int(m[2]) <= rows),
                   reverse=True)
    for count, path in found:
        try:
            table = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError):
            continue  # unreadable: rebuilt from the ids, and replaced when saved again
        if table.dtype == np.uint64 and table.shape == (3, count):
            return IdIndex(table[0], table[1], table[2].view(np.int64)), count
    return None


def save(directory: Path, generation: int, index: IdIndex) -> None:
    """Write the index for the next process, and remove the ones it supersedes. Best effort: a reader may lack
    write permission, and the index is only a cache of what the ids already say."""
    target = directory / f"ids.index-g{generation}-{len(index)}.npy"
    with contextlib.suppress(OSError):
        with atomic_path(target) as tmp:
            table = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint64, shape=(3, len(index)))
            table[0], table[1], table[2] = index.hi, index.lo, index.rows.view(np.uint64)
            table.flush()
            del table
        discard(directory, keep=target)


def discard(directory: Path, keep: Path | None = None) -> None:
    """Remove saved indexes (all, or all but `keep`): a repair makes every one of them stale."""
    for p in _listing(directory):
        if _FILE.fullmatch(p.name) and p != keep:
            p.unlink(missing_ok=True)


def _listing(directory: Path) -> list[Path]:
    try:
        return list(directory.iterdir())
    except OSError:
        return []
