"""What a model folder says about its own vectors, read from its files, never from its name.

A sentence-transformers folder describes how its vectors are made: `modules.json` lists the modules
(Transformer → Pooling → Dense ... → Normalize), `1_Pooling/config.json` the pooling, `2_Dense/` a linear layer
and its weights, `config_sentence_transformers.json` the prompts and the one `encode` uses by default. Why read
them: a renamed copy of e5 lost its `query: ` prefix when the prefix was matched on the folder's name, and a
sentence-transformers folder passed as `--model` gave vectors at cosine 0.89 to its own `encode` (no Dense
layer, another pooling), without a word. A folder whose modules embedstore cannot compute is refused in one
line instead.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedstore.base.errors import ConfigError

MODULES_FILE = "modules.json"
PROMPTS_FILE = "config_sentence_transformers.json"
POOLING_MODES = {"mean": "mean", "cls": "cls", "max": "max"}
"""sentence-transformers' pooling modes that embedstore computes, by its names (the rest are refused)."""
_OLD_POOLING_FLAGS = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls",
                      "pooling_mode_max_tokens": "max", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                      "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}
ACTIVATIONS = {"torch.nn.modules.linear.Identity": "identity", "torch.nn.modules.activation.Tanh": "tanh"}


@dataclass(frozen=True)
class DenseLayer:
    """A sentence-transformers Dense module: `activation(x @ weight.T + bias)`."""

    path: Path
    in_features: int
    out_features: int
    activation: str  # a value of ACTIVATIONS

    def weights(self) -> tuple[np.ndarray, np.ndarray | None]:
        from safetensors.numpy import load_file

        tensors = load_file(str(self.path / "model.safetensors"))
        return tensors["linear.weight"].astype(np.float32), (
            tensors["linear.bias"].astype(np.float32) if "linear.bias" in tensors else None)


@dataclass(frozen=True)
class FolderSettings:
    """What the folder declares; None: it declares nothing about that (the registry or defaults decide)."""

    prefix: str | None = None
    pooling: str | None = None
    dense: tuple[DenseLayer, ...] = ()
    normalize: bool = False
    modules_file: Path | None = None

    @property
    def transforms(self) -> bool:
        """Modules after the pooling (Dense, Normalize): vectors are not the pooled hidden states."""
        return bool(self.dense) or self.normalize

    def files(self) -> list[Path]:
        """The files whose bytes shape vectors beyond the transformer's (a model's fingerprint covers them)."""
        if not self.transforms or self.modules_file is None:
            return []
        return [self.modules_file, *(p for layer in self.dense
                                     for p in (layer.path / "config.json", layer.path / "model.safetensors"))]

    def dim(self, hidden_size: int) -> int:
        return self.dense[-1].out_features if self.dense else hidden_size

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """The modules after the pooling, in fp32, as sentence-transformers runs them."""
        for layer in self.dense:
            weight, bias = _weights(layer)
            vectors = vectors @ weight.T + (bias if bias is not None else 0)
            if layer.activation == "tanh":
                vectors = np.tanh(vectors)
        if self.normalize:
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)  # torch.nn.functional.normalize's eps
        return vectors.astype(np.float32, copy=False)


_WEIGHTS: dict[Path, tuple[np.ndarray, np.ndarray | None]] = {}


def _weights(layer: DenseLayer) -> tuple[np.ndarray, np.ndarray | None]:
    if layer.path not in _WEIGHTS:
        _WEIGHTS[layer.path] = layer.weights()
    return _WEIGHTS[layer.path]


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: not readable JSON ({' '.join(str(e).split())})") from None


def _prompt(path: Path) -> str | None:
    """The prompt `encode` adds by default (`default_prompt_name`), "" when the folder names prompts but no
    default (sentence-transformers then adds none), None when the folder says nothing about prompts."""
    file = path / PROMPTS_FILE
    if not file.is_file():
        return None
    config = _json(file)
    name = config.get("default_prompt_name") if isinstance(config, dict) else None
    prompts = config.get("prompts") if isinstance(config, dict) else None
    if name is None:
        return "" if prompts else None
    if not isinstance(prompts, dict) or not isinstance(prompts.get(name), str):
        raise ConfigError(f"{file}: default_prompt_name {name!r} is not among its prompts")
    return prompts[name]


def _pooling(directory: Path) -> str:
    file = directory / "config.json"
    config = _json(file)
    if not isinstance(config, dict):
        raise ConfigError(f"{file}: expected a JSON object")
    if config.get("include_prompt", True) is False:
        raise ConfigError(f"{file}: include_prompt false (the prompt left out of the pooling) is not something "
                          "embedstore computes; its pooling covers every token")
    mode = config.get("pooling_mode")
    modes = [mode] if isinstance(mode, str) else list(mode) if isinstance(mode, list) else \
        [name for flag, name in _OLD_POOLING_FLAGS.items() if config.get(flag)]
    if len(modes) != 1 or modes[0] not in POOLING_MODES:
        raise ConfigError(f"{file}: pooling {'+'.join(modes) or 'none'} is not one embedstore computes; "
                          f"expected one of {', '.join(POOLING_MODES)}")
    return POOLING_MODES[modes[0]]


def _dense(directory: Path) -> DenseLayer:
    file = directory / "config.json"
    config = _json(file)
    activation = config.get("activation_function", "torch.nn.modules.linear.Identity")
    if activation not in ACTIVATIONS:
        raise ConfigError(f"{file}: activation_function {activation!r} is not one embedstore computes; expected "
                          f"one of {', '.join(ACTIVATIONS)}")
    if not (directory / "model.safetensors").is_file():
        raise ConfigError(f"{directory}: no model.safetensors (a Dense layer's weights; pickled .bin weights are "
                          "not read)")
    return DenseLayer(directory, int(config["in_features"]), int(config["out_features"]), ACTIVATIONS[activation])


def read_folder(path: Path) -> FolderSettings:
    """The folder's own settings; a module embedstore cannot compute is a one-line ConfigError naming its file."""
    prefix = _prompt(path)
    file = path / MODULES_FILE
    if not file.is_file():
        return FolderSettings(prefix=prefix)
    modules = _json(file)
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise ConfigError(f"{file}: expected a list of modules")
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    if kinds[:2] != ["Transformer", "Pooling"] or modules[0].get("path", "") != "":
        raise ConfigError(f"{file}: modules {' → '.join(kinds)}; embedstore computes a Transformer in the folder "
                          "itself, then Pooling, Dense layers and Normalize")
    pooling = _pooling(path / modules[1]["path"])
    dense: list[DenseLayer] = []
    normalize = False
    for module, kind in zip(modules[2:], kinds[2:]):
        if kind == "Dense" and not normalize:
            dense.append(_dense(path / module["path"]))
        elif kind == "Normalize" and not normalize:
            normalize = True
        else:
            raise ConfigError(f"{file}: module {module.get('type')!r} (after {' → '.join(kinds[:2])}) is not one "
                              "embedstore computes; expected Dense layers, then Normalize")
    return FolderSettings(prefix=prefix, pooling=pooling, dense=tuple(dense), normalize=normalize, modules_file=file)
