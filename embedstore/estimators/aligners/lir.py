"""LIR: language information removal by principal directions (Yang et al. 2021), no parallel data."""
from __future__ import annotations

import torch

from embedstore.estimators.aligners.subspace import SubspaceSwapAligner, orthonormal


class LIRAligner(SubspaceSwapAligner):
    """The language subspace is made of the leading principal directions of each language's vectors that carry
    language identity.

    Yang et al. remove the top-r singular directions of each language's (uncentred) embedding matrix and pick r
    by hand. Rank rule here, so no labelled data picks it: among the top `max_rank` directions of each language,
    keep those along which the two languages' means differ by more than `min_effect` pooled standard
    deviations (Cohen's d); a direction that does not separate the languages carries content, not language.
    Monolingual `fit`: X_src and Y_tgt are any sets of texts of each language.
    """

    name = "lir"
    order = 56

    def __init__(self, max_rank: int = 8, min_effect: float = 1.0, reverse: bool = False) -> None:
        self.max_rank = max_rank
        self.min_effect = min_effect
        self.reverse = reverse

    def _basis(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        candidates = []
        for side in (source, target):
            _, _, vt = torch.linalg.svd(side, full_matrices=False)
            candidates.append(vt[: self.max_rank])
        kept = [v for v in torch.cat(candidates) if _effect(source @ v, target @ v) > self.min_effect]
        if not kept:
            return torch.zeros(source.shape[1], 0, dtype=source.dtype)
        return orthonormal(torch.stack(kept, dim=1))


def _effect(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cohen's d: the gap between two samples' means in pooled standard deviations."""
    pooled = torch.sqrt((a.var() * (len(a) - 1) + b.var() * (len(b) - 1)) / max(len(a) + len(b) - 2, 1))
    return float((a.mean() - b.mean()).abs() / pooled.clamp_min(1e-12))
