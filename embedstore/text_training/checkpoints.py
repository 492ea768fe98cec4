"""The checkpoint directory of one run (`<out>/checkpoints/`): write, find the latest complete one, restore.

- `step-NNNNNNNN/` holds `weights.safetensors` (trainable parameters only: frozen ones are rebuilt from the
  base model and aligner, whose fingerprints are part of the run's identity), `optimizer.safetensors` (every
  AdamW state tensor, keyed by parameter name, plus the torch RNG states so dropout masks continue exactly)
  and `state.json` (the loop's state: step, epoch, history, best-so-far, GradScaler scalars, the run's
  identity). Nothing is pickled, so resuming from a directory someone else wrote cannot run code.
- A checkpoint is written into a hidden temporary directory and renamed into place, so a `step-*` directory
  always holds a complete checkpoint; a kill leaves at most a temporary directory, removed on the next run.
- `best-step-NNNNNNNN.safetensors` holds the trainable weights of the best validation epoch (early stopping
  restores them); the checkpoint that names it keeps it alive.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from embedstore.base.errors import ConfigError
from embedstore.base.atomic import PARTIAL_MARK, atomic_dir
from embedstore.text_training.files import read_json_object, save_tensors, save_tensors_atomic
from embedstore.text_training.model import trainable

CHECKPOINTS = "checkpoints"
_FORMAT = "embedstore.text-checkpoint"
_VERSION = 1
_NAME = re.compile(r"(best-)?step-\d{8}(\.safetensors)?")  # what `save` and `write_best` name their outputs


class Checkpoints:
    """The checkpoints of the run whose output directory is `out`."""

    def __init__(self, out: Path) -> None:
        self.root = out / CHECKPOINTS

    def latest(self) -> Path | None:
        done = sorted(p for p in self.root.glob("step-*") if p.is_dir() and (p / "state.json").is_file())
        return done[-1] if done else None

    def remove_partial(self) -> None:
        """Temporary directories and files of a killed writer: never complete, never read."""
        for p in self._ours():
            if PARTIAL_MARK in p.name:
                shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)

    def remove(self) -> None:
        """Once a run's result is written its checkpoints are dead weight. Only what checkpoints are made of is
        deleted, and the directory only when that leaves it empty: nothing else put there is ever lost."""
        for p in self._ours():
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        if self.root.is_dir() and not any(self.root.iterdir()):
            self.root.rmdir()

    def _ours(self) -> list[Path]:
        """Entries of the checkpoint directory with the names this class (or an atomic write of them) gives."""
        if not self.root.is_dir():
            return []
        return [p for p in self.root.iterdir() if _NAME.fullmatch(p.name.removeprefix(".").split(PARTIAL_MARK)[0])]

    def write_best(self, graph: nn.Module, step: int) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        name = f"best-step-{step:08d}.safetensors"
        save_tensors_atomic(trainable(graph), self.root / name)
        return name

    def load_best(self, graph: nn.Module, name: str) -> None:
        _load_weights(graph, self.root / name)

    def saved_identity(self, path: Path) -> dict[str, Any]:
        return read_json_object(path / "state.json", "a checkpoint state").get("identity") or {}

    def save(self, step: int, graph: nn.Module, optimizer: torch.optim.Optimizer, param_names: list[str],
             device: torch.device, state: dict[str, Any]) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / f"step-{step:08d}"
        with atomic_dir(final, replace=True) as tmp:  # a step-* directory is complete or absent
            save_tensors(trainable(graph), tmp / "weights.safetensors")
            tensors, scalars = _optimizer_state(optimizer, param_names)
            tensors.update(_rng_tensors(device))
            save_file(tensors, str(tmp / "optimizer.safetensors"))
            state = {"format": _FORMAT, "version": _VERSION, **state, "optimizer_scalars": scalars}
            (tmp / "state.json").write_text(json.dumps(state, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        self._prune(final, state.get("best", {}).get("file"))
        return final

    def _prune(self, keep: Path, best_file: str | None) -> None:
        for p in self._ours():
            if p.name.startswith("step-") and p != keep:
                shutil.rmtree(p, ignore_errors=True)
            elif p.name.startswith("best-step-") and p.name != best_file:
                p.unlink(missing_ok=True)

    def restore(self, path: Path, graph: nn.Module, optimizer: torch.optim.Optimizer, param_names: list[str],
                device: torch.device) -> dict[str, Any]:
        """Load weights, optimizer and RNG states into the run; return the loop's saved state."""
        state = read_json_object(path / "state.json", "a checkpoint state")
        if state.get("format") != _FORMAT or state.get("version") != _VERSION:
            raise ConfigError(f"{path}/state.json is not a version-{_VERSION} embedstore checkpoint; "
                              f"delete {self.root} to start over")
        _load_weights(graph, path / "weights.safetensors")
        tensors = load_file(str(path / "optimizer.safetensors"))
        _load_optimizer_state(optimizer, param_names, tensors, state["optimizer_scalars"])
        _set_rng(tensors, device)
        return state


def _load_weights(graph: nn.Module, path: Path) -> None:
    params = trainable(graph)
    saved = load_file(str(path))
    if set(saved) != set(params):
        raise ConfigError(f"{path} holds other parameters than this run trains; delete {path.parent} to start over")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(saved[name])


def _rng_tensors(device: torch.device) -> dict[str, torch.Tensor]:
    out = {"rng.cpu": torch.get_rng_state()}
    if device.type == "cuda":
        out[f"rng.cuda.{device.index or 0}"] = torch.cuda.get_rng_state(device)
    return out


def _set_rng(tensors: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(tensors["rng.cpu"])
    key = f"rng.cuda.{device.index or 0}"
    if device.type == "cuda" and key in tensors:  # a CPU checkpoint resumed on GPU keeps the seeded CUDA RNG
        torch.cuda.set_rng_state(tensors[key], device)


def _optimizer_state(optimizer: torch.optim.Optimizer, param_names: list[str]
                     ) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, Any]]]:
    """AdamW's per-parameter state, keyed by parameter name: tensors for safetensors, the rest for JSON."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, state in optimizer.state_dict()["state"].items():
        name = param_names[index]
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{name}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(name, {})[key] = value
    return tensors, scalars


def _load_optimizer_state(optimizer: torch.optim.Optimizer, param_names: list[str], tensors: dict[str, torch.Tensor],
                          scalars: dict[str, dict[str, Any]]) -> None:
    by_name: dict[str, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            name, _, field_name = key[len("optim."):].rpartition(".")
            by_name.setdefault(name, {})[field_name] = value
    for name, values in scalars.items():
        by_name.setdefault(name, {}).update(values)
    unknown = set(by_name) - set(param_names)
    if unknown:
        raise ConfigError(f"checkpoint has optimizer state for parameters this run does not train "
                          f"({min(unknown)}, ...); delete the checkpoints to start over")
    template = optimizer.state_dict()
    template["state"] = {param_names.index(name): values for name, values in by_name.items()}
    optimizer.load_state_dict(template)  # moves state tensors to each parameter's device
