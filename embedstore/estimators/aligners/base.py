"""The contract every aligner shares: `fit(X_src, Y_tgt) -> self`, `transform(X) -> float32`, the reverse
switch, and what a caller may ask of the class (`name`, `trains`, `paired`) or of a fitted aligner
(`to_torch()`, `diagnostics()`, `aligns_target_at_test`).

Every aligner takes `reverse`: fit then learns the map Y_tgt → X_src (target language into English space) and
`transform` expects target-language vectors; this is how TR→EN transfer is run without a second data layout.
"""
from __future__ import annotations

from typing import Any, ClassVar, Self

import numpy as np
import torch
from sklearn.base import TransformerMixin
from torch import nn

from embedstore.base.errors import InputError
from embedstore.estimators.artifacts import Estimator, as_matrix


ROW_BLOCK = 256
"""Rows an aligner maps per matrix product. Why fixed: a BLAS kernel sums a row's products in an order that depends
on the shape of the call, so the same row mapped beside 40 rows and beside 1,000 differed in its last bits (OpenBLAS
and MKL alike, measured on an AVX2 EPYC): a sweep's records then depended on which cells had mapped which rows first
in a process (`study.experiments._mapped` keeps each row's output), and a Ray sweep's C-search log-losses differed
from a local one's at the 6th digit. At one shape, torch (MKL) gave each row the same bits wherever it sat in the
block and at one thread or two (measured: 640 permuted trials at d=32, 384 and 768); numpy's OpenBLAS did not."""


def map_rows(module: nn.Module, x: np.ndarray, device: str | torch.device = "cpu") -> np.ndarray:
    """`module` applied to each row of `x` in blocks of exactly `ROW_BLOCK` rows (the last one padded with zeros),
    each block copied into one buffer of torch's own (64-byte aligned) memory: a row's output is then the same
    whatever rows are mapped with it and wherever it sits in `x`."""
    out = np.empty(x.shape, np.float32)
    block = torch.zeros(ROW_BLOCK, x.shape[1], dtype=torch.float32)
    with torch.no_grad():
        for start in range(0, len(x), ROW_BLOCK):
            rows = x[start:start + ROW_BLOCK]
            block[:len(rows)] = torch.from_numpy(rows)
            block[len(rows):] = 0.0
            out[start:start + len(rows)] = module(block.to(device)).float().cpu().numpy()[:len(rows)]
    return out


class Aligner(TransformerMixin, Estimator):
    """Shared boundary checks and the reverse switch; subclasses implement `_fit(source, target)` and `to_torch()`,
    which defines the map: `transform` applies it (`map_rows`)."""

    _fit_call = "fit(X_src, Y_tgt)"
    #: Fitted by the training loop, so its result depends on the recipe (and it takes `recipe` and `seed`).
    trains: ClassVar[bool] = False
    #: Needs row-aligned translation pairs; False for aligners that use monolingual statistics alone.
    paired: ClassVar[bool] = True
    reverse: bool

    def fit(self, X_src: Any, Y_tgt: Any) -> Self:
        x, y = as_matrix(X_src, "X_src"), as_matrix(Y_tgt, "Y_tgt")
        if y.shape[1] != x.shape[1]:
            raise InputError(f"Y_tgt has {y.shape[1]} columns but X_src has {x.shape[1]}; "
                             "an aligner maps between spaces of the same dimension")
        if self.paired and len(y) != len(x):
            raise InputError(f"Y_tgt has {len(y)} rows but X_src has {len(x)}; {type(self).__name__} needs "
                             "row-aligned translation pairs (only aligners with paired=False take unpaired vectors)")
        self._check_refit_dim(x.shape[1], "X_src")
        source, target = (y, x) if self.reverse else (x, y)
        self._fit(source, target)
        self.dim_ = x.shape[1]
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Map vectors of the fitted source side (target-language vectors when `reverse=True`)."""
        self._check_fitted()
        x = as_matrix(X, "X")
        self._check_dim(x, "X")
        return self._map(x)

    def fit_transform(self, X_src: Any, Y_tgt: Any) -> np.ndarray:
        """Fit, then map the side the aligner maps from (X_src, or Y_tgt when `reverse=True`)."""
        return self.fit(X_src, Y_tgt).transform(Y_tgt if self.reverse else X_src)

    def to_torch(self) -> nn.Module:
        """A new module on raw vectors computing exactly `transform` (in eval mode; `transform` runs it), for graphs
        that differentiate or train through the map (finetune, gradient analysis); training it never changes this
        estimator."""
        raise NotImplementedError

    def diagnostics(self) -> dict[str, Any]:
        """What the fit found out about itself (JSON-ready); closed-form maps have nothing to report."""
        self._check_fitted()
        return {}

    @property
    def aligns_target_at_test(self) -> bool:
        """Whether target-language vectors go through the aligner at test time.

        A reverse aligner exists to map them (into English space). A closed-form forward map (Procrustes, least
        squares, mean shift) would move native vectors away from where the head was trained, so they bypass it.
        """
        return bool(self.reverse)

    def _fit(self, source: np.ndarray, target: np.ndarray) -> None:
        raise NotImplementedError

    def _map(self, x: np.ndarray) -> np.ndarray:
        """The fitted map on checked rows (also what a fit measures itself with, before `transform` may be called)."""
        return map_rows(self.to_torch(), x)


class AffineAligner(Aligner):
    """An aligner whose map is x ↦ (x − μ_s) W + μ_t (Procrustes, whitening, RCSLS, self-learning): the fit sets
    `W_`, `mu_src_` and `mu_tgt_`; applying, saving and `to_torch` are the same for all of them, so they live here."""

    _array_attrs = ("W_", "mu_src_", "mu_tgt_")

    def to_torch(self) -> nn.Module:
        """x @ W + (μ_t − μ_s W): the same map with the shifts folded into one bias."""
        self._check_fitted()
        return affine_module(self.W_, self.mu_tgt_ - self.mu_src_ @ self.W_)


def affine_module(weight: np.ndarray, bias: np.ndarray) -> nn.Linear:
    """x @ weight + bias as an exact nn.Linear built from the fitted arrays (nn.Linear stores weight transposed).
    Built without nn.Linear's random initialisation: `transform` builds one per call, and drawing from torch's
    global generator there would move every later seeded draw of the caller's."""
    linear = nn.utils.skip_init(nn.Linear, *weight.shape)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight.T, np.float32)))
        linear.bias.copy_(torch.from_numpy(np.asarray(bias, np.float32)))
    return linear.eval()


def centred64(a: np.ndarray, center: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 copy minus its column means (zeros when `center` is False), and the means.

    torch rather than numpy so the closed-form solvers obey torch.set_num_threads like the rest of the package
    (numpy's BLAS picks its own thread count, which on a shared 2-core machine measured ~4x slower).
    """
    t = torch.from_numpy(a).double()
    mu = t.mean(dim=0) if center else torch.zeros(t.shape[1], dtype=torch.float64)
    return t - mu, mu
