"""What every task head shares: label checks, the input normalisation that is part of the head, prediction
through one torch module, and a fit report that says whether training converged.

A head is trained on one language's vectors and applied to another's aligned vectors, so its preprocessing
(mean/scale or L2) is learned once from the training rows and saved inside the head's network as buffers: a
saved head applies exactly what it was fitted with. Labels may be strings; `classes_` keeps them (in JSON) so
predictions come back as the user's labels.
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.base import ClassifierMixin
from torch import nn

from embedstore.base.errors import ConfigError, InputError
from embedstore.estimators.artifacts import Estimator, as_matrix

_INFER_CHUNK = 8192
#: How a head prepares vectors before its classifier: nothing, unit length per row, or per-dimension mean 0 and
#: variance 1 (scikit-learn's StandardScaler) learned on the training rows.
NORMALIZATIONS: tuple[str, ...] = ("none", "l2", "standard")


def as_labels(y: Any, n_rows: int, name: str = "y") -> np.ndarray:
    """Validate labels once: 1-D, one per row, and of a kind that round-trips through JSON (int, bool or str)."""
    arr = np.asarray(y)
    if arr.dtype.kind == "O" and all(isinstance(v, str) for v in arr.ravel()):
        arr = arr.astype(str)
    if arr.ndim != 1:
        raise InputError(f"{name} must be a 1-D sequence of labels, got shape {arr.shape}")
    if len(arr) != n_rows:
        raise InputError(f"{name} has {len(arr)} labels but X has {n_rows} rows")
    if arr.dtype.kind not in "biuU":
        raise InputError(f"{name} must hold int, bool or str labels, got dtype {arr.dtype}")
    return arr


class Standardize(nn.Module):
    """(x - mean) / scale with the training rows' statistics as buffers (saved with the head's weights)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.scale


