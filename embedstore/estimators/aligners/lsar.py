"""LSAR: low-rank language subspace from the languages' means (Xie et al. 2022), no parallel data."""
from __future__ import annotations

import torch

from embedstore.estimators.aligners.subspace import SubspaceSwapAligner, orthonormal


class LSARAligner(SubspaceSwapAligner):
    """The language subspace is spanned by the per-language means after removing their common mean.

    Rank rule (the paper's): the rank of the centred matrix of language means, at most (languages − 1). With
    two languages that is one direction, μ_src − μ_tgt; unlike mean shift, only the coordinate along it moves,
    so the rest of the source vector (its content) is left as it is. Monolingual `fit`: X_src and Y_tgt are
    any sets of texts of each language.
    """

    name = "lsar"
    order = 55

    def __init__(self, reverse: bool = False) -> None:
        self.reverse = reverse

    def _basis(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        means = torch.stack([source.mean(dim=0), target.mean(dim=0)])
        centred = means - means.mean(dim=0)
        return orthonormal(centred.T)
