"""Which rows of a pair file an aligner is fitted on, and with which arguments it is built: one rule for the
steps (`train-aligner`), the sweep's cells and the analyses, so a seed or a seed dictionary means the same in each.

A paired aligner gets a seeded sample of `size` pairs. An aligner that needs no pairs (`paired = False`) must
never see a pairing, and with a pair file it could: so the `size` sampled rows are split into two disjoint
halves, the source texts come from one half and the target texts from the other. No source text's translation
is then among the target texts at all, which is stricter than unsupervised mapping papers' comparable corpora
(same domain, unordered) and cannot leak pairs. A seeded aligner (one that takes `seed_pairs`) gets `size` true
pairs first, then the rest of the file split the same way as monolingual text of each side.

`aligner_for_run` builds the aligner those rows are fitted on: the run's seed reaches every aligner with
randomness of its own (the training loop's init and shuffles, RCSLS's mini-batches, self-learning's samples), so
the seed a record names is the seed the fit used; a seeded aligner is told how many leading rows are pairs.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np

from embedstore.base.errors import ConfigError
from embedstore.data.selection import subsample
from embedstore.estimators.aligners.base import Aligner
from embedstore.estimators.training import DEFAULT_RECIPE, Recipe


@dataclass(frozen=True)
class FitRows:
    """Row indices of the source side and of the target side, and how many leading rows are true pairs."""

    source: np.ndarray
    target: np.ndarray
    n_pairs: int


def is_seeded(cls: type[Aligner]) -> bool:
    """An aligner that takes a seed dictionary as the first `seed_pairs` rows of its inputs."""
    return "seed_pairs" in inspect.signature(cls.__init__).parameters


def takes_seed(cls: type[Aligner]) -> bool:
    """An aligner with randomness of its own, which the run's seed drives (an aligner without it is a closed form
    of its rows: the seed reaches it only through which rows it gets)."""
    return "seed" in inspect.signature(cls.__init__).parameters


def aligner_for_run(cls: type[Aligner], n_pairs: int, *, seed: int, reverse: bool = False,
                    recipe: str | Recipe = DEFAULT_RECIPE, progress: bool = False) -> Aligner:
    """The aligner a run fits on `fit_rows`' rows, of which the first `n_pairs` are true pairs (`FitRows.n_pairs`).

    The one place the arguments are assembled: `seed` to every aligner that takes one, the recipe (and the
    progress bar) to those the training loop fits, `seed_pairs` to seeded ones (without it a seeded aligner
    would take every row, unpaired texts included, for a pair)."""
    params: dict = {"reverse": reverse}
    if takes_seed(cls):
        params["seed"] = seed
    if cls.trains:
        params.update(recipe=recipe, progress=progress)
    if is_seeded(cls):
        params["seed_pairs"] = n_pairs
    return cls(**params)


def uses_no_pairs(cls: type[Aligner]) -> bool:
    """An aligner whose pair budget is zero whatever rows it is given: it sees only unpaired texts."""
    return not cls.paired and not is_seeded(cls)


def fit_rows(cls: type[Aligner] | None, n_rows: int, size: int | None, seed: int, what: str) -> FitRows:
    """The rows `cls` is fitted on out of `n_rows` pair rows; `size` is the pair budget (all rows when None).
    `cls` None: true pairs for a method that aligns the encoder itself (`adapt` align and SimCSE cells)."""
    if cls is None or cls.paired:
        pick = subsample(n_rows, size, seed, what)
        return FitRows(pick, pick, len(pick))
    if size is not None and size > n_rows:
        raise ConfigError(f"asked for {size:,} rows but {what} holds {n_rows:,}; ask for at most {n_rows:,} "
                          "(or all)")
    order = np.random.default_rng([seed, 14]).permutation(n_rows)
    if is_seeded(cls):
        n_pairs = n_rows if size is None else size
        pairs, rest = order[:n_pairs], order[n_pairs:]
    else:
        n_pairs, pairs, rest = 0, order[:0], order[: n_rows if size is None else size]
    half = len(rest) // 2
    if n_pairs == 0 and half == 0:
        raise ConfigError(f"{what}: {cls.name} needs at least 2 rows to give each side its own texts")
    return FitRows(np.concatenate([pairs, rest[:half]]), np.concatenate([pairs, rest[half:2 * half]]), n_pairs)
