"""RCSLS: a linear map trained on the retrieval criterion itself (Joulin et al. 2018), from Procrustes."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from embedstore.estimators.aligners.base import AffineAligner
from embedstore.estimators.aligners.selflearning import normalised, procrustes


class RCSLSAligner(AffineAligner):
    """Minimises the relaxed CSLS loss on the pairs: for each pair, −2·cos(Wx, y) plus the mean cosine of Wx to
    its k nearest targets and of y to its k nearest mapped sources, so a map that makes hubs is penalised where
    MSE would reward it.

    Vectors are normalised as for self-learning (centre, unit length); W starts at the Procrustes solution and
    takes `steps` Adam steps on mini-batches of pairs, neighbours searched among `pool` sampled rows. W is not
    kept orthogonal (the paper's unconstrained variant); the raw-space map is x ↦ (x − μ_s) W + μ_t.
    """

    name = "rcsls"
    order = 45
    _state_attrs = ("loss_start_", "loss_end_")

    def __init__(self, steps: int = 50, lr: float = 0.004, k: int = 10, batch: int = 500, pool: int = 2000,
                 seed: int = 0, reverse: bool = False) -> None:
        self.steps = steps
        self.lr = lr
        self.k = k
        self.batch = batch
        self.pool = pool
        self.seed = seed
        self.reverse = reverse

    def _fit(self, source: np.ndarray, target: np.ndarray) -> None:
        s, t = torch.from_numpy(source), torch.from_numpy(target)
        x, z = normalised(s), normalised(t)
        w = nn.Parameter(procrustes(x, z))
        optimiser = torch.optim.Adam([w], lr=self.lr)
        generator = torch.Generator().manual_seed(self.seed)
        n, k = len(x), min(self.k, len(x))
        losses = []
        for _ in range(self.steps):
            batch = torch.randperm(n, generator=generator)[: self.batch]
            pool = torch.randperm(n, generator=generator)[: self.pool]
            loss = rcsls_loss(x[batch] @ w, z[batch], x[pool] @ w, z[pool], k)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
        self.W_ = w.detach().float().numpy()
        self.mu_src_ = s.double().mean(dim=0).float().numpy()
        self.mu_tgt_ = t.double().mean(dim=0).float().numpy()
        self.loss_start_ = losses[0] if losses else None
        self.loss_end_ = losses[-1] if losses else None

    def diagnostics(self) -> dict[str, Any]:
        """The RCSLS loss on the first and last mini-batch: it should fall."""
        self._check_fitted()
        return {"loss_start": self.loss_start_, "loss_end": self.loss_end_}


def rcsls_loss(mapped: torch.Tensor, target: torch.Tensor, mapped_pool: torch.Tensor, target_pool: torch.Tensor,
               k: int) -> torch.Tensor:
    """Joulin et al.'s eq. 3 on a batch: neighbours of each mapped source among pool targets and vice versa."""
    mapped = torch.nn.functional.normalize(mapped, dim=1)
    mapped_pool = torch.nn.functional.normalize(mapped_pool, dim=1)
    pair = (mapped * target).sum(dim=1)
    k = min(k, len(target_pool), len(mapped_pool))
    near_target = (mapped @ target_pool.T).topk(k, dim=1).values.mean(dim=1)
    near_source = (target @ mapped_pool.T).topk(k, dim=1).values.mean(dim=1)
    return (-2 * pair + near_target + near_source).mean()
