"""Pair retrieval on row-aligned vectors: P@k by nearest neighbour (cosine) and by CSLS, in bounded memory.

One implementation serves the aligners' collapse check (estimators), `analysis.retrieval_report` and the sweep's
diagnostics, so one quantity is one number wherever it is printed. It lives in `base` because estimators may not
import analysis, and it needs nothing but numpy. Callers validate their arrays (finite float32 matrices of
equal shape); this module only computes.

Nearest-neighbour retrieval under-reports alignment when a few "hub" vectors are near everything; CSLS
(Conneau et al. 2018, MUSE) discounts hubs, so `retrieval` gives both. `mutual_best` pairs two unrelated sets by
the same hub-discounted scores (CSLS, or LASER's ratio margin): self-learning aligners induce their dictionaries
with it and `analysis.mining` mines bitext with it.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from embedstore.base.errors import ConfigError

#: Query rows per similarity block: bounds memory at chunk × n floats whatever the number of rows.
CHUNK = 1024


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), so a dot product is a cosine."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _hubness_and_diagonal(a: np.ndarray, b: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each unit row of `a`, the mean cosine of its k nearest rows of `b`, and the same for each row of `b`
    among `a` (how much of a hub each vector is for the other side; k at most either side's rows), plus cos(a_i, b_i) for the rows both sides have, all from one pass over the similarity blocks
    (each column's best k so far are carried from block to block), so CSLS and mining pay for one n × n
    product here, not two. The diagonal is taken from the very blocks `_ranks_both_ways` computes again (the same product
    of the same rows), so it equals their entries to the bit: ranks compare with it exactly, ties included."""
    hub_a, diagonal = np.empty(len(a), dtype=np.float64), np.empty(min(len(a), len(b)), dtype=a.dtype)
    top_b: np.ndarray | None = None
    for start in range(0, len(a), CHUNK):
        sims = a[start:start + CHUNK] @ b.T
        hub_a[start:start + CHUNK] = np.partition(sims, -k, axis=1)[:, -k:].mean(axis=1, dtype=np.float64)
        rows = np.arange(max(0, min(len(sims), len(b) - start)))
        diagonal[start + rows] = sims[rows, start + rows]
        columns = sims.T if top_b is None else np.concatenate([top_b, sims.T], axis=1)
        top_b = np.partition(columns, -k, axis=1)[:, -k:] if columns.shape[1] > k else np.ascontiguousarray(columns)
    assert top_b is not None
    return hub_a, top_b.mean(axis=1, dtype=np.float64), diagonal


