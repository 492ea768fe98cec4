"""Per-language centering and whitening, coloured into the target's space."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from embedstore.estimators.aligners.base import AffineAligner


class WhitenAligner(AffineAligner):
    """x ↦ μ_t + (x − μ_s) C_s^{-1/2} C_t^{1/2}: centre and whiten with the source's statistics (Libovický et al.
    2020's centering, BERT-whitening's whitening), then colour with the target's.

    Whitening alone puts both languages in one isotropic space; the head, though, is evaluated on raw native
    vectors, so the aligner maps English into the target's space by colouring with the target's covariance
    (ZCA forms, so directions are kept rather than rotated at random). With `dims` (BERT-whitening's truncation)
    only the source's top `dims` principal directions are kept; the rest are dropped. `shrinkage` adds that
    fraction of the mean eigenvalue to every eigenvalue so small samples (fewer texts than dimensions) stay
    invertible. Monolingual `fit`: X_src and Y_tgt are any sets of texts of each language.
    """

    name = "whiten"
    order = 52
    paired = False
    _state_attrs = ("n_source_", "n_target_", "dims_kept_")

    def __init__(self, dims: int | None = None, shrinkage: float = 0.05, reverse: bool = False) -> None:
        self.dims = dims
        self.shrinkage = shrinkage
        self.reverse = reverse

    def _fit(self, source: np.ndarray, target: np.ndarray) -> None:
        s, t = torch.from_numpy(source).double(), torch.from_numpy(target).double()
        mu_s, mu_t = s.mean(dim=0), t.mean(dim=0)
        vals_s, vecs_s = self._eig(s - mu_s)
        vals_t, vecs_t = self._eig(t - mu_t)
        keep = len(vals_s) if self.dims is None else max(1, min(int(self.dims), len(vals_s)))
        top = vecs_s[:, -keep:]  # eigh sorts ascending: the last columns are the leading directions
        whiten = top @ torch.diag(vals_s[-keep:].rsqrt()) @ top.T
        colour = vecs_t @ torch.diag(vals_t.sqrt()) @ vecs_t.T
        self.W_ = (whiten @ colour).float().numpy()
        self.mu_src_, self.mu_tgt_ = mu_s.float().numpy(), mu_t.float().numpy()
        self.n_source_, self.n_target_, self.dims_kept_ = len(source), len(target), keep

    def _eig(self, centred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cov = centred.T @ centred / max(len(centred) - 1, 1)
        vals, vecs = torch.linalg.eigh(cov)
        floor = self.shrinkage * float(vals.clamp_min(0).mean()) + 1e-12
        return vals.clamp_min(0) + floor, vecs

    def diagnostics(self) -> dict[str, Any]:
        self._check_fitted()
        return {"n_source": self.n_source_, "n_target": self.n_target_, "dims_kept": self.dims_kept_}
