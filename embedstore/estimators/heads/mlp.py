"""A one-hidden-layer network head, shaped like RoBERTa's classification head."""
from __future__ import annotations

from torch import nn

from embedstore.base.errors import ConfigError
from embedstore.estimators.dropout import Dropout
from embedstore.estimators.heads.torch_head import TorchHead
from embedstore.estimators.training import DEFAULT_RECIPE, Recipe


class MLPHead(TorchHead):
    """Shaped like RoBERTa's classification head (dropout, dense d→hidden, tanh, dropout, out_proj): the paper
    trains "a task head in the same form as the LM's", so results are comparable to fine-tuning that head.

    `hidden` defaults to the vector dim (RoBERTa's form); `dropout` to RoBERTa's hidden dropout, 0.1.
    """

    name = "mlp"
    order = 30
    text_network = "mlp"

    def __init__(self, hidden: int | None = None, dropout: float = 0.1, weight_decay: float | None = None,
                 normalize: str = "none", recipe: str | Recipe = DEFAULT_RECIPE, seed: int = 0,
                 progress: bool = False, device: str = "cpu") -> None:
        super().__init__(weight_decay=weight_decay, normalize=normalize, recipe=recipe, seed=seed,
                         progress=progress, device=device)
        self.hidden = hidden
        self.dropout = dropout

    def check_params(self) -> None:
        super().check_params()
        self._network(2, 2)

    def _network(self, dim: int, n_classes: int) -> nn.Module:
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"MLPHead dropout={self.dropout!r} must be in [0, 1)")
        if self.hidden is not None and (isinstance(self.hidden, bool) or self.hidden < 1):
            raise ConfigError(f"MLPHead hidden={self.hidden!r} must be a positive integer (or None: the vector dim)")
        width = dim if self.hidden is None else self.hidden
        return nn.Sequential(Dropout(self.dropout), nn.Linear(dim, width), nn.Tanh(),
                             Dropout(self.dropout), nn.Linear(width, n_classes))
