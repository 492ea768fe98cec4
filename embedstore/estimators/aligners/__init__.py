"""Aligners: maps from one language's embedding space onto another's (LangAlign and closed-form baselines).

One class a file. A class that declares a `name` is registered by being defined: importing this package imports
every module in it, and `ALIGNERS` is generated from the classes, so CLI choices, sweep-config validation,
reports and experiments all read one list. Adding an aligner is one file here plus its tests.
"""
from __future__ import annotations

import importlib
import os
import pkgutil
from typing import Any

from embedstore.estimators.aligners.base import Aligner
from embedstore.estimators.aligners.collapse import CollapseCheck, CollapseWarning, detect_collapse, judge_collapse
from embedstore.estimators.aligners.torch_aligner import TorchAligner
from embedstore.estimators.artifacts import load_estimator, lookup, make_estimator, named_subclasses

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

#: Short name → class, in the paper's order (`order`): every registered aligner.
ALIGNERS: dict[str, type[Aligner]] = named_subclasses(Aligner)

from embedstore.estimators.aligners.ae import AEAligner  # noqa: E402  (re-exported for callers)
from embedstore.estimators.aligners.fc import FCAligner  # noqa: E402
from embedstore.estimators.aligners.linear import LinearAligner  # noqa: E402
from embedstore.estimators.aligners.meanshift import MeanShiftAligner  # noqa: E402
from embedstore.estimators.aligners.procrustes import ProcrustesAligner  # noqa: E402

#: What a command fits when not told: closed form, cannot collapse, fits in well under a second.
DEFAULT_ALIGNER = ProcrustesAligner.name


def is_trained(arch: str) -> bool:
    """Whether `arch` is fitted by the training loop, so its result depends on the recipe's settings."""
    return lookup(ALIGNERS, arch, "aligner").trains


def make_aligner(arch: str, **params: Any) -> Aligner:
    """Build an aligner by its short name, checking `params` against that class's parameters."""
    return make_estimator(ALIGNERS, arch, params, "aligner")


def load_aligner(directory: str | os.PathLike) -> Aligner:
    """Load a saved aligner of any registered class."""
    return load_estimator(directory, {cls.__name__: cls for cls in ALIGNERS.values()})


__all__ = ["ALIGNERS", "DEFAULT_ALIGNER", "AEAligner", "Aligner", "CollapseCheck", "CollapseWarning", "FCAligner", "LinearAligner",
           "MeanShiftAligner", "ProcrustesAligner", "TorchAligner", "detect_collapse", "judge_collapse",
           "is_trained", "load_aligner", "make_aligner"]
