"""The graphs trained on text: LM → mean pooling → (aligner) → head, the LM with pooling alone (contrastive
adaptation), and the torch form of each part."""
from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from embedstore.encoding.encoder import pool
from embedstore.estimators.heads import make_head, text_network


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

    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The LM's mean-pooled vectors: what the store holds, and what the joint alignment term acts on."""
        with nullcontext() if self.train_encoder else torch.no_grad():
            return mean_pooled(self.encoder, batch)

    def forward(self, batch: dict[str, torch.Tensor], through_aligner: bool = True) -> torch.Tensor:
        x = self.embed(batch)
        if self.aligner is not None and through_aligner:
            x = self.aligner(x)
        return self.head(x)


class SentenceEncoder(nn.Module):
    """LM → mean pooling: the graph of the contrastive adaptations (SimCSE, pair alignment), which train the
    vectors themselves and need no head. `encoder` is named as in `TextClassifier`, so parameter names, optimizer
    groups and checkpoints are the same."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        encoder.requires_grad_(True)

    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return mean_pooled(self.encoder, batch)

    forward = embed


def mean_pooled(encoder: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """fp32 mean pooling over the attention mask, as `encode` pools (the store's default pooling)."""
    return pool(encoder(**batch).last_hidden_state.float(), batch["attention_mask"], "mean")


def head_module(kind: str, dim: int, n_classes: int, seed: int) -> nn.Module:
    """The network a head of this kind is on text (`heads.text_network`: "logistic" is the linear head's
    nn.Linear, trained by the run's AdamW, not by L-BFGS with a C search); initialised under the run's seed
    without touching the caller's RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make_head(text_network(kind))._network(dim, n_classes)


def trainable(graph: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters a run trains: all that checkpoints and saved weights hold (frozen ones are rebuilt
    from the base model and aligner, whose fingerprints are part of the run's identity)."""
    return {name: p for name, p in graph.named_parameters() if p.requires_grad}
