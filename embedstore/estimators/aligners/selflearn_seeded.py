"""Self-learning Procrustes from a small seed dictionary that it grows from mined pairs."""
from __future__ import annotations

import torch

from embedstore.base.errors import InputError
from embedstore.estimators.aligners.selflearning import SelfLearningAligner


class SelfLearnSeededAligner(SelfLearningAligner):
    """`fit(X_src, Y_tgt)` where the first `seed_pairs` rows of both are translation pairs (the seed dictionary,
    typically 100–500) and the remaining rows are unrelated monolingual texts of each language.

    Each round fits Procrustes on the seed pairs plus the mutual CSLS neighbours the previous map found (VecMap's
    semi-supervised mode); the seed pairs stay in every round. `seed_pairs=None` takes every row as a pair
    (then X_src and Y_tgt must have the same number of rows).
    """

    name = "selflearn_seeded"
    order = 61

    def __init__(self, seed_pairs: int | None = None, iterations: int = 8, induce_rows: int = 4000,
                 csls_k: int = 10, seed: int = 0, reverse: bool = False) -> None:
        self.seed_pairs = seed_pairs
        self.iterations = iterations
        self.induce_rows = induce_rows
        self.csls_k = csls_k
        self.seed = seed
        self.reverse = reverse

    def _n_seed(self, n_source: int, n_target: int) -> int:
        if self.seed_pairs is None:
            if n_source != n_target:
                raise InputError(f"seed_pairs=None takes every row as a pair, but X_src has {n_source} rows and "
                                 f"Y_tgt {n_target}; give seed_pairs")
            return n_source
        if not 1 <= self.seed_pairs <= min(n_source, n_target):
            raise InputError(f"seed_pairs {self.seed_pairs} must be from 1 to the rows of each side "
                             f"({n_source} and {n_target})")
        return int(self.seed_pairs)

    def _seed_dictionary(self, x: torch.Tensor, z: torch.Tensor, n_seed: int) -> dict[str, tuple]:
        empty = torch.zeros(0, dtype=torch.int64)
        return {"seed": (empty, empty)}
