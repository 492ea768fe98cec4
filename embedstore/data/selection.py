"""Which rows an experiment trains on: data-size options, seeded subsamples, pairs that overlap task rows.

Data-size ablations ("1k", "15k", "all") and the paper's data-share ablation are both row selections; keeping
them here makes every experiment select rows the same reproducible way.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from embedstore.base.errors import ConfigError, InputError
from embedstore.data.hashing import ID_BYTES, pack_ids

_SIZE = re.compile(r"(?P<number>\d+(?:\.\d+)?)(?P<k>k?)", re.IGNORECASE)
_ACCEPTED = "a positive whole number (20000), thousands with k (15k, 1.5k) or 'all'"

Ids = np.ndarray | Sequence[bytes]


def parse_size(size: str | int) -> int | None:
    """Parse a data-size option; None means all rows."""
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        if size > 0:
            return int(size)
        raise ConfigError(f"size {size!r} is not understood; use {_ACCEPTED}")
    text = str(size).strip().replace("_", "")
    if text.lower() == "all":
        return None
    match = _SIZE.fullmatch(text)
    if match:
        value = float(match["number"]) * (1000 if match["k"] else 1)
        if value == int(value) and value > 0 and (match["k"] or "." not in match["number"]):
            return int(value)
    raise ConfigError(f"size {size!r} is not understood; use {_ACCEPTED}")


def subsample(n_available: int, size: int | None, seed: int, what: str = "the data") -> np.ndarray:
    """Sorted row indices of a seeded subsample of `size` rows (all rows when `size` is None).

    Taking a prefix of one seeded permutation makes smaller samples subsets of larger ones under the same
    seed, so a data-size ablation only ever adds rows; sorting keeps the file's order.
    """
    if size is None:
        return np.arange(n_available, dtype=np.int64)
    if size > n_available:
        raise ConfigError(f"asked for {size:,} rows but {what} holds {n_available:,}; ask for at most "
                          f"{n_available:,} (or all)")
    order = np.random.default_rng(seed).permutation(n_available)[:size]
    return np.sort(order).astype(np.int64)


def _as_id_rows(ids: Ids, name: str) -> np.ndarray:
    """Ids as one ID_BYTES-wide void scalar per row, so numpy can compare whole hashes at once."""
    if isinstance(ids, np.ndarray):
        arr = ids
    else:
        items = list(ids)
        if not all(isinstance(b, bytes) and len(b) == ID_BYTES for b in items):
            raise InputError(f"{name} must be {ID_BYTES}-byte text ids (bytes), "
                             "as made by embedstore.data.hashing.text_ids")
        arr = pack_ids(items)
    if arr.dtype != np.uint8 or arr.ndim != 2 or arr.shape[1] != ID_BYTES:
        raise InputError(f"{name} must be an (n, {ID_BYTES}) uint8 array of text ids, got {arr.dtype} {arr.shape}")
    return np.ascontiguousarray(arr).view(np.dtype((np.void, ID_BYTES))).ravel()


def overlap_mask(pair_ids: Ids, task_ids: Ids) -> np.ndarray:
    """True for each aligner pair row whose text id also occurs among the task rows."""
    return np.isin(_as_id_rows(pair_ids, "pair_ids"), _as_id_rows(task_ids, "task_ids"))