def true_ranks(queries: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """For each unit query i, how many keys are strictly closer (cosine) than its own pair, key i (0 = retrieved
    first). Only strictly higher scores count, so an exact tie goes to the pair: ties come from duplicate texts
    (some Korean strings translate several English ones), and retrieving an identical translation is a correct
    retrieval. (`retrieval` counts the same way, both directions and CSLS too, in `_ranks_both_ways`.)"""
    ranks = np.empty(len(queries), dtype=np.int64)
    for start in range(0, len(queries), CHUNK):
        scores = queries[start:start + CHUNK] @ keys.T
        rows = np.arange(len(scores))
        ranks[start:start + len(scores)] = (scores > scores[rows, start + rows][:, None]).sum(axis=1)
    return ranks


def _ranks_both_ways(q: np.ndarray, k: np.ndarray, hub_q: np.ndarray, hub_k: np.ndarray,
                     own: np.ndarray) -> tuple[np.ndarray, ...]:
    """`true_ranks` of each q among the keys and of each k among the queries, by cosine and by CSLS (score
    2·cos(q, k) - hubness of the side searched; the searcher's own term cannot change ranks), from one pass over
    the blocks of q·kᵀ: a block's rows give the forward ranks, its columns add to the backward counts. `own` is the
    diagonal of those same blocks (`_hubness_and_diagonal`), so every comparison is exact."""
    n = len(q)
    fwd, fwd_csls = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    bwd, bwd_csls = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    own_csls_bwd = 2 * own - hub_q  # key j's own score among the queries: 2·cos(k_j, q_j) - hubness(q_j)
    for start in range(0, n, CHUNK):
        sims = q[start:start + CHUNK] @ k.T
        block = slice(start, start + len(sims))
        fwd[block] = (sims > own[block, None]).sum(axis=1)
        bwd += (sims > own[None, :]).sum(axis=0)
        csls = 2 * sims - hub_k[None, :]
        fwd_csls[block] = (csls > (2 * own[block] - hub_k[block])[:, None]).sum(axis=1)
        csls = 2 * sims - hub_q[block, None]
        bwd_csls += (csls > own_csls_bwd[None, :]).sum(axis=0)
    return fwd, fwd_csls, bwd, bwd_csls


def nn_p_at_1(queries: np.ndarray, keys: np.ndarray) -> float:
    """Fraction of rows whose cosine-nearest key is their own pair (row i ↔ row i), over all rows."""
    return float(np.mean(true_ranks(unit_rows(queries), unit_rows(keys)) < 1))


Score = Literal["csls", "margin"]


@dataclass(frozen=True)
class Mutual:
    """Row/column pairs that are each other's best by the score, that score for each pair, and the mean of every
    row's best score (self-learning's objective)."""

    source: np.ndarray
    target: np.ndarray
    score: np.ndarray
    mean_best: float


def mutual_best(a: np.ndarray, b: np.ndarray, k: int, score: Score = "csls") -> Mutual:
    """Pairs (i, j) of unit rows where b_j is a_i's best candidate and a_i is b_j's, by `score` with hubness over
    each side's k nearest rows on the other (k capped at the rows): "csls" 2·cos − hub(a_i) − hub(b_j) (Conneau
    et al. 2018), "margin" cos / ((hub(a_i) + hub(b_j)) / 2) (Artetxe & Schwenk 2019). Ties go to the lower
    index; memory is bounded by a block of rows."""
    k = min(int(k), len(a), len(b))
    hub_a, hub_b, _ = _hubness_and_diagonal(a, b, k)
    forward = np.empty(len(a), dtype=np.int64)
    best_of_row = np.empty(len(a), dtype=np.float64)
    backward = np.zeros(len(b), dtype=np.int64)
    best_of_column = np.full(len(b), -np.inf)
    for start in range(0, len(a), CHUNK):
        sims = a[start:start + CHUNK] @ b.T
        hubs = hub_a[start:start + CHUNK, None]
        scores = 2 * sims - hubs - hub_b[None, :] if score == "csls" else sims / ((hubs + hub_b[None, :]) / 2)
        forward[start:start + CHUNK] = scores.argmax(axis=1)
        best_of_row[start:start + CHUNK] = scores.max(axis=1)
        best, arg = scores.max(axis=0), scores.argmax(axis=0)
        better = best > best_of_column
        backward[better], best_of_column[better] = arg[better] + start, best[better]
    rows = np.arange(len(a))
    keep = backward[forward] == rows
    return Mutual(rows[keep], forward[keep], best_of_row[keep], float(best_of_row.mean()) if len(a) else 0.0)


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
    hub_q, hub_k, own = _hubness_and_diagonal(q, k, csls_used)
    fwd, fwd_csls, bwd, bwd_csls = _ranks_both_ways(q, k, hub_q, hub_k, own)

    def p_at(ranks: np.ndarray) -> dict[str, float]:
        return {f"p@{kk}": float(np.mean(ranks < kk)) for kk in ks}

    return {
        "rows": n,
        "csls_k": csls_used,
        "forward": {"nn": p_at(fwd), "csls": p_at(fwd_csls)},
        "backward": {"nn": p_at(bwd), "csls": p_at(bwd_csls)},
    }
