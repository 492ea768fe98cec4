"""Task heads: classifiers trained on (aligned) sentence vectors with the shared training loop.

Heads are trained on one language's vectors and applied to another's aligned vectors, so they take the same
`recipe`/`seed` knobs as the aligners and save to the same safetensors + JSON form. Labels may be strings;
`classes_` keeps them (in JSON) so predictions come back as the user's labels.
"""
from __future__ import annotations

import os
from dataclasses import replace
from typing import Any, Self

import numpy as np
import torch
from sklearn.base import ClassifierMixin
from torch import nn

from embedstore.estimators.artifacts import Estimator, as_matrix, load_estimator, make_estimator, named_subclasses
from embedstore.base.errors import ConfigError, InputError
from embedstore.estimators.training import DEFAULT_RECIPE, Recipe, resolve_recipe, split_indices, train

_INFER_CHUNK = 8192


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


class Head(ClassifierMixin, Estimator):
    """Shared fit/predict for classification heads; subclasses only define their network (and a `name`)."""

    _fit_call = "fit(X, y)"
    _state_attrs = ("classes_", "history_")

    def __init__(self, weight_decay: float | None = None, recipe: str | Recipe = DEFAULT_RECIPE, seed: int = 0,
                 progress: bool = False, device: str = "cpu") -> None:
        self.weight_decay = weight_decay
        self.recipe = recipe
        self.seed = seed
        self.progress = progress
        self.device = device

    def _network(self, dim: int, n_classes: int) -> nn.Module:
        raise NotImplementedError

    def _empty_module(self) -> nn.Module:
        return self._network(self.dim_, len(self.classes_))

    def _recipe(self) -> Recipe:
        """The head recipe, with `weight_decay` (regularisation is a property of the head) overriding it when set."""
        recipe = resolve_recipe(self.recipe, "head")
        return recipe if self.weight_decay is None else replace(recipe, weight_decay=self.weight_decay)

    def fit(self, X: Any, y: Any) -> Self:
        x = as_matrix(X, "X")
        labels = as_labels(y, len(x))
        self._check_refit_dim(x.shape[1], "X")
        classes, codes = np.unique(labels, return_inverse=True)
        if len(classes) < 2:
            raise InputError(f"y holds a single class ({classes[0]!r}); a classifier needs at least two")
        recipe = self._recipe()
        train_idx, val_idx = split_indices(len(x), recipe.val_fraction, self.seed)
        xt, yt = torch.from_numpy(x), torch.from_numpy(codes.astype(np.int64))
        dim, n_classes = x.shape[1], len(classes)
        self.module_, history = train(
            lambda: self._network(dim, n_classes), nn.functional.cross_entropy,
            xt[train_idx], yt[train_idx], xt[val_idx], yt[val_idx],
            recipe, seed=self.seed, progress=self.progress, device=self.device, description=type(self).__name__,
        )
        self.history_ = history.to_dict()
        self.classes_ = classes
        self.dim_ = dim
        return self

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


class LinearHead(Head):
    """Multinomial logistic regression: the simplest probe of how much task signal the aligned vectors carry."""

    name = "linear"
    order = 10

    def _network(self, dim: int, n_classes: int) -> nn.Module:
        return nn.Linear(dim, n_classes)


class MLPHead(Head):
    """Shaped like RoBERTa's classification head (dropout, dense d→d, tanh, dropout, out_proj): the paper trains
    "a task head in the same form as the LM's", so results are comparable to fine-tuning that head.

    `dropout` defaults to RoBERTa's hidden dropout, 0.1.
    """

    name = "mlp"
    order = 20

    def __init__(self, dropout: float = 0.1, weight_decay: float | None = None, recipe: str | Recipe = DEFAULT_RECIPE,
                 seed: int = 0, progress: bool = False, device: str = "cpu") -> None:
        super().__init__(weight_decay=weight_decay, recipe=recipe, seed=seed, progress=progress, device=device)
        self.dropout = dropout

    def _network(self, dim: int, n_classes: int) -> nn.Module:
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"MLPHead dropout={self.dropout!r} must be in [0, 1)")
        return nn.Sequential(nn.Dropout(self.dropout), nn.Linear(dim, dim), nn.Tanh(),
                             nn.Dropout(self.dropout), nn.Linear(dim, n_classes))


#: Short name → class, generated from the classes that declare a `name`.
HEADS: dict[str, type[Head]] = named_subclasses(Head)
DEFAULT_HEAD = LinearHead.name


def make_head(kind: str, **params: Any) -> Head:
    """Build a head by its short name, checking `params` against that class's parameters."""
    return make_estimator(HEADS, kind, params, "head")


def load_head(directory: str | os.PathLike) -> Head:
    """Load a saved head of any registered class."""
    return load_estimator(directory, {cls.__name__: cls for cls in HEADS.values()})
