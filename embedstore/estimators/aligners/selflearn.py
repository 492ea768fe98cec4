"""Unsupervised self-learning Procrustes: no translation pairs at all."""
from __future__ import annotations

import torch

from embedstore.estimators.aligners.selflearning import SelfLearningAligner, mutual_pairs, similarity_init


class SelfLearnAligner(SelfLearningAligner):
    """Monolingual `fit`: X_src and Y_tgt are unrelated sets of texts of each language (any sizes).

    Two starts are refined and the one whose final dictionary has the higher mean CSLS (the loop's own
    objective, no labels) is kept: VecMap's similarity-distribution start, which assumes nothing about the two
    spaces, and the identity start (mutual CSLS neighbours of the raw vectors), which a multilingual encoder
    already half-aligns. `diagnostics()["init"]` says which won.
    """

    name = "selflearn"
    order = 60

    def __init__(self, iterations: int = 8, induce_rows: int = 4000, init_rows: int = 2000, csls_k: int = 10,
                 seed: int = 0, reverse: bool = False) -> None:
        self.iterations = iterations
        self.induce_rows = induce_rows
        self.init_rows = init_rows
        self.csls_k = csls_k
        self.seed = seed
        self.reverse = reverse

    def _seed_dictionary(self, x: torch.Tensor, z: torch.Tensor, n_seed: int) -> dict[str, tuple]:
        m = self.init_rows
        src, tgt, _ = mutual_pairs(x, z, self.csls_k)
        return {"similarity": similarity_init(x[:m], z[:m], self.csls_k), "identity": (src, tgt)}
