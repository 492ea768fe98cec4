"""Ridge least squares, the closed-form baseline for the trained aligners."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from embedstore.base.errors import ConfigError
from embedstore.estimators.aligners.base import Aligner, affine_module, centred64


class LinearAligner(Aligner):
    """Ridge least squares with bias, in closed form: a seconds-fast baseline for the trained aligners.

    `alpha` is absolute (as in scikit-learn's Ridge) and must be > 0 so the system stays solvable when there
    are fewer pairs than dimensions. Solved in float64 because embeddings that share a large common component
    can make the Gram matrix ill-conditioned, where float32 would lose the small directions.
    """

    name = "linear"
    order = 30
    _array_attrs = ("W_", "b_")

    def __init__(self, alpha: float = 1e-3, reverse: bool = False) -> None:
        self.alpha = alpha
        self.reverse = reverse

    def _fit(self, source: np.ndarray, target: np.ndarray) -> None:
        if not self.alpha > 0:
            raise ConfigError(f"LinearAligner alpha={self.alpha!r} must be > 0")
        x, mu_x = centred64(source)
        y, mu_y = centred64(target)
        gram = x.T @ x
        gram.diagonal().add_(self.alpha)
        w = torch.linalg.solve(gram, x.T @ y)
        self.W_ = w.float().numpy()
        self.b_ = (mu_y - mu_x @ w).float().numpy()

    def to_torch(self) -> nn.Module:
        self._check_fitted()
        return affine_module(self.W_, self.b_)
