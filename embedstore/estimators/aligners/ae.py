"""The paper's autoencoder aligner."""
from __future__ import annotations

from torch import nn

from embedstore.estimators.aligners.torch_aligner import TorchAligner


class AEAligner(TorchAligner):
    """The paper's Listing 2: encoder d→512→256→128, decoder 128→256→512→d.

    The listing does not say whether the 128-d bottleneck is activated. We put ReLU after every hidden layer,
    bottleneck included, and none after the output layer: this matches the FC aligner (ReLU on every hidden layer)
    and leaves the output unconstrained, as an embedding's coordinates can be negative.
    """

    name = "ae"
    order = 20

    def _network(self, dim: int) -> nn.Module:
        return nn.Sequential(
            nn.Linear(dim, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
            nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, dim),
        )
