"""The torch-trained linear head (multinomial logistic regression by AdamW with early stopping)."""
from __future__ import annotations

from torch import nn

from embedstore.estimators.heads.torch_head import TorchHead


class LinearHead(TorchHead):
    """Logistic regression trained by the epoch loop, as the tool's first studies did. Kept for comparing with
    those results and for `finetune`, which trains this same network through the LM; the `logistic` head solves
    the same model to convergence and is the default."""

    name = "linear"
    order = 20
    text_network = "linear"

    def _network(self, dim: int, n_classes: int) -> nn.Module:
        return nn.Linear(dim, n_classes)
