"""Language-mean centering."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from embedstore.estimators.aligners.base import Aligner


class MeanShiftAligner(Aligner):
    """Language-mean centering: x - mu_src + mu_tgt.

    It needs only each language's mean, so X_src and Y_tgt may be unpaired monolingual sets of any sizes.
    """

    name = "meanshift"
    order = 50
    paired = False
    _array_attrs = ("mu_src_", "mu_tgt_")

    def __init__(self, reverse: bool = False) -> None:
        self.reverse = reverse

    def _fit(self, source: np.ndarray, target: np.ndarray) -> None:
        self.mu_src_ = source.astype(np.float64).mean(axis=0).astype(np.float32)
        self.mu_tgt_ = target.astype(np.float64).mean(axis=0).astype(np.float32)

    def to_torch(self) -> nn.Module:
        """A shift is the whole map, so its one parameter is the bias (no weight for finetune to train)."""
        self._check_fitted()
        return Shift(self.mu_tgt_ - self.mu_src_).eval()


class Shift(nn.Module):
    """x + bias, with the bias trainable."""

    def __init__(self, bias: np.ndarray) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.from_numpy(np.array(bias, np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias
