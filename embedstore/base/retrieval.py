"""Pair retrieval on row-aligned vectors: P@k by nearest neighbour (cosine) and by CSLS, in bounded memory.

One implementation serves the aligners' collapse check (estimators), `analysis.retrieval_report` and the sweep's
diagnostics, so one quantity is one number wherever it is printed. It lives in `base` because estimators may not
import analysis, and it needs nothing but numpy. Callers validate their arrays (finite float32 matrices of
equal shape); this module only computes.

Nearest-neighbour retrieval under-reports alignment when a few "hub" vectors are near everything; CSLS
(Conneau et al. 2018, MUSE) discounts hubs, so `retrieval` gives both.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from embedstore.base.errors import ConfigError

#: Query rows per similarity block: bounds memory at chunk × n floats whatever the number of rows.
CHUNK = 1024


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), so a dot product is a cosine."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_mean(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """For each unit row of `a`, the mean cosine of its k nearest rows of `b`: how much of a hub it is for `b`."""
    out = np.empty(len(a), dtype=np.float64)
    for start in range(0, len(a), CHUNK):
        sims = a[start:start + CHUNK] @ b.T
        out[start:start + CHUNK] = np.partition(sims, -k, axis=1)[:, -k:].mean(axis=1)
    return out


def true_ranks(queries: np.ndarray, keys: np.ndarray, hubness: np.ndarray | None = None) -> np.ndarray:
    """For each unit query i, how many keys score strictly higher than its own pair, key i (0 = retrieved first).

    Score is cosine, or with `hubness` (each key's mean similarity to its k nearest queries) the CSLS score
    2·cos(q, k) - hubness(k); CSLS's query term is the same for every key of a query, so it cannot change ranks.
    Only strictly higher scores count, so an exact tie goes to the pair: ties come from duplicate texts (some
    Korean strings translate several English ones), and retrieving an identical translation is a correct retrieval.
    """
    ranks = np.empty(len(queries), dtype=np.int64)
    for start in range(0, len(queries), CHUNK):
        scores = queries[start:start + CHUNK] @ keys.T
        if hubness is not None:
            scores = 2 * scores - hubness[None, :]
        rows = np.arange(len(scores))
        own = scores[rows, start + rows]
        ranks[start:start + len(scores)] = (scores > own[:, None]).sum(axis=1)
    return ranks


def nn_p_at_1(queries: np.ndarray, keys: np.ndarray) -> float:
    """Fraction of rows whose cosine-nearest key is their own pair (row i ↔ row i), over all rows."""
    return float(np.mean(true_ranks(unit_rows(queries), unit_rows(keys)) < 1))


def check_options(ks: Sequence[int], csls_k: int, n_rows: int | None = None) -> None:
    """P@k cut-offs must be whole numbers from 1 to the rows searched (when known: callers check before they
    encode anything, when the rows are not known yet), and CSLS needs at least one neighbour."""
    top = n_rows if n_rows is not None else float("inf")
    bad = [kk for kk in ks if not isinstance(kk, (int, np.integer)) or not 1 <= kk <= top]
    if bad or not ks:
        rows = f" to the {n_rows} held-out rows" if n_rows is not None else " >= 1"
        raise ConfigError(f"retrieval ks {list(ks)} must be whole numbers from 1{rows}")
    if csls_k < 1:
        raise ConfigError(f"csls_k {csls_k} must be at least 1")


def retrieval(queries: np.ndarray, keys: np.ndarray, ks: Sequence[int] = (1, 5), csls_k: int = 10) -> dict[str, Any]:
    """P@k of finding row i's pair among all rows, both ways, by nearest neighbour (cosine) and by CSLS.

    `forward` retrieves keys for each query (e.g. aligned English → Korean), `backward` queries for each key.
    `csls_k` is capped at the number of rows; the value used is reported.
    """
    n = len(queries)
    check_options(ks, csls_k, n)
    csls_used = min(int(csls_k), n)
    q, k = unit_rows(queries), unit_rows(keys)
    hub_q, hub_k = knn_mean(q, k, csls_used), knn_mean(k, q, csls_used)

    def p_at(ranks: np.ndarray) -> dict[str, float]:
        return {f"p@{kk}": float(np.mean(ranks < kk)) for kk in ks}

    return {
        "rows": n,
        "csls_k": csls_used,
        "forward": {"nn": p_at(true_ranks(q, k)), "csls": p_at(true_ranks(q, k, hub_k))},
        "backward": {"nn": p_at(true_ranks(k, q)), "csls": p_at(true_ranks(k, q, hub_q))},
    }
