"""A residual-MLP aligner (Drift-Adapter's third family): the identity plus a learned correction."""
from __future__ import annotations

import torch
from torch import nn

from embedstore.estimators.aligners.torch_aligner import TorchAligner


class ResidualMLPAligner(TorchAligner):
    """x + W2·GELU(W1·x), hidden 1024, dropout 0.1, W2 starting at zero.

    FC and AE must rebuild every coordinate through a bottleneck, and on e5-small they lose retrieval doing it
    (help en-ko, 5k pairs: FC P@1 0.38 against 0.74 for no map at all). Starting at the identity, which is
    already a good map between two languages of one multilingual encoder, the network only learns the
    correction, the way Drift-Adapter maps between two versions of an embedding space.
    """

    name = "resmlp"
    order = 25

    def _network(self, dim: int) -> nn.Module:
        return _Residual(dim, hidden=1024, dropout=0.1)


class _Residual(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.correction = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))
        nn.init.zeros_(self.correction[-1].weight)
        nn.init.zeros_(self.correction[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.correction(x)
