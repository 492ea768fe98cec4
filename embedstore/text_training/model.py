"""The graph trained on text: LM → mean pooling → (aligner) → head, and the torch form of each part."""
from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from embedstore.encoding.encoder import pool
from embedstore.estimators.heads import make_head


class TextClassifier(nn.Module):
    """LM → mean pooling over the attention mask → (aligner) → head.

    Frozen parts stay in eval mode even while the graph trains: a frozen LM then gives exactly the vectors
    the store holds (no dropout), and a frozen aligner behaves as it did when it was fitted.
    """

    def __init__(self, encoder: nn.Module, head: nn.Module, n_classes: int, aligner: nn.Module | None = None,
                 train_encoder: bool = True, train_aligner: bool = False) -> None:
        super().__init__()
        self.encoder, self.aligner, self.head, self.n_classes = encoder, aligner, head, n_classes
        self.train_encoder, self.train_aligner = train_encoder, train_aligner
        encoder.requires_grad_(train_encoder)
        if aligner is not None:
            aligner.requires_grad_(train_aligner)

    def train(self, mode: bool = True) -> TextClassifier:
        super().train(mode)
        if not self.train_encoder:
            self.encoder.eval()
        if self.aligner is not None and not self.train_aligner:
            self.aligner.eval()
        return self

    def forward(self, batch: dict[str, torch.Tensor], through_aligner: bool = True) -> torch.Tensor:
        with nullcontext() if self.train_encoder else torch.no_grad():
            hidden = self.encoder(**batch).last_hidden_state
        x = pool(hidden.float(), batch["attention_mask"], "mean")
        if self.aligner is not None and through_aligner:
            x = self.aligner(x)
        return self.head(x)


def head_module(kind: str, dim: int, n_classes: int, seed: int) -> nn.Module:
    """The same network the cached path's head of this kind trains, so e2e and cached results compare
    like for like; initialised under the run's seed without touching the caller's RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make_head(kind)._network(dim, n_classes)


def trainable(graph: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters a run trains: all that checkpoints and saved weights hold (frozen ones are rebuilt
    from the base model and aligner, whose fingerprints are part of the run's identity)."""
    return {name: p for name, p in graph.named_parameters() if p.requires_grad}
