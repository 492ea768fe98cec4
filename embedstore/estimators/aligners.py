"""Aligners: maps from one language's embedding space onto another's (LangAlign and closed-form baselines).

All aligners share one interface, `fit(X_src, Y_tgt) -> self`, `transform(X) -> float32`, so experiments can swap
them by name (`make_aligner`). Every aligner takes `reverse`: fit then learns the map Y_tgt → X_src (target
language into English space) and `transform` expects target-language vectors; this is how TR→EN transfer is
run without a second data layout.
"""
from __future__ import annotations

import copy
import os
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np
import torch
from torch import nn

from embedstore.estimators.artifacts import Estimator, as_matrix, load_estimator, make_estimator
from embedstore.base.errors import ConfigError, InputError
from embedstore.estimators.training import Recipe, resolve_recipe, split_indices, train

#: Output variance below this fraction of the target's means the map squeezes everything toward one point.
MIN_VARIANCE_RATIO = 0.05
#: Retrieval P@1 below this fraction of the identity map's means alignment destroyed what identity preserved.
MIN_P1_RATIO = 0.5
#: Retrieval is quadratic in rows; this many validation rows give a stable P@1 at negligible cost.
_RETRIEVAL_ROWS = 2000
_INFER_CHUNK = 8192


class CollapseWarning(UserWarning):
    """An aligner's outputs look collapsed (low spread or retrieval far below identity); its transfer is suspect."""


@dataclass(frozen=True)
class CollapseCheck:
    """The numbers behind a collapse verdict, kept so a fitted aligner can report them, not just a flag."""

    p1: float
    identity_p1: float
    variance_ratio: float
    collapsed: bool
    reason: str


def retrieval_p1(queries: np.ndarray, keys: np.ndarray) -> float:
    """Fraction of rows whose cosine nearest key is their own pair (row i ↔ row i)."""
    q, k = queries[:_RETRIEVAL_ROWS], keys[:_RETRIEVAL_ROWS]
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    k = k / np.maximum(np.linalg.norm(k, axis=1, keepdims=True), 1e-12)
    return float(np.mean(np.argmax(q @ k.T, axis=1) == np.arange(len(q))))


def detect_collapse(aligned: np.ndarray, source: np.ndarray, target: np.ndarray) -> CollapseCheck:
    """Judge aligned validation rows against their targets.

    Mean cosine and MSE can look fine for a map that sends everything near the target mean (an undertrained FC
    aligner did exactly that), so this looks at what such a map destroys: spread and pairwise retrieval.
    """
    p1 = retrieval_p1(aligned, target)
    identity_p1 = retrieval_p1(source, target)
    target_var = float(target.var(axis=0).sum())
    ratio = float(aligned.var(axis=0).sum()) / target_var if target_var > 0 else float("inf")
    reasons = []
    if ratio < MIN_VARIANCE_RATIO:
        reasons.append(f"output variance is {ratio:.1%} of the target's (< {MIN_VARIANCE_RATIO:.0%})")
    if p1 < MIN_P1_RATIO * identity_p1:
        reasons.append(f"retrieval P@1 {p1:.3f} is far below the identity map's {identity_p1:.3f}")
    return CollapseCheck(p1, identity_p1, ratio, bool(reasons), "; ".join(reasons))


