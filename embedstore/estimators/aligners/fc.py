"""The paper's FC aligner."""
from __future__ import annotations

from torch import nn

from embedstore.estimators.aligners.torch_aligner import TorchAligner
from embedstore.estimators.dropout import Dropout


class FCAligner(TorchAligner):
    """The paper's Listing 1, layer for layer: an hourglass MLP d→1024→512→256→512→1024→d.

    Dropout 0.5 follows layers 1, 2 and 4 (`estimators.dropout`: masks drawn by numpy, 9x cheaper on CPU than
    torch's); the last layer has no activation so outputs can take any sign.
    """

    name = "fc"
    order = 10

    def _network(self, dim: int) -> nn.Module:
        return nn.Sequential(
            nn.Linear(dim, 1024), nn.ReLU(), Dropout(0.5),
            nn.Linear(1024, 512), nn.ReLU(), Dropout(0.5),
            nn.Linear(512, 256), nn.ReLU(),
            nn.Linear(256, 512), nn.ReLU(), Dropout(0.5),
            nn.Linear(512, 1024), nn.ReLU(),
            nn.Linear(1024, dim),
        )
