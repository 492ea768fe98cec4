"""Any scikit-learn classifier as a head, named by its dotted path (`sklearn:sklearn.svm.LinearSVC`).

Saved without pickles: the estimator is rebuilt from its recorded class name and parameters, and its learned
attributes are restored from the head's files (float arrays as safetensors buffers, integers, strings and
small integer arrays as JSON). An estimator whose learned state is anything else (trees, nested estimators)
cannot be saved this way and is refused when saved, naming the attribute; it can still be used in a sweep,
which never saves heads. Only classes inside the `sklearn` package are imported, so a saved head cannot make
embedstore import arbitrary code.
"""
from __future__ import annotations

import importlib
import time
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.base import ClassifierMixin
from torch import nn

from embedstore.base.errors import ConfigError, InputError
from embedstore.estimators.artifacts import as_matrix
from embedstore.estimators.heads.base import Head

#: How a kind string names a scikit-learn classifier: "sklearn:" then its dotted path.
PREFIX = "sklearn:"


def sklearn_class(dotted: str) -> type:
    """The scikit-learn classifier class at `dotted` (e.g. "sklearn.svm.LinearSVC"; "svm.LinearSVC" works too)."""
    if not isinstance(dotted, str) or not dotted:
        raise ConfigError(f"sklearn head estimator {dotted!r}: expected a dotted class name like sklearn.svm.LinearSVC")
    path = dotted if dotted.startswith("sklearn.") else f"sklearn.{dotted}"
    module_name, _, class_name = path.rpartition(".")
    if not class_name or not all(part.isidentifier() and not part.startswith("_") for part in path.split(".")):
        raise ConfigError(f"sklearn head estimator {dotted!r}: expected a public dotted class name inside sklearn")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError):
        raise ConfigError(f"sklearn head estimator {dotted!r}: no class {class_name} in {module_name}") from None
    if not (isinstance(cls, type) and issubclass(cls, ClassifierMixin)):
        raise ConfigError(f"sklearn head estimator {dotted!r} is not a scikit-learn classifier")
    return cls