class L2Normalize(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(x, dim=1)


def check_normalize(value: str, owner: str) -> None:
    if value not in NORMALIZATIONS:
        raise ConfigError(f"{owner} normalize={value!r}; expected one of {', '.join(NORMALIZATIONS)}")


def fit_normalizer(x: np.ndarray, normalize: str) -> tuple[nn.Module | None, np.ndarray]:
    """The fitted preprocessing module (None for "none") and the training rows passed through it.

    Standardisation uses scikit-learn's rule (a constant dimension keeps scale 1), so a head here and a
    StandardScaler + LogisticRegression pipeline see the same inputs."""
    if normalize == "none":
        return None, x
    if normalize == "l2":
        module = L2Normalize()
    else:
        module = Standardize(x.shape[1])
        mean = x.mean(axis=0, dtype=np.float64)
        scale = x.std(axis=0, dtype=np.float64)
        scale[scale < 10 * np.finfo(np.float64).eps] = 1.0
        module.mean.copy_(torch.from_numpy(mean.astype(np.float32)))
        module.scale.copy_(torch.from_numpy(scale.astype(np.float32)))
    with torch.no_grad():
        return module, module(torch.from_numpy(x)).numpy()


def empty_normalizer(normalize: str, dim: int) -> nn.Module | None:
    if normalize == "none":
        return None
    return L2Normalize() if normalize == "l2" else Standardize(dim)


def with_normalizer(prep: nn.Module | None, network: nn.Module) -> nn.Module:
    """The saved module: the classifier alone without preprocessing (the form heads saved before `normalize`
    existed, so their files still load), else preprocessing then classifier."""
    return network if prep is None else nn.Sequential(prep, network)


class Head(ClassifierMixin, Estimator):
    """A classifier on sentence vectors. Subclasses implement `_fit_network(x, codes, n_classes, start) ->
    (network, fit_report)` on already-normalised rows and `_network(dim, n_classes)` (the empty form a saved
    head's weights load into); this class does the labels, the normalisation, prediction and scoring. A head
    whose solver can start from another fitted head's solution (`fit_from`) also implements `_start_point`.

    `fit_report` says how the fit ended: `converged` (by the stated `criterion`), `iterations` and the settings
    chosen (e.g. the regularisation); a head stopped by a cap says `converged: false`, and reports show it.
    """

    _fit_call = "fit(X, y)"
    _state_attrs: ClassVar[tuple[str, ...]] = ("classes_", "fit_report_")
    #: Whether the head is trained by the shared torch loop (and so takes a `recipe`).
    uses_recipe: ClassVar[bool] = False
    #: The head kind whose `_network` a run on text trains when this kind is asked for (finetune, the sweep's
    #: langalign-e2e and lora-ta): there the LM's optimizer trains the network, so a solver of this kind's own
    #: (L-BFGS, a C search) does not run; None where the kind has no network to train with the LM. Read it
    #: through `heads.text_network`.
    text_network: ClassVar[str | None] = None
    normalize: str
    seed: int
    device: str = "cpu"

    def _network(self, dim: int, n_classes: int) -> nn.Module:
        raise NotImplementedError

    def _fit_network(self, x: np.ndarray, codes: np.ndarray, n_classes: int,
                     start: Any = None) -> tuple[nn.Module, dict]:
        """`start`: where the solver starts instead of from scratch (what `_start_point` made of the head
        `fit_from` was given); None for a plain `fit`, and always for a head without `_start_point`."""
        raise NotImplementedError

    def _start_point(self, start: Head) -> Any:
        """What `fit_from` hands `_fit_network` of `start` (a fitted head of this kind, same rows, same classes and
        normalisation, already checked). A head that cannot start from another's solution refuses."""
        raise ConfigError(f"{type(self).__name__} cannot start from another head's solution; use fit(X, y)")

    def check_params(self) -> None:
        """Refuse out-of-range parameters now (configs call this before a sweep runs; `fit` calls it first)."""
        check_normalize(self.normalize, type(self).__name__)

    def _empty_module(self) -> nn.Module:
        check_normalize(self.normalize, type(self).__name__)
        return with_normalizer(empty_normalizer(self.normalize, self.dim_),
                               self._network(self.dim_, len(self.classes_)))

    def fit(self, X: Any, y: Any) -> Head:
        return self._fit(X, y, None)

    def fit_from(self, start: Head, X: Any, y: Any) -> Head:
        """`fit(X, y)` with the solver started from `start`'s solution instead of from scratch. `start` is a head of
        the same kind fitted on the same rows with other settings, as the C/10 and C×10 refits of a cell's head are
        (`study.experiments.regularisation_neighbours`): where the objective is convex the optimum is the one a
        cold start reaches, in fewer iterations."""
        start._check_fitted()
        labels = as_labels(y, len(as_matrix(X, "X")))
        if type(start) is not type(self) or start.normalize != self.normalize \
                or start.classes_.tolist() != np.unique(labels).tolist():
            raise InputError(f"{type(self).__name__}.fit_from: the start head ({type(start).__name__}) was fitted "
                             "with other classes or another normalisation; expected a head of this kind fitted on "
                             "the same rows")
        return self._fit(X, y, self._start_point(start))

    def _fit(self, X: Any, y: Any, start: Any) -> Head:
        self.check_params()
        x = as_matrix(X, "X")
        labels = as_labels(y, len(x))
        self._check_refit_dim(x.shape[1], "X")
        classes, codes = np.unique(labels, return_inverse=True)
        if len(classes) < 2:
            raise InputError(f"y holds a single class ({classes[0]!r}); a classifier needs at least two")
        prep, xn = fit_normalizer(x, self.normalize)
        network, report = self._fit_network(np.ascontiguousarray(xn, dtype=np.float32), codes.astype(np.int64),
                                            len(classes), start)
        self.module_ = with_normalizer(prep, network).to(self.device).eval()
        self._keep_report({**report, "normalize": self.normalize, "rows": len(x)})
        self.classes_ = classes
        self.dim_ = x.shape[1]
        return self

    def _keep_report(self, report: dict) -> None:
        self.fit_report_ = report

    @property
    def fit_report(self) -> dict:
        """How the fit ended: `converged`, `criterion`, `iterations`, and what was chosen (JSON-ready)."""
        self._check_fitted()
        return dict(self.fit_report_)

    @property
    def saveable(self) -> bool:
        """Whether `save` can write this fitted head without pickling (a sweep reuses only heads it can save)."""
        return True

    @property
    def converged(self) -> bool:
        """Whether the fit stopped by its convergence criterion rather than a cap."""
        return bool(self.fit_report.get("converged"))

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, columns in the order of `classes_`."""
        self._check_fitted()
        x = as_matrix(X, "X")
        self._check_dim(x, "X")
        out = []
        with torch.no_grad():
            for start in range(0, len(x), _INFER_CHUNK):
                logits = self.module_(torch.from_numpy(x[start:start + _INFER_CHUNK]).to(self.device))
                out.append(torch.softmax(logits, dim=1).cpu().numpy())
        return np.concatenate(out).astype(np.float32, copy=False)

    def predict(self, X: Any) -> np.ndarray:
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def score(self, X: Any, y: Any) -> float:
        """Accuracy; labels the head never saw simply count as wrong."""
        predicted = self.predict(X)
        labels = as_labels(y, len(predicted))
        given, fitted = ("string" if a.dtype.kind == "U" else "numeric" for a in (labels, self.classes_))
        if given != fitted:
            raise InputError(f"y holds {given} labels but {type(self).__name__} was fitted on {fitted} labels")
        return float(np.mean(predicted == labels))
