"""Heads trained by the shared torch loop (AdamW, early stopping on a validation split, an epoch cap)."""
from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from embedstore.estimators.heads.base import Head
from embedstore.estimators.training import DEFAULT_RECIPE, Recipe, resolve_recipe, split_indices, train


class TorchHead(Head):
    """A head whose network the training loop fits. Its `fit_report` reads the loop's history: converged means
    early stopping ended training (validation loss stopped improving by `min_delta` for `patience` epochs);
    running to the epoch cap is reported as not converged, because the cap then set the result."""

    _state_attrs: ClassVar[tuple[str, ...]] = ("classes_", "history_")
    uses_recipe = True

    def __init__(self, weight_decay: float | None = None, normalize: str = "none",
                 recipe: str | Recipe = DEFAULT_RECIPE, seed: int = 0, progress: bool = False,
                 device: str = "cpu") -> None:
        self.weight_decay = weight_decay
        self.normalize = normalize
        self.recipe = recipe
        self.seed = seed
        self.progress = progress
        self.device = device

    def _recipe(self) -> Recipe:
        """The head recipe, with `weight_decay` (regularisation is a property of the head) overriding it when set."""
        recipe = resolve_recipe(self.recipe, "head")
        return recipe if self.weight_decay is None else replace(recipe, weight_decay=self.weight_decay)

    def _fit_network(self, x: np.ndarray, codes: np.ndarray, n_classes: int,
                     start: None = None) -> tuple[nn.Module, dict]:
        recipe = self._recipe()
        train_idx, val_idx = split_indices(len(x), recipe.val_fraction, self.seed)
        xt, yt = torch.from_numpy(x), torch.from_numpy(codes)
        dim = x.shape[1]
        module, history = train(
            lambda: self._network(dim, n_classes), nn.functional.cross_entropy,
            xt[train_idx], yt[train_idx], xt[val_idx], yt[val_idx],
            recipe, seed=self.seed, progress=self.progress, device=self.device, description=type(self).__name__,
        )
        return module, history.to_dict()

    def _keep_report(self, report: dict) -> None:
        self.history_ = report

    @property
    def fit_report(self) -> dict:
        self._check_fitted()
        history = self.history_
        recipe = history.get("recipe") or {}
        return {"converged": bool(history.get("stopped_early")),
                "criterion": f"early stopping: validation loss not improved by {recipe.get('min_delta', 0)} "
                             f"for {recipe.get('patience', '?')} epochs (else the epoch cap)",
                "iterations": len(history.get("epochs", [])), "best_epoch": history.get("best_epoch"),
                "weight_decay": recipe.get("weight_decay"), "normalize": self.normalize,
                "seconds": history.get("seconds")}
