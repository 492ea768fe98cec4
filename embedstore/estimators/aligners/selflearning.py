"""Self-learning Procrustes shared by `selflearn` (no pairs) and `selflearn_seeded` (a small seed dictionary).

The loop of VecMap (Artetxe et al. 2018) on sentence vectors: normalise each language (centre, unit length),
start from a dictionary, then alternate an orthogonal Procrustes fit on the dictionary with a new
dictionary of mutual nearest neighbours under CSLS (Conneau et al. 2018), which discounts hub vectors. Induction
runs on a seeded sample of at most `induce_rows` rows per side, so a fit costs the same on 10k or 100k vectors.
The final map works on raw vectors: x ↦ (x − μ_s) W + μ_t, an affine map, so `to_torch` is exact.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from embedstore.base.retrieval import mutual_best
from embedstore.estimators.aligners.base import AffineAligner


def normalised(x: torch.Tensor) -> torch.Tensor:
    """Centre on the language's mean, then unit length (VecMap's normalisation, centring first: a sentence
    encoder's vectors share a large language-specific common component, which unit-normalising first would
    fold into every direction)."""
    return torch.nn.functional.normalize(x - x.mean(dim=0), dim=1)


def mutual_pairs(a: torch.Tensor, b: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The dictionary: row/column pairs of unit rows that are each other's best by CSLS (`base.retrieval`), and
    the mean best score of the rows (the loop's objective)."""
    mutual = mutual_best(a.numpy(), b.numpy(), k, "csls")
    return torch.from_numpy(mutual.source), torch.from_numpy(mutual.target), mutual.mean_best


def procrustes(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    u, _, vt = torch.linalg.svd(x.T @ z)
    return u @ vt


def similarity_init(x: torch.Tensor, z: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """VecMap's unsupervised start: a vector is described by the sorted distribution of its similarities to its
    own language, (X Xᵀ)^½ row-sorted, which is invariant to any rotation of the space; rows of the two languages
    with similar distributions are paired."""
    def signature(a: torch.Tensor) -> torch.Tensor:
        u, s, _ = torch.linalg.svd(a, full_matrices=False)
        sqrt_sims = (u * s) @ u.T
        return normalised(sqrt_sims.sort(dim=1, descending=True).values)

    src, tgt, _ = mutual_pairs(signature(x), signature(z), k)
    return src, tgt


class SelfLearningAligner(AffineAligner):
    """The loop; `selflearn` and `selflearn_seeded` differ only in where the first dictionary comes from."""

    paired = False
    _state_attrs = ("init_", "dictionary_size_", "objective_", "n_source_", "n_target_", "n_seed_")

    induce_rows: int
    init_rows: int
    iterations: int
    csls_k: int
    seed: int

    def _seed_dictionary(self, x: torch.Tensor, z: torch.Tensor, n_seed: int) -> dict[str, tuple]:
        raise NotImplementedError

    def _fit(self, source: np.ndarray, target: np.ndarray) -> None:
        s, t = torch.from_numpy(source), torch.from_numpy(target)
        x_all, z_all = normalised(s), normalised(t)
        n_seed = self._n_seed(len(source), len(target))
        rng = np.random.default_rng(self.seed)
        pick_x = self._sample(rng, len(source), n_seed)
        pick_z = self._sample(rng, len(target), n_seed)
        x, z = x_all[pick_x], z_all[pick_z]
        fixed = (torch.arange(n_seed), torch.arange(n_seed))  # the seed pairs are the samples' first rows
        best = None
        for init, (src, tgt) in self._seed_dictionary(x, z, n_seed).items():
            w, size, objective = self._refine(x, z, src, tgt, fixed if n_seed else None)
            if best is None or objective > best[3]:
                best = (init, w, size, objective)
        init, w, size, objective = best
        self.W_ = w.float().numpy()
        self.mu_src_ = s.double().mean(dim=0).float().numpy()
        self.mu_tgt_ = t.double().mean(dim=0).float().numpy()
        self.init_, self.dictionary_size_, self.objective_ = init, size, objective
        self.n_source_, self.n_target_, self.n_seed_ = len(source), len(target), n_seed

    def _n_seed(self, n_source: int, n_target: int) -> int:
        return 0

    def _sample(self, rng: np.random.Generator, n: int, n_seed: int) -> torch.Tensor:
        """The seed rows first, then a seeded sample of the others, `induce_rows` in all."""
        rest = n_seed + rng.permutation(n - n_seed)[: max(self.induce_rows - n_seed, 0)]
        return torch.from_numpy(np.concatenate([np.arange(n_seed), rest]).astype(np.int64))

    def _refine(self, x: torch.Tensor, z: torch.Tensor, src: torch.Tensor, tgt: torch.Tensor,
                fixed: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, int, float]:
        objective = float("-inf")
        w = torch.eye(x.shape[1])
        for _ in range(self.iterations):
            if fixed is not None:
                src, tgt = torch.cat([fixed[0], src]), torch.cat([fixed[1], tgt])
            if len(src) == 0:
                break
            w = procrustes(x[src], z[tgt])
            src, tgt, objective = mutual_pairs(x @ w, z, self.csls_k)
        return w, int(len(src)), objective

    def diagnostics(self) -> dict[str, Any]:
        """Which start won, how large the last induced dictionary was, its mean CSLS, and the texts used."""
        self._check_fitted()
        return {"init": self.init_, "dictionary_size": self.dictionary_size_, "objective": self.objective_,
                "n_source": self.n_source_, "n_target": self.n_target_, "n_seed": self.n_seed_}
