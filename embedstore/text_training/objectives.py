"""What a text training step minimises and how a run is validated: one class per kind of objective.

- `Classification`: cross-entropy on task labels through LM → (aligner) → head (`tune`, `finetune`, LoRA
  task adaptation), optionally plus λ times a `Contrastive` term on translation pairs (the joint objective).
- `Contrastive`: InfoNCE over in-batch negatives on the LM's pooled vectors: unsupervised SimCSE (the same texts
  twice, dropout the only noise) or sentence-level alignment on translation pairs (both directions), with an
  optional identity term that keeps target-language vectors where the base model put them.

The InfoNCE itself is sentence-transformers' `MultipleNegativesRankingLoss` (`compute_loss_from_embeddings`:
cosine similarities times `scale` = 1/temperature, cross-entropy against the diagonal); only the vectors are
ours, because our graph is a Hugging Face model with the store's mean pooling, not a SentenceTransformer.

A batch loss is summed over the batch's rows (a mean loss times the rows) so the loop's accumulation divides
by the rows of the whole optimizer step, whatever the objective.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from embedstore.base.errors import InputError
from embedstore.base.retrieval import nn_p_at_1
from embedstore.encoding.batching import Tokenized
from embedstore.encoding.encoder import collate
from embedstore.text_training.data import Split
from embedstore.text_training.precision import autocast

#: SimCSE's and the alignment study's temperature: similarities are scaled by 1 / 0.05 = 20.
TEMPERATURE = 0.05
#: The seed of validation's dropout masks (SimCSE validates with dropout on): fixed, so validation losses of
#: different epochs compare, and drawn from a forked RNG, so validating never shifts the training RNG.
_VALIDATION_SEED = 12345


class Objective(Protocol):
    rows: int  # training examples the loop permutes and batches

    def batch_loss(self, graph: nn.Module, rows: np.ndarray, device: torch.device,
                   amp: torch.dtype | None) -> torch.Tensor:
        """The loss of these training rows, summed over them."""

    def validate(self, graph: nn.Module, device: torch.device, amp: torch.dtype | None) -> tuple[float, float]:
        """(validation loss, validation score): accuracy for classification, P@1 of the pair for contrastive."""


def info_nce(temperature: float, both_directions: bool) -> Any:
    """sentence-transformers' InfoNCE over in-batch negatives; `both_directions` averages left→right and
    right→left (each with its own softmax), as alignment on translation pairs does."""
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    directions = ("query_to_doc", "doc_to_query") if both_directions else ("query_to_doc",)
    return MultipleNegativesRankingLoss(None, scale=1.0 / temperature, directions=directions,
                                        partition_mode="per_direction")


def embed_all(graph: nn.Module, tok: Tokenized, pad_id: int, device: torch.device, amp: torch.dtype | None,
              batch_size: int) -> torch.Tensor:
    """fp32 CPU vectors of every row in input order, without gradients, in the graph's current mode (batches
    length-sorted so little is padded)."""
    order = np.argsort(-tok.lengths, kind="stable")
    out: torch.Tensor | None = None
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            with autocast(device, amp):
                vectors = graph.embed(collate(tok, rows, pad_id, device)).float().cpu()
            if out is None:
                out = torch.empty(len(order), vectors.shape[1], dtype=torch.float32)
            out[torch.from_numpy(rows)] = vectors
    assert out is not None
    return out


def predict_logits(graph: nn.Module, tokenizer: Any, tok: Tokenized, device: torch.device,
                   amp: torch.dtype | None, batch_size: int, through_aligner: bool = True) -> torch.Tensor:
    """fp32 CPU logits in input order, in eval mode; batches are length-sorted so inference pads almost nothing."""
    was_training = graph.training
    graph.eval()
    order = np.argsort(-tok.lengths, kind="stable")
    out = torch.empty(len(order), graph.n_classes, dtype=torch.float32)
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            with autocast(device, amp):
                logits = graph(collate(tok, rows, tokenizer.pad_token_id, device), through_aligner=through_aligner)
            out[torch.from_numpy(rows)] = logits.float().cpu()
    graph.train(was_training)
    return out


@dataclass
class TextPairs:
    """Tokenized rows of a contrastive objective: `right[i]` is `left[i]`'s positive. `right` None means the
    positive is the same text again (SimCSE), made different by dropout alone."""

    left: Tokenized
    right: Tokenized | None = None

    def __len__(self) -> int:
        return len(self.left.features["input_ids"])


class Contrastive:
    """InfoNCE on pooled LM vectors (SimCSE, or pair alignment in both directions), plus `identity_weight` times
    the mean squared distance of the right texts' vectors from `anchors` (their base-model vectors)."""

    def __init__(self, train: TextPairs, val: TextPairs, pad_id: int, batch_size: int, *,
                 temperature: float = TEMPERATURE, identity_weight: float = 0.0,
                 anchors: torch.Tensor | None = None) -> None:
        if len(val) < 2:
            raise InputError(f"{len(val)} validation pairs; contrastive validation needs at least 2 "
                             "(use more rows or a larger val_fraction)")
        if identity_weight and anchors is None:
            raise ValueError("identity_weight needs the base model's vectors of the right texts (anchors)")
        self.train_pairs, self.val_pairs, self.pad_id, self.batch_size = train, val, pad_id, batch_size
        self.simcse = train.right is None
        self.loss_fn = info_nce(temperature, both_directions=not self.simcse)
        self.identity_weight, self.anchors = identity_weight, anchors
        self.rows = len(train)

    def _vectors(self, graph: nn.Module, pairs: TextPairs, rows: np.ndarray, device: torch.device,
                 amp: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor]:
        with autocast(device, amp):  # two forward passes: in SimCSE each draws its own dropout masks
            left = graph.embed(collate(pairs.left, rows, self.pad_id, device))
            right = graph.embed(collate(pairs.right or pairs.left, rows, self.pad_id, device))
        return left.float(), right.float()

    def mean_loss(self, graph: nn.Module, rows: np.ndarray, device: torch.device,
                  amp: torch.dtype | None) -> torch.Tensor:
        left, right = self._vectors(graph, self.train_pairs, rows, device, amp)
        loss = self.loss_fn.compute_loss_from_embeddings([left, right], None)
        if self.identity_weight:
            anchor = self.anchors[torch.from_numpy(rows)].to(device)
            loss = loss + self.identity_weight * (right - anchor).pow(2).sum(1).mean()
        return loss

    def batch_loss(self, graph: nn.Module, rows: np.ndarray, device: torch.device,
                   amp: torch.dtype | None) -> torch.Tensor:
        return self.mean_loss(graph, rows, device, amp) * len(rows)

    def validate(self, graph: nn.Module, device: torch.device, amp: torch.dtype | None) -> tuple[float, float]:
        """InfoNCE over validation batches of the training batch size, and P@1 of left → right over all of them.
        SimCSE validates with dropout on (in eval mode its two views are identical) under a fixed seed."""
        was_training = graph.training
        graph.train(self.simcse)
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(_VALIDATION_SEED)
            left = embed_all(graph, self.val_pairs.left, self.pad_id, device, amp, self.batch_size)
            right = embed_all(graph, self.val_pairs.right or self.val_pairs.left, self.pad_id, device, amp,
                              self.batch_size)
        graph.train(was_training)
        losses, weights = [], []
        for start in range(0, len(left), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            if len(left[chunk]) > 1:  # a one-row batch has no negatives
                losses.append(float(self.loss_fn.compute_loss_from_embeddings([left[chunk], right[chunk]], None)))
                weights.append(len(left[chunk]))
        return float(np.average(losses, weights=weights)), nn_p_at_1(left.numpy(), right.numpy())


class Classification:
    """Cross-entropy on task labels; with `joint`, plus `joint_weight` (λ) times the joint term's mean loss on a
    batch of its pairs of the same size. Task row i meets pair `order[i mod pairs]` (a seeded permutation): a
    fixed function of the rows, so a resumed run sees the very same pair batches."""

    def __init__(self, tokenizer: Any, train: Split, val: Split, batch_size: int, *,
                 joint: Contrastive | None = None, joint_weight: float = 0.0, seed: int = 0) -> None:
        self.tokenizer, self.train, self.val, self.batch_size = tokenizer, train, val, batch_size
        self.joint, self.joint_weight = (joint, joint_weight) if joint_weight else (None, 0.0)
        self.rows = len(train.texts)
        self.pair_order = np.random.default_rng([seed, 1]).permutation(joint.rows) if self.joint else None

    def task_loss(self, graph: nn.Module, rows: np.ndarray, device: torch.device,
                  amp: torch.dtype | None) -> torch.Tensor:
        """Cross-entropy of these rows, summed over them."""
        batch = collate(self.train.tok, rows, self.tokenizer.pad_token_id, device)
        target = torch.from_numpy(self.train.codes[rows]).to(device)
        with autocast(device, amp):
            logits = graph(batch)
        return nn.functional.cross_entropy(logits.float(), target, reduction="sum")

    def pair_rows(self, rows: np.ndarray) -> np.ndarray:
        return self.pair_order[rows % len(self.pair_order)]

    def batch_loss(self, graph: nn.Module, rows: np.ndarray, device: torch.device,
                   amp: torch.dtype | None) -> torch.Tensor:
        loss = self.task_loss(graph, rows, device, amp)
        if self.joint is not None:
            loss = loss + self.joint_weight * self.joint.mean_loss(graph, self.pair_rows(rows), device, amp) * len(rows)
        return loss

    def validate(self, graph: nn.Module, device: torch.device, amp: torch.dtype | None) -> tuple[float, float]:
        """Task loss and accuracy (early stopping follows the task, the objective that is scored)."""
        logits = predict_logits(graph, self.tokenizer, self.val.tok, device, amp, self.batch_size)
        codes = torch.from_numpy(self.val.codes)
        return nn.functional.cross_entropy(logits, codes).item(), float((logits.argmax(1) == codes).float().mean())
