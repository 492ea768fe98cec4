"""A task head exported beside an encoder: safetensors + JSON, and a loader that needs numpy alone.

The head reads the vectors the exported encoder gives (already in the space the head was trained in), so
serving it is a few matrix products and a softmax; `load_exported_head(dir)` returns that as an object with
`predict_proba` and `predict`. The format is plain enough to load without embedstore (see the README written
beside it).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedstore.base.errors import ConfigError
from embedstore.export.layers import NUMPY_ACTIVATIONS, DenseStep

HEAD_FORMAT = "embedstore.exported_head"
WEIGHTS, CONFIG = "head.safetensors", "head.json"


@dataclass
class ExportedHead:
    steps: list[DenseStep]
    classes: list[Any]

    def predict_proba(self, vectors: np.ndarray) -> np.ndarray:
        x = np.asarray(vectors, dtype=np.float32)
        for step in self.steps:
            x = step.apply(x)
        x = x - x.max(axis=1, keepdims=True)
        e = np.exp(x)
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)

    def predict(self, vectors: np.ndarray) -> list[Any]:
        return [self.classes[i] for i in self.predict_proba(vectors).argmax(axis=1)]


def save_exported_head(directory: Path, steps: list[DenseStep], classes: list[Any]) -> None:
    from safetensors.numpy import save_file

    directory.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for i, step in enumerate(steps):
        tensors[f"{i}.weight"] = np.ascontiguousarray(step.weight, np.float32)
        tensors[f"{i}.bias"] = np.ascontiguousarray(step.bias, np.float32)
    save_file(tensors, str(directory / WEIGHTS))
    config = {"format": HEAD_FORMAT, "classes": classes, "activations": [s.activation for s in steps]}
    (directory / CONFIG).write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")


def load_exported_head(directory: str | Path) -> ExportedHead:
    """The head an export wrote (`OUT/head`): layers in order, each `x @ W.T + b` then its activation, then
    softmax over `classes`."""
    from embedstore.estimators.artifacts import read_arrays

    directory = Path(directory)
    try:
        config = json.loads((directory / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{directory / CONFIG}: not readable JSON ({e})") from None
    if not isinstance(config, dict) or config.get("format") != HEAD_FORMAT:
        raise ConfigError(f"{directory / CONFIG}: format is not {HEAD_FORMAT!r}")
    arrays = read_arrays(directory / WEIGHTS)
    activations = config.get("activations")
    if not isinstance(activations, list) or set(arrays) != {f"{i}.{p}" for i in range(len(activations))
                                                          for p in ("weight", "bias")}:
        raise ConfigError(f"{directory}: {WEIGHTS} does not hold one weight and bias per listed layer")
    classes = checked_classes(config.get("classes"), directory / CONFIG)
    steps = [DenseStep(arrays[f"{i}.weight"], arrays[f"{i}.bias"], a) for i, a in enumerate(activations)]
    _check_steps(steps, len(classes), directory)
    return ExportedHead(steps, classes)


def checked_classes(classes: object, where: Path) -> list[Any]:
    """The class names of an exported config: a non-empty list of distinct strings or integers."""
    if not isinstance(classes, list) or not classes or any(
            not isinstance(c, (str, int)) or isinstance(c, bool) for c in classes) or \
            len({str(c) for c in classes}) != len(classes):
        raise ConfigError(f"{where}: classes: {str(classes)[:80]}; expected a non-empty list of distinct names")
    return classes


def _check_steps(steps: list[DenseStep], n_classes: int, directory: Path) -> None:
    """Layers that chain (each one's input width the previous one's output), end in one output per class, hold
    finite numbers (a NaN weight made every prediction class 0) and use activations the numpy head applies."""
    width = None
    for i, step in enumerate(steps):
        where = f"{directory / WEIGHTS}: layer {i}"
        if step.activation not in NUMPY_ACTIVATIONS:
            raise ConfigError(f"{directory / CONFIG}: activations[{i}]: {str(step.activation)[:40]!r}; expected one "
                              f"of {', '.join(NUMPY_ACTIVATIONS)}")
        if step.weight.ndim != 2 or step.bias.shape != (step.weight.shape[0],) or \
                (width is not None and step.weight.shape[1] != width):
            raise ConfigError(f"{where}: weight {list(step.weight.shape)} and bias {list(step.bias.shape)} do not "
                              f"chain; expected (out, {width if width is not None else 'in'}) and (out,)")
        if not (np.isfinite(step.weight).all() and np.isfinite(step.bias).all()):
            raise ConfigError(f"{where}: holds NaN or infinite values; expected finite weights")
        width = step.weight.shape[0]
    if width != n_classes:
        raise ConfigError(f"{directory / WEIGHTS}: the last layer gives {width} outputs for {n_classes} classes")