class Aligner(Estimator):
    """Shared boundary checks and the reverse switch; subclasses implement `_fit(source, target)` and `_apply(x)`."""

    _fit_call = "fit(X_src, Y_tgt)"
    #: False only for aligners that need monolingual statistics alone, not translation pairs.
    _paired: ClassVar[bool] = True
    reverse: bool

    def fit(self, X_src: Any, Y_tgt: Any) -> Self:
        x, y = as_matrix(X_src, "X_src"), as_matrix(Y_tgt, "Y_tgt")
        if y.shape[1] != x.shape[1]:
            raise InputError(f"Y_tgt has {y.shape[1]} columns but X_src has {x.shape[1]}; "
                             "an aligner maps between spaces of the same dimension")
        if self._paired and len(y) != len(x):
            raise InputError(f"Y_tgt has {len(y)} rows but X_src has {len(x)}; {type(self).__name__} needs "
                             "row-aligned translation pairs (only MeanShiftAligner takes unpaired vectors)")
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
        return self._apply(x)

    def fit_transform(self, X_src: Any, Y_tgt: Any) -> np.ndarray:
        """Fit, then map the side the aligner maps from (X_src, or Y_tgt when `reverse=True`)."""
        return self.fit(X_src, Y_tgt).transform(Y_tgt if self.reverse else X_src)

    def _fit(self, source: np.ndarray, target: np.ndarray) -> None:
        raise NotImplementedError

    def _apply(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class TorchAligner(Aligner):
    """LangAlign's trained aligners: MSE on (source → target) plus, by default, the identity term (target → target).

    The identity term keeps target-language inputs where they are, so an aligned source vector and a native
    target vector land in the same region the task head is trained on.

    With `standardize` (default) the network sees vectors centred on the training rows' mean and scaled to unit
    average variance per coordinate, and its outputs are mapped back; the network itself is the paper's. Sentence
    embeddings share a large common component (e5-small: pair cosine ~0.9, every coordinate's spread ~0.01), so
    on raw vectors MSE starts tiny and the networks first learn to output the mean: on 10k real en-ko pairs, 15
    epochs gave held-out retrieval P@1 0.05 (FC) and 0.09 (AE) raw, against 0.39 and 0.76 standardized (identity
    map 0.75). One scalar scale, not one per coordinate, keeps the embedding's own geometry.
    """

    _array_attrs = ("shift_", "scale_")
    _state_attrs = ("history_", "val_mse_", "identity_val_mse_", "val_retrieval_p1_", "identity_retrieval_p1_",
                    "output_variance_ratio_", "collapsed_")

    def __init__(self, identity: bool = True, reverse: bool = False, recipe: str | Recipe = "default",
                 seed: int = 0, progress: bool = False, device: str = "cpu", standardize: bool = True) -> None:
        self.identity = identity
        self.standardize = standardize
        self.reverse = reverse
        self.recipe = recipe
        self.seed = seed
        self.progress = progress
        self.device = device

    def _network(self, dim: int) -> nn.Module:
        raise NotImplementedError

    def _empty_module(self) -> nn.Module:
        return self._network(self.dim_)

    def _rows(self, source: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.identity:
            return torch.cat([source, target]), torch.cat([target, target])
        return source, target

    def _fit(self, source: np.ndarray, target: np.ndarray) -> None:
        recipe = resolve_recipe(self.recipe, "aligner")
        train_idx, val_idx = split_indices(len(source), recipe.val_fraction, self.seed)
        self._fit_standardization(source[train_idx], target[train_idx])
        src, tgt = torch.from_numpy(self._to_net(source)), torch.from_numpy(self._to_net(target))
        dim = source.shape[1]
        module, history = train(
            lambda: self._network(dim), nn.functional.mse_loss,
            *self._rows(src[train_idx], tgt[train_idx]), *self._rows(src[val_idx], tgt[val_idx]),
            recipe, seed=self.seed, progress=self.progress, device=self.device, description=type(self).__name__,
        )
        self.module_ = module
        self.history_ = history.to_dict()
        val_src, val_tgt = source[val_idx], target[val_idx]
        aligned = self._apply(val_src)
        check = detect_collapse(aligned, val_src, val_tgt)
        self.val_mse_ = float(np.mean((aligned - val_tgt) ** 2))
        self.identity_val_mse_ = float(np.mean((val_src - val_tgt) ** 2))
        self.val_retrieval_p1_ = check.p1
        self.identity_retrieval_p1_ = check.identity_p1
        self.output_variance_ratio_ = check.variance_ratio
        self.collapsed_ = check.collapsed
        if check.collapsed:
            warnings.warn(f"{type(self).__name__} looks collapsed: {check.reason}", CollapseWarning, stacklevel=3)

    def _fit_standardization(self, source: np.ndarray, target: np.ndarray) -> None:
        """One shift and scale for both languages, from training rows only, so the identity map stays the identity."""
        dim = source.shape[1]
        if not self.standardize:
            self.shift_, self.scale_ = np.zeros(dim, np.float32), np.ones(1, np.float32)
            return
        rows = np.concatenate([source, target]).astype(np.float64)
        shift = rows.mean(axis=0)
        scale = np.sqrt(((rows - shift) ** 2).sum(axis=1).mean() / dim)
        self.shift_ = shift.astype(np.float32)
        self.scale_ = np.array([scale if scale > 0 else 1.0], np.float32)

    def _to_net(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.shift_) / self.scale_).astype(np.float32, copy=False)

    def torch_module(self) -> nn.Module:
        """A copy of the fitted map as one module on raw vectors, for graphs that train through it (finetune)."""
        self._check_fitted()
        return Standardized(copy.deepcopy(self.module_).float().cpu(), self.shift_, self.scale_)

    def _apply(self, x: np.ndarray) -> np.ndarray:
        out = []
        with torch.no_grad():
            for start in range(0, len(x), _INFER_CHUNK):
                chunk = torch.from_numpy(self._to_net(x[start:start + _INFER_CHUNK])).to(self.device)
                out.append(self.module_(chunk).cpu().numpy())
        return (np.concatenate(out) * self.scale_ + self.shift_).astype(np.float32, copy=False)


class Standardized(nn.Module):
    """`net` applied in a TorchAligner's standardized coordinates; the shift and scale are fixed buffers."""

    def __init__(self, net: nn.Module, shift: np.ndarray, scale: np.ndarray) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("shift", torch.from_numpy(np.array(shift, np.float32)))
        self.register_buffer("scale", torch.from_numpy(np.array(scale, np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.shift) / self.scale) * self.scale + self.shift


class FCAligner(TorchAligner):
    """The paper's Listing 1, layer for layer: an hourglass MLP d→1024→512→256→512→1024→d.

    Dropout 0.5 follows layers 1, 2 and 4; the last layer has no activation so outputs can take any sign.
    """

    def _network(self, dim: int) -> nn.Module:
        return nn.Sequential(
            nn.Linear(dim, 1024), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(1024, 512), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(512, 256), nn.ReLU(),
            nn.Linear(256, 512), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(512, 1024), nn.ReLU(),
            nn.Linear(1024, dim),
        )


class AEAligner(TorchAligner):
    """The paper's Listing 2: encoder d→512→256→128, decoder 128→256→512→d.

    The listing does not say whether the 128-d bottleneck is activated. We put ReLU after every hidden layer,
    bottleneck included, and none after the output layer: this matches the FC aligner (ReLU on every hidden layer)
    and leaves the output unconstrained, as an embedding's coordinates can be negative.
    """

    def _network(self, dim: int) -> nn.Module:
        return nn.Sequential(
            nn.Linear(dim, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
            nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, dim),
        )


def _centred64(a: np.ndarray, center: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 copy minus its column means (zeros when `center` is False), and the means.

    torch rather than numpy so the closed-form solvers obey torch.set_num_threads like the rest of the package
    (numpy's BLAS picks its own thread count, which on a shared 2-core machine measured ~4x slower).
    """
    t = torch.from_numpy(a).double()
    mu = t.mean(dim=0) if center else torch.zeros(t.shape[1], dtype=torch.float64)
    return t - mu, mu


class LinearAligner(Aligner):
    """Ridge least squares with bias, in closed form: a seconds-fast baseline for the trained aligners.

    `alpha` is absolute (as in scikit-learn's Ridge) and must be > 0 so the system stays solvable when there
    are fewer pairs than dimensions. Solved in float64 because embeddings that share a large common component
    can make the Gram matrix ill-conditioned, where float32 would lose the small directions.
    """

    _array_attrs = ("W_", "b_")

    def __init__(self, alpha: float = 1e-3, reverse: bool = False) -> None:
        self.alpha = alpha
        self.reverse = reverse

    def _fit(self, source: np.ndarray, target: np.ndarray) -> None:
        if not self.alpha > 0:
            raise ConfigError(f"LinearAligner alpha={self.alpha!r} must be > 0")
        x, mu_x = _centred64(source)
        y, mu_y = _centred64(target)
        gram = x.T @ x
        gram.diagonal().add_(self.alpha)
        w = torch.linalg.solve(gram, x.T @ y)
        self.W_ = w.float().numpy()
        self.b_ = (mu_y - mu_x @ w).float().numpy()

    def _apply(self, x: np.ndarray) -> np.ndarray:
        return x @ self.W_ + self.b_


class ProcrustesAligner(Aligner):
    """Orthogonal map from the SVD of the source/target cross-covariance.

    Orthogonality preserves distances within the source space, so it cannot collapse. With `center=True`,
    transform is (x - mu_src) @ W + mu_tgt; with `center=False` the means are stored as zeros, i.e. x @ W.
    """

    _array_attrs = ("W_", "mu_src_", "mu_tgt_")

    def __init__(self, center: bool = True, reverse: bool = False) -> None:
        self.center = center
        self.reverse = reverse

    def _fit(self, source: np.ndarray, target: np.ndarray) -> None:
        x, mu_x = _centred64(source, self.center)
        y, mu_y = _centred64(target, self.center)
        u, _, vt = torch.linalg.svd(x.T @ y)
        self.W_ = (u @ vt).float().numpy()
        self.mu_src_ = mu_x.float().numpy()
        self.mu_tgt_ = mu_y.float().numpy()

    def _apply(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mu_src_) @ self.W_ + self.mu_tgt_


class MeanShiftAligner(Aligner):
    """Language-mean centering: x - mu_src + mu_tgt.

    It needs only each language's mean, so X_src and Y_tgt may be unpaired monolingual sets of any sizes.
    """

    _array_attrs = ("mu_src_", "mu_tgt_")
    _paired = False

    def __init__(self, reverse: bool = False) -> None:
        self.reverse = reverse

    def _fit(self, source: np.ndarray, target: np.ndarray) -> None:
        self.mu_src_ = source.astype(np.float64).mean(axis=0).astype(np.float32)
        self.mu_tgt_ = target.astype(np.float64).mean(axis=0).astype(np.float32)

    def _apply(self, x: np.ndarray) -> np.ndarray:
        return x - self.mu_src_ + self.mu_tgt_


ALIGNERS: dict[str, type[Aligner]] = {
    "fc": FCAligner,
    "ae": AEAligner,
    "linear": LinearAligner,
    "procrustes": ProcrustesAligner,
    "meanshift": MeanShiftAligner,
}


def is_trained(arch: str) -> bool:
    """Whether `arch` is fitted by the training loop, so its result depends on the recipe's settings."""
    return issubclass(ALIGNERS[arch], TorchAligner)


def make_aligner(arch: str, **params: Any) -> Aligner:
    """Build an aligner by its short name, checking `params` against that class's parameters."""
    return make_estimator(ALIGNERS, arch, params, "aligner")


def load_aligner(directory: str | os.PathLike) -> Aligner:
    """Load a saved aligner of any registered class."""
    return load_estimator(directory, {cls.__name__: cls for cls in ALIGNERS.values()})


def aligns_target_at_test(aligner: Aligner) -> bool:
    """Whether target-language vectors go through the aligner at test time.

    A reverse aligner exists to map them (into English space). A forward aligner trained with the identity
    term (TR→TR) learned to leave target vectors in place, so the paper keeps it in the model; a closed-form
    forward map (Procrustes, least squares, mean shift) would move native vectors away from where the head was
    trained, so they bypass it.
    """
    return bool(aligner.reverse or getattr(aligner, "identity", False))
