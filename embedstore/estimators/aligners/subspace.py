"""The map LIR and LSAR share: replace the source's coordinates in a language subspace by the target's.

Both methods say that a multilingual encoder writes "which language is this" into a few directions and that
removing them leaves a more language-agnostic vector. The papers remove the subspace from every language; an
aligner here must map source vectors into the target's own space (native vectors reach the head untouched), so
the source's component in the subspace is replaced by the target mean's component there:
x ↦ x − x P Pᵀ + μ_t P Pᵀ (P an orthonormal basis of the subspace, d × r). It is affine, so `to_torch` is exact.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from embedstore.estimators.aligners.base import Aligner, affine_module


class SubspaceSwapAligner(Aligner):
    """Base of the language-subspace aligners: subclasses find the basis (`_basis`), this class does the rest.

    They fit on monolingual vectors of each language (`paired = False`: X_src and Y_tgt may be unrelated sets
    of any sizes) and record how many texts of each side they used and the rank they chose.
    """

    paired = False
    _array_attrs = ("proj_", "mu_tgt_")
    _state_attrs = ("rank_", "n_source_", "n_target_")

    def _basis(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _fit(self, source: np.ndarray, target: np.ndarray) -> None:
        s, t = torch.from_numpy(source).double(), torch.from_numpy(target).double()
        basis = self._basis(s, t)
        self.proj_ = (basis @ basis.T).float().numpy()  # d × d whatever the rank, so a saved file has fixed shapes
        self.mu_tgt_ = t.mean(dim=0).float().numpy()
        self.rank_ = int(basis.shape[1])
        self.n_source_, self.n_target_ = len(source), len(target)

    def _weight_bias(self) -> tuple[np.ndarray, np.ndarray]:
        proj = self.proj_.astype(np.float64)
        weight = np.eye(len(proj)) - proj
        return weight.astype(np.float32), (self.mu_tgt_.astype(np.float64) @ proj).astype(np.float32)

    def to_torch(self) -> nn.Module:
        self._check_fitted()
        return affine_module(*self._weight_bias())

    def diagnostics(self) -> dict[str, Any]:
        """The chosen rank and the monolingual texts behind it: the method's whole evidence."""
        self._check_fitted()
        return {"rank": self.rank_, "n_source": self.n_source_, "n_target": self.n_target_}


def orthonormal(columns: torch.Tensor, tol: float = 1e-8) -> torch.Tensor:
    """An orthonormal basis (d × r) of the span of `columns` (d × m), dropping directions that add nothing."""
    if columns.shape[1] == 0:
        return columns
    q, r = torch.linalg.qr(columns)
    keep = r.diagonal().abs() > tol * max(1.0, float(r.diagonal().abs().max()))
    return q[:, keep]
