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
from embedstore.export.layers import DenseStep

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
    steps = [DenseStep(arrays[f"{i}.weight"], arrays[f"{i}.bias"], str(a)) for i, a in enumerate(activations)]
    return ExportedHead(steps, list(config["classes"]))