class _Arrays(nn.Module):
    """The estimator's learned float arrays as buffers, so they travel in the head's safetensors file."""

    def __init__(self, shapes: dict[str, list[int]]) -> None:
        super().__init__()
        for name, shape in shapes.items():
            self.register_buffer(name, torch.zeros(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _check_learned_name(model: Any, attr: object, estimator: str) -> None:
    """Only what `fit` saved is restored: a learned attribute's name (`coef_`: an identifier ending in `_`, not
    private) that the estimator's class does not define (a method, a property). The names come from a JSON file,
    and `setattr` with any name would let that file replace the estimator's behaviour."""
    if not (isinstance(attr, str) and attr.isidentifier() and attr.endswith("_") and not attr.startswith("_")
            and attr != "classes_" and not hasattr(type(model), attr)):
        raise InputError(f"sklearn head {estimator}: saved attribute {str(attr)[:60]!r} is not a learned attribute "
                         f"of {type(model).__name__}; the head's files were altered")


class SklearnHead(Head):
    """A scikit-learn classifier (`estimator`, built with `params`) behind the head's normalisation.

    Probabilities come from its `predict_proba`, else a softmax over `decision_function` (an SVM's margins are
    not probabilities, but their order, and so `predict`, is the estimator's own). Convergence is read from
    `n_iter_` against a `max_iter` parameter where the estimator has both; otherwise it is reported unknown.
    """

    name = "sklearn"
    order = 90
    _state_attrs: ClassVar[tuple[str, ...]] = ("classes_", "fit_report_", "array_shapes_", "json_attrs_")

    def __init__(self, estimator: str = "sklearn.linear_model.LogisticRegression", params: dict | None = None,
                 normalize: str = "standard", seed: int = 0, device: str = "cpu") -> None:
        self.estimator = estimator
        self.params = params
        self.normalize = normalize
        self.seed = seed
        self.device = device

    def _build(self) -> Any:
        cls = sklearn_class(self.estimator)
        params = dict(self.params or {})
        if "random_state" in cls().get_params() and "random_state" not in params:
            params["random_state"] = self.seed
        try:
            return cls(**params)
        except TypeError as exc:
            raise ConfigError(f"sklearn head {self.estimator}: {exc}") from None

    def check_params(self) -> None:
        super().check_params()
        self._build()

    def _network(self, dim: int, n_classes: int) -> nn.Module:
        return _Arrays(getattr(self, "array_shapes_", {}))

    def _fit_network(self, x: np.ndarray, codes: np.ndarray, n_classes: int,
                     start: None = None) -> tuple[nn.Module, dict]:
        t0 = time.perf_counter()
        model = self._build().fit(x, codes)
        if not (hasattr(model, "predict_proba") or hasattr(model, "decision_function")):
            raise ConfigError(f"sklearn head {self.estimator} has neither predict_proba nor decision_function")
        arrays, plain = {}, {}
        for attr, value in vars(model).items():
            if not attr.endswith("_") or attr.startswith("_") or attr == "classes_":
                continue
            if isinstance(value, np.ndarray) and value.dtype.kind == "f":
                # kept as float32 (how they are saved), so the fitted head and the loaded one agree exactly
                arrays[attr] = value.astype(np.float32)
                setattr(model, attr, arrays[attr].astype(value.dtype))
            elif isinstance(value, np.ndarray) and value.dtype.kind in "biu" and value.size <= 10_000:
                plain[attr] = {"int_array": value.tolist()}
            elif isinstance(value, (bool, int, float, str, np.integer, np.floating)) or value is None:
                plain[attr] = value.item() if isinstance(value, np.generic) else value
            else:
                plain[attr] = {"unsaveable": type(value).__name__}
        self.array_shapes_ = {k: list(v.shape) for k, v in arrays.items()}
        self.json_attrs_ = plain
        self.model_ = model
        holder = _Arrays(self.array_shapes_)
        for attr, value in arrays.items():
            getattr(holder, attr).copy_(torch.from_numpy(value))
        n_iter = getattr(model, "n_iter_", None)
        max_iter = model.get_params().get("max_iter")
        iterations = None if n_iter is None else int(np.max(n_iter))
        converged = None if iterations is None or max_iter is None else iterations < max_iter
        return holder, {"converged": converged, "iterations": iterations, "max_iter": max_iter,
                        "criterion": f"{type(model).__name__}'s own (n_iter_ < max_iter)" if converged is not None
                        else "unknown: the estimator reports no n_iter_/max_iter",
                        "estimator": type(model).__module__ + "." + type(model).__name__,
                        "seconds": round(time.perf_counter() - t0, 3)}

    @property
    def converged(self) -> bool:
        return bool(self.fit_report.get("converged"))

    def _model(self) -> Any:
        """The fitted estimator: the one from `fit`, or rebuilt from the saved parameters and arrays."""
        if getattr(self, "model_", None) is None:
            unsaveable = self._unsaveable()
            if unsaveable:
                raise InputError(f"sklearn head {self.estimator}: learned attribute {unsaveable[0]!r} was not saved")
            model = self._build()
            for attr in [*self.array_shapes_, *self.json_attrs_]:
                _check_learned_name(model, attr, self.estimator)
            holder = self.module_[-1] if isinstance(self.module_, nn.Sequential) else self.module_
            for attr in self.array_shapes_:
                setattr(model, attr, getattr(holder, attr).cpu().numpy().astype(np.float64))
            for attr, value in self.json_attrs_.items():
                setattr(model, attr, np.asarray(value["int_array"]) if isinstance(value, dict) else value)
            model.classes_ = np.arange(len(self.classes_))
            self.model_ = model
        return self.model_

    @property
    def saveable(self) -> bool:
        return not self._unsaveable()

    def _unsaveable(self) -> list[str]:
        return [k for k, v in self.json_attrs_.items() if isinstance(v, dict) and "unsaveable" in v]

    def save(self, directory: Any, provenance: Any = None) -> Any:
        unsaveable = self._unsaveable()
        if unsaveable:
            raise ConfigError(f"sklearn head {self.estimator}: learned attribute {unsaveable[0]!r} "
                              f"({self.json_attrs_[unsaveable[0]]['unsaveable']}) cannot be saved without pickling; "
                              "use it in sweeps, or choose an estimator with array-only state")
        return super().save(directory, provenance)

    def predict_proba(self, X: Any) -> np.ndarray:
        self._check_fitted()
        x = as_matrix(X, "X")
        self._check_dim(x, "X")
        prep = self.module_[0] if isinstance(self.module_, nn.Sequential) else None
        if prep is not None:
            with torch.no_grad():
                x = prep(torch.from_numpy(x)).numpy()
        model = self._model()
        if hasattr(model, "predict_proba"):
            proba = model.predict_proba(x)
        else:
            scores = np.asarray(model.decision_function(x), dtype=np.float64)
            if scores.ndim == 1:
                scores = np.stack([np.zeros_like(scores), scores], axis=1)
            scores -= scores.max(axis=1, keepdims=True)
            proba = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
        return np.asarray(proba, dtype=np.float32)
