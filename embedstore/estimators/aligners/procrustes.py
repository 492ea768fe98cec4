"""Orthogonal Procrustes."""
from __future__ import annotations

import numpy as np
import torch

from embedstore.estimators.aligners.base import AffineAligner, centred64


class ProcrustesAligner(AffineAligner):
    """Orthogonal map from the SVD of the source/target cross-covariance.

    Orthogonality preserves distances within the source space, so it cannot collapse. With `center=True`,
    transform is (x - mu_src) @ W + mu_tgt; with `center=False` the means are stored as zeros, i.e. x @ W.
    """

    name = "procrustes"
    order = 40

    def __init__(self, center: bool = True, reverse: bool = False) -> None:
        self.center = center
        self.reverse = reverse

    def _fit(self, source: np.ndarray, target: np.ndarray) -> None:
        x, mu_x = centred64(source, self.center)
        y, mu_y = centred64(target, self.center)
        u, _, vt = torch.linalg.svd(x.T @ y)
        self.W_ = (u @ vt).float().numpy()
        self.mu_src_ = mu_x.float().numpy()
        self.mu_tgt_ = mu_y.float().numpy()
