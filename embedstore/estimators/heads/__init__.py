"""Task heads: classifiers on (aligned) sentence vectors, one family a file.

A class that declares a `name` is registered by being defined: importing this package imports every module in
it, and `HEADS` is generated from the classes, so CLI choices, sweep-config validation, reports and experiments
read one list. A head kind is a registered name (`logistic`, `linear`, `mlp`) or `sklearn:<dotted.Class>` for
any scikit-learn classifier.
"""
from __future__ import annotations

import importlib
import os
import pkgutil
from typing import Any

from embedstore.base.errors import ConfigError
from embedstore.estimators.artifacts import load_estimator, lookup, make_estimator, named_subclasses
from embedstore.estimators.heads.base import NORMALIZATIONS, Head, as_labels
from embedstore.estimators.heads.sklearn_head import PREFIX as SKLEARN_PREFIX, sklearn_class

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

#: Short name → class, generated from the classes that declare a `name`.
HEADS: dict[str, type[Head]] = named_subclasses(Head)

from embedstore.estimators.heads.linear import LinearHead  # noqa: E402  (re-exported for callers)
from embedstore.estimators.heads.logistic import LogisticHead  # noqa: E402
from embedstore.estimators.heads.mlp import MLPHead  # noqa: E402
from embedstore.estimators.heads.sklearn_head import SklearnHead  # noqa: E402

#: What every command and sweep fits unless told otherwise: converged, regularisation chosen by CV.
DEFAULT_HEAD = LogisticHead.name


def head_class(kind: str) -> type[Head]:
    """The class behind a head kind: a registered name, or `sklearn:<dotted.Class>` (checked to exist)."""
    if isinstance(kind, str) and kind.startswith(SKLEARN_PREFIX):
        sklearn_class(kind[len(SKLEARN_PREFIX):])
        return SklearnHead
    if kind == SklearnHead.name:
        raise ConfigError(f"head {kind!r}: name the classifier, e.g. {SKLEARN_PREFIX}sklearn.svm.LinearSVC")
    return lookup(HEADS, kind, "head")


def check_head_kind(kind: Any, where: str) -> None:
    """A ConfigError naming `where` unless `kind` names a head (what configs and cells validate with)."""
    if not isinstance(kind, str):
        raise ConfigError(f"{where}: {kind!r} is not a head; use one of {', '.join(head_kinds())}")
    try:
        head_class(kind)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def text_network(kind: str) -> str:
    """The head kind whose network trains when a run on text (finetune, langalign-e2e, lora-ta) is given `kind`:
    the one home of that fact. "logistic" and "linear" both train one `nn.Linear` under the LM's optimizer there,
    so two such runs that differ only by that name are the same run; configs refuse them and reports merge them."""
    network = head_class(kind).text_network
    if network is None:
        usable = ", ".join(name for name, cls in HEADS.items() if cls.text_network is not None)
        raise ConfigError(f"head {kind!r}: has no network to train with the LM on text; expected one of {usable}")
    return network


def head_kinds() -> list[str]:
    """The kinds a user can type, for help texts: the registered names and the scikit-learn form."""
    return [n for n in HEADS if n != SklearnHead.name] + [f"{SKLEARN_PREFIX}<sklearn.module.Class>"]


def make_head(kind: str, **params: Any) -> Head:
    """Build a head by its kind, checking `params` against that class's parameters."""
    if isinstance(kind, str) and kind.startswith(SKLEARN_PREFIX):
        head_class(kind)
        return make_estimator(HEADS, SklearnHead.name, {"estimator": kind[len(SKLEARN_PREFIX):], **params}, "head")
    head_class(kind)
    return make_estimator(HEADS, kind, params, "head")


def build_head(kind: str, *, seed: int, recipe: Any = None, params: dict[str, Any] | None = None) -> Head:
    """The head a sweep cell or `train-head` fits: the kind's own `params`, the run's seed, and the recipe for
    heads the torch loop trains (a converged solver has no epochs or learning rate to take from a recipe)."""
    cls = head_class(kind)
    extra: dict[str, Any] = {"seed": seed}
    if cls.uses_recipe and recipe is not None:
        extra["recipe"] = recipe
    return make_head(kind, **{**extra, **(params or {})})


def load_head(directory: str | os.PathLike) -> Head:
    """Load a saved head of any registered class."""
    return load_estimator(directory, {cls.__name__: cls for cls in HEADS.values()})


__all__ = ["DEFAULT_HEAD", "HEADS", "NORMALIZATIONS", "Head", "LinearHead", "LogisticHead", "MLPHead",
           "SklearnHead", "as_labels", "build_head", "check_head_kind", "head_class", "head_kinds", "load_head",
           "make_head", "text_network"]
