"""Training on text: step 1 (`tune`: task-tune the LM before encoding) and end-to-end step 3 (`finetune`:
LM → aligner → head on English text, scored on native target-language text, method `langalign-e2e`).

Why a second training loop next to `training.py`: that loop trains small modules on in-memory vectors in
seconds, so it never needs to stop midway. Here every step runs the transformer, an epoch can take hours on a
GPU, and a run must survive being killed. So this loop adds gradient accumulation, autocast (CUDA only: fp32
on CPU keeps results comparable with the stored fp32 vectors), and checkpoints that a rerun of the same
command resumes from, landing on the same final weights as an uninterrupted run (bit for bit on CPU).

Checkpoints (`<out>/checkpoints/`):
- `step-NNNNNNNN/` holds `weights.safetensors` (trainable parameters only: frozen ones are rebuilt from the
  base model and aligner, whose fingerprints are part of the run's identity), `optimizer.safetensors` (every
  AdamW state tensor, keyed by parameter name, plus the torch RNG states so dropout masks continue exactly)
  and `state.json` (step, epoch, history, best-so-far, GradScaler scalars, the run's identity). Nothing is
  pickled, so resuming from a directory someone else wrote cannot run code.
- A checkpoint is written into a hidden temporary directory and renamed into place, so a `step-*` directory
  always holds a complete checkpoint; a kill leaves at most a temporary directory, removed on the next run.
- `best-step-NNNNNNNN.safetensors` holds the trainable weights of the best validation epoch (early stopping
  restores them); the checkpoint that names it keeps it alive.
Checkpoints are taken every `checkpoint_every` optimizer steps and at the end of every epoch (after
validation). Batches are a seeded permutation per epoch, recomputed on resume, so a resumed run skips
exactly the batches it has already trained on. Once the final outputs are written the checkpoints are
deleted; a rerun of a finished run returns its saved result.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import platform
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from embedstore import __version__
from embedstore.estimators.aligners import (Aligner, LinearAligner, MeanShiftAligner, ProcrustesAligner, TorchAligner,
                                 load_aligner)
from embedstore.estimators.artifacts import read_config
from embedstore.encoding.encoder import Tokenized, collate, pool, resolve_device, tokenize
from embedstore.base.errors import ConfigError, InputError
from embedstore.base.metrics import classification_metrics
from embedstore.data.hashing import Text
from embedstore.estimators.heads import HEADS, make_head
from embedstore.encoding.models import TUNE_FILE, DEFAULT_MODEL, ModelSpec, load_model, model_fingerprint, resolve_model
from embedstore.data.selection import parse_size, subsample
from embedstore.data.texts import read_table
from embedstore.estimators.training import split_indices

METHOD = "langalign-e2e"
RESULTS_FILE = "results.json"
WEIGHTS_FILE = "model.safetensors"
CHECKPOINTS = "checkpoints"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_CHECKPOINT_FORMAT = "embedstore.text-checkpoint"
_CHECKPOINT_VERSION = 1
_HASH_CHUNK = 1 << 20
#: Options that change how a run is computed but not what it computes, so a resume may change them.
_RESUMABLE_CHANGES = ("device", "checkpoint_every")


@dataclass(frozen=True)
class TrainOptions:
    """How to train on text. `batch_size` rows go through the LM per forward pass and `grad_accum` passes
    make one optimizer step, so the effective batch is their product (accumulation lets a GPU that fits 8
    rows train with the paper's batch of 16)."""

    epochs: int = 3
    batch_size: int = 16
    lr: float = 2e-5  # LM and aligner: small, so task tuning does not wash out what they learned
    head_lr: float = 1e-3  # the head starts from random weights and must move far in few steps
    weight_decay: float = 0.01  # torch's AdamW default; not applied to biases and LayerNorm weights
    grad_accum: int = 1
    max_length: int = 128
    val_fraction: float = 0.1
    patience: int = 2  # epochs without a lower validation loss before stopping
    max_grad_norm: float = 1.0
    seed: int = 0
    size: str | int = "all"  # English training rows to use (seeded subsample), e.g. "1k"
    head: str = "linear"
    checkpoint_every: int = 0  # optimizer steps; 0 = only at the end of each epoch
    device: str = "auto"
    precision: str = "auto"  # auto = bf16 autocast on CUDA when supported, else fp16; always fp32 on CPU

    def __post_init__(self) -> None:
        positive = ("epochs", "batch_size", "grad_accum", "max_length", "patience")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{_flag(name)}: {value!r}; expected a positive integer")
        for name in ("lr", "head_lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{_flag(name)}: {getattr(self, name)!r}; expected a number > 0")
        # library-only options (the CLI keeps the paper's settings for these)
        if not self.max_grad_norm > 0:
            raise ConfigError(f"TrainOptions.max_grad_norm: {self.max_grad_norm!r}; expected a number > 0")
        if not self.weight_decay >= 0:
            raise ConfigError(f"TrainOptions.weight_decay: {self.weight_decay!r}; expected a number >= 0")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"TrainOptions.val_fraction: {self.val_fraction!r}; expected a number between 0 and 1")
        if self.checkpoint_every < 0:
            raise ConfigError(f"--checkpoint-every: {self.checkpoint_every}; expected 0 (epoch ends only) or more")
        if self.seed < 0:
            raise ConfigError(f"--seed: {self.seed}; expected a non-negative integer")
        if self.head not in HEADS:
            raise ConfigError(f"--head: {self.head!r}; expected one of {', '.join(HEADS)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision: {self.precision!r}; expected one of {', '.join(PRECISIONS)}")
        parse_size(self.size)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class TaskFile:
    """Where a task's texts and labels are: a TSV/CSV/JSONL file and its column names (`pair_column` for
    sentence pairs such as NLI premise/hypothesis)."""

    path: Path
    text_column: str = "text"
    label_column: str = "label"
    pair_column: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))


@dataclass
class TuneResult:
    """What `tune` produced: an ordinary Hugging Face model directory and how it was trained."""

    out: Path
    fingerprint: str
    base_fingerprint: str
    steps: int
    resumed_from_step: int
    history: dict[str, Any]
    provenance: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "out": str(self.out)}


@dataclass
class FinetuneResult:
    """What `finetune` produced; `metrics` and `provenance` are what a sweep record needs, under `method`."""

    out: Path
    metrics: dict[str, Any]
    provenance: dict[str, Any]
    history: dict[str, Any]
    steps: int
    resumed_from_step: int
    method: str = METHOD

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "out": str(self.out)}


# ---------------------------------------------------------------------------------------------- metrics


# ----------------------------------------------------------------------------------------------- graph


class Affine(nn.Module):
    """x @ W + b as a torch module: the closed-form aligners are affine maps, so the end-to-end graph can
    hold them (and train them, with `train_aligner`) like the torch ones. Without W it is a pure shift."""

    def __init__(self, weight: np.ndarray | None, bias: np.ndarray) -> None:
        super().__init__()
        self.weight = None if weight is None else nn.Parameter(torch.from_numpy(np.array(weight, np.float32)))
        self.bias = nn.Parameter(torch.from_numpy(np.array(bias, np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x if self.weight is None else x @ self.weight) + self.bias


def aligner_module(aligner: Aligner) -> nn.Module:
    """The torch module that computes `aligner.transform`, for any registered aligner kind.

    Only English → target aligners fit the LangAlign graph (the head is trained on aligned English); a
    reverse aligner maps the other way and is refused.
    """
    if getattr(aligner, "reverse", False):
        raise ConfigError(f"--aligner: this {type(aligner).__name__} was trained with reverse=True (target → "
                          "English); the end-to-end model needs an English → target aligner")
    if isinstance(aligner, TorchAligner):  # a copy, so training it (train_aligner) never changes the estimator
        return aligner.torch_module()
    if isinstance(aligner, LinearAligner):
        return Affine(aligner.W_, aligner.b_)
    if isinstance(aligner, ProcrustesAligner):
        return Affine(aligner.W_, aligner.mu_tgt_ - aligner.mu_src_ @ aligner.W_)
    if isinstance(aligner, MeanShiftAligner):
        return Affine(None, aligner.mu_tgt_ - aligner.mu_src_)
    raise ConfigError(f"--aligner: {type(aligner).__name__} cannot be expressed as a torch module")


class TextClassifier(nn.Module):
    """LM → mean pooling over the attention mask → (aligner) → head.

    Frozen parts stay in eval mode even while the graph trains: a frozen LM then gives exactly the vectors
    the store holds (no dropout), and a frozen aligner behaves as it did when it was fitted.
    """

    def __init__(self, encoder: nn.Module, head: nn.Module, n_classes: int, aligner: nn.Module | None = None,
                 train_encoder: bool = True, train_aligner: bool = False) -> None:
        super().__init__()
        self.encoder, self.aligner, self.head, self.n_classes = encoder, aligner, head, n_classes
        self.train_encoder, self.train_aligner = train_encoder, train_aligner
        encoder.requires_grad_(train_encoder)
        if aligner is not None:
            aligner.requires_grad_(train_aligner)

    def train(self, mode: bool = True) -> TextClassifier:
        super().train(mode)
        if not self.train_encoder:
            self.encoder.eval()
        if self.aligner is not None and not self.train_aligner:
            self.aligner.eval()
        return self

    def forward(self, batch: dict[str, torch.Tensor], through_aligner: bool = True) -> torch.Tensor:
        with nullcontext() if self.train_encoder else torch.no_grad():
            hidden = self.encoder(**batch).last_hidden_state
        x = pool(hidden.float(), batch["attention_mask"], "mean")
        if self.aligner is not None and through_aligner:
            x = self.aligner(x)
        return self.head(x)


def _head_module(kind: str, dim: int, n_classes: int, seed: int) -> nn.Module:
    """The same network the cached path's head of this kind trains, so e2e and cached results compare
    like for like; initialised under the run's seed without touching the caller's RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make_head(kind)._network(dim, n_classes)


# ------------------------------------------------------------------------------------------------ data


@dataclass
class _Split:
    texts: list[Text]
    codes: np.ndarray | None = None  # class indices; None for the test split, which is scored on its labels
    tok: Tokenized | None = None


def _read_task(task: TaskFile) -> tuple[list[Text], list[str]]:
    columns = [task.text_column, task.label_column] + ([task.pair_column] if task.pair_column else [])
    table = read_table(task.path, columns)
    texts: list[Text] = (list(zip(table[task.text_column], table[task.pair_column])) if task.pair_column
                         else list(table[task.text_column]))
    return texts, list(table[task.label_column])


def file_hash(path: Path) -> str:
    """sha256 (16 hex chars) of a file's bytes: provenance that says which data a result came from."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()[:16]


def _dir_hash(path: Path) -> str:
    """Hash of a saved aligner's files, so a resume with a refitted aligner in the same directory is refused."""
    h = hashlib.sha256()
    for p in sorted(q for q in path.iterdir() if q.is_file()):
        h.update(f"{p.name}\n{file_hash(p)}\n".encode())
    return h.hexdigest()[:16]


def _training_rows(task: TaskFile, options: TrainOptions) -> tuple[_Split, _Split, np.ndarray]:
    """English rows (a seeded subsample when `size` is set) split into train and validation, and the classes.

    The validation split comes from the same English file: the paper tunes on English alone, and early
    stopping must not peek at the target-language test set.
    """
    texts, labels = _read_task(task)
    rows = subsample(len(texts), parse_size(options.size), options.seed, f"{task.path}")
    texts, labels = [texts[i] for i in rows], [labels[i] for i in rows]
    classes = np.array(sorted(set(labels)))
    if len(classes) < 2:
        raise InputError(f"{task.path}: column '{task.label_column}' holds a single label ({classes[0]!r}); "
                         "expected at least two classes")
    train_idx, val_idx = split_indices(len(texts), options.val_fraction, options.seed)
    return _split(texts, labels, train_idx, classes), _split(texts, labels, val_idx, classes), classes


def _split(texts: list[Text], labels: list[str], idx: np.ndarray, classes: np.ndarray) -> _Split:
    codes = np.searchsorted(classes, np.array([labels[i] for i in idx])).astype(np.int64)
    return _Split([texts[i] for i in idx], codes)


# ------------------------------------------------------------------------------------ device, precision


def _amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for fp32. Autocast only runs on CUDA: on CPU it is slower than fp32 for
    these models and would make CPU results differ from the fp32 store's."""
    if device.type != "cuda":
        if precision in ("bf16", "fp16"):
            raise ConfigError(f"--precision: {precision} needs a CUDA device (got {device}); use auto or fp32")
        return None
    if precision == "fp32":
        return None
    if precision == "bf16" or (precision == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


# ---------------------------------------------------------------------------------------- checkpoints


def _fsync_write(path: Path, data: bytes) -> None:
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_file(path: Path) -> None:
    with path.open("rb") as f:
        os.fsync(f.fileno())


def _write_atomic(path: Path, data: bytes) -> None:
    """Temporary file, fsync, rename: a reader (or a resumed run) sees the old file or the new one, whole."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        _fsync_write(tmp, data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=1, ensure_ascii=False) + "\n").encode("utf-8")


def _save_tensors_atomic(tensors: dict[str, torch.Tensor], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
        _fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _trainable(graph: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p for name, p in graph.named_parameters() if p.requires_grad}


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


class _Checkpoints:
    """The checkpoint directory of one run: write, find the latest complete one, restore, clean up."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def latest(self) -> Path | None:
        done = sorted(p for p in self.root.glob("step-*") if p.is_dir() and (p / "state.json").is_file())
        return done[-1] if done else None

    def remove_partial(self) -> None:
        """Temporary directories and files of a killed writer: never complete, never read."""
        for p in self.root.glob(".*"):
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)

    def write_best(self, graph: nn.Module, step: int) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        name = f"best-step-{step:08d}.safetensors"
        _save_tensors_atomic(_trainable(graph), self.root / name)
        return name

    def load_best(self, graph: nn.Module, name: str) -> None:
        _load_weights(graph, self.root / name)

    def save(self, step: int, graph: nn.Module, optimizer: torch.optim.Optimizer, param_names: list[str],
             device: torch.device, state: dict[str, Any]) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / f"step-{step:08d}"
        tmp = self.root / f".tmp-step-{step:08d}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        save_file({k: v.detach().cpu().contiguous() for k, v in _trainable(graph).items()},
                  str(tmp / "weights.safetensors"))
        tensors, scalars = _optimizer_state(optimizer, param_names)
        tensors.update(_rng_tensors(device))
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        state = {**state, "optimizer_scalars": scalars}
        _fsync_write(tmp / "state.json", _json_bytes(state))
        for f in ("weights.safetensors", "optimizer.safetensors"):
            _fsync_file(tmp / f)
        os.replace(tmp, final)
        self._prune(final, state.get("best", {}).get("file"))
        return final

    def _prune(self, keep: Path, best_file: str | None) -> None:
        for p in self.root.glob("step-*"):
            if p != keep:
                shutil.rmtree(p, ignore_errors=True)
        for p in self.root.glob("best-step-*.safetensors"):
            if p.name != best_file:
                p.unlink(missing_ok=True)

    def restore(self, path: Path, graph: nn.Module, optimizer: torch.optim.Optimizer, param_names: list[str],
                device: torch.device) -> dict[str, Any]:
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
        if state.get("format") != _CHECKPOINT_FORMAT or state.get("version") != _CHECKPOINT_VERSION:
            raise ConfigError(f"{path}/state.json is not a version-{_CHECKPOINT_VERSION} embedstore checkpoint; "
                              f"delete {self.root} to start over")
        _load_weights(graph, path / "weights.safetensors")
        tensors = load_file(str(path / "optimizer.safetensors"))
        _load_optimizer_state(optimizer, param_names, tensors, state["optimizer_scalars"])
        _set_rng(tensors, device)
        return state


def _load_weights(graph: nn.Module, path: Path) -> None:
    params = _trainable(graph)
    saved = load_file(str(path))
    if set(saved) != set(params):
        raise ConfigError(f"{path} holds other parameters than this run trains; delete {path.parent} to start over")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(saved[name])


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


# ----------------------------------------------------------------------------------------------- loop


@dataclass
class _Job:
    """Everything one text training run needs; `identity` decides whether a checkpoint belongs to it."""

    graph: TextClassifier
    tokenizer: Any
    train: _Split
    val: _Split
    options: TrainOptions
    device: torch.device
    amp: torch.dtype | None
    checkpoints: _Checkpoints
    identity: dict[str, Any]
    progress: bool
    description: str


@dataclass
class _Outcome:
    history: dict[str, Any]
    steps: int
    resumed_from_step: int
    seconds: float  # over all segments of an interrupted run


def _param_groups(graph: TextClassifier, options: TrainOptions) -> tuple[list[dict[str, Any]], list[str]]:
    """AdamW groups (LM/aligner at `lr`, head at `head_lr`; no decay on biases and norms, as is standard for
    transformers) and the parameter names in the optimizer's index order, which checkpoints key state by."""
    groups, names = [], []
    for prefix, lr in (("encoder.", options.lr), ("aligner.", options.lr), ("head.", options.head_lr)):
        params = [(n, p) for n, p in graph.named_parameters() if p.requires_grad and n.startswith(prefix)]
        for decay in (True, False):
            chosen = [(n, p) for n, p in params if (p.ndim >= 2) == decay]
            if chosen:
                groups.append({"params": [p for _, p in chosen], "lr": lr,
                               "weight_decay": options.weight_decay if decay else 0.0})
                names.extend(n for n, _ in chosen)
    return groups, names


def _loss_and_accuracy(job: _Job, split: _Split) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on a labelled split, in eval mode."""
    logits = _logits(job.graph, job.tokenizer, split.tok, job.device, job.amp, job.options.batch_size)
    codes = torch.from_numpy(split.codes)
    return nn.functional.cross_entropy(logits, codes).item(), float((logits.argmax(1) == codes).float().mean())


def _logits(graph: TextClassifier, tokenizer: Any, tok: Tokenized, device: torch.device, amp: torch.dtype | None,
            batch_size: int, through_aligner: bool = True) -> torch.Tensor:
    """fp32 CPU logits in input order; batches are length-sorted so inference pads almost nothing."""
    was_training = graph.training
    graph.eval()
    order = np.argsort(-tok.lengths, kind="stable")
    out = torch.empty(len(order), graph.n_classes, dtype=torch.float32)
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            with _autocast(device, amp):
                logits = graph(collate(tok, rows, tokenizer.pad_token_id, device), through_aligner=through_aligner)
            out[torch.from_numpy(rows)] = logits.float().cpu()
    graph.train(was_training)
    return out


def _progress(enabled: bool, description: str, total: int, completed: int):
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    bar = Progress(TextColumn(f"[bold]{description}[/bold] epoch {{task.fields[epoch]}}"), BarColumn(),
                   MofNCompleteColumn(), TextColumn("steps  loss {task.fields[loss]:.4f}"), TimeElapsedColumn(),
                   TimeRemainingColumn(), console=Console(stderr=True), disable=not enabled)
    task = bar.add_task(description, total=total, completed=completed, loss=float("nan"), epoch=1)
    return bar, task


def _fresh_state(identity: dict[str, Any]) -> dict[str, Any]:
    return {"format": _CHECKPOINT_FORMAT, "version": _CHECKPOINT_VERSION, "identity": identity,
            "step": 0, "epoch": 0, "epoch_loss_sum": 0.0, "epoch_rows": 0, "epoch_seconds": 0.0, "since_best": 0,
            "stopped_early": False, "seconds": 0.0, "best": {"val_loss": None, "epoch": 0, "step": 0, "file": None},
            "history": {"epochs": [], "step_losses": []}, "scaler": {}}


def _differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Which result-affecting settings (options, data and model hashes) differ between two run identities."""
    return [k for k in sorted(set(saved) | set(current))
            if k not in _RESUMABLE_CHANGES and saved.get(k) != current.get(k)]


def _check_identity(saved: dict[str, Any], current: dict[str, Any], where: Path) -> None:
    differ = _differences(saved, current)
    if differ:
        raise ConfigError(f"{where} holds an unfinished run with different {', '.join(differ)}; rerun with the "
                          f"same options to resume, or delete {where} (or choose another --out) to start over")


def _optimizer_step(job: _Job, group: list[np.ndarray], optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler, params: list[nn.Parameter]) -> float:
    """One optimizer step over `group` (grad_accum micro-batches); returns the group's mean loss.

    Each micro-batch's summed loss is divided by the rows of the whole group, so accumulation computes exactly
    the mean loss of one large batch (also for a short last group).
    """
    rows = sum(len(b) for b in group)
    group_loss = 0.0
    for b in group:
        batch = collate(job.train.tok, b, job.tokenizer.pad_token_id, job.device)
        target = torch.from_numpy(job.train.codes[b]).to(job.device)
        with _autocast(job.device, job.amp):
            logits = job.graph(batch)
        loss = nn.functional.cross_entropy(logits.float(), target, reduction="sum") / rows
        scaler.scale(loss).backward()  # fp16: scaled so small gradients do not underflow; else unchanged
        group_loss += loss.item()
    scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
    torch.nn.utils.clip_grad_norm_(params, job.options.max_grad_norm)
    scaler.step(optimizer)  # fp16: skipped when a gradient overflowed
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return group_loss


def _train(job: _Job) -> _Outcome:
    """Train `job.graph` in place, resuming from the latest complete checkpoint, and leave the best
    validation epoch's weights in it."""
    opts, graph, device = job.options, job.graph, job.device
    started = time.perf_counter()
    graph.to(device)
    groups, param_names = _param_groups(graph, opts)
    optimizer = torch.optim.AdamW(groups)
    scaler = torch.amp.GradScaler("cuda", enabled=job.amp == torch.float16)
    params = [p for g in groups for p in g["params"]]
    n = len(job.train.texts)
    per_epoch = math.ceil(math.ceil(n / opts.batch_size) / opts.grad_accum)  # optimizer steps
    total = per_epoch * opts.epochs
    ckpt = job.checkpoints
    if ckpt.root.is_dir():
        ckpt.remove_partial()
    state = _fresh_state(job.identity)
    rng_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices):
        torch.manual_seed(opts.seed)
        latest = ckpt.latest()
        if latest is not None:
            _check_identity(json.loads((latest / "state.json").read_text(encoding="utf-8"))["identity"],
                            job.identity, ckpt.root.parent)
            state = ckpt.restore(latest, graph, optimizer, param_names, device)
            if state["scaler"]:
                scaler.load_state_dict(state["scaler"])
        resumed_from, seconds_before, history = state["step"], state["seconds"], state["history"]

        def checkpoint() -> None:
            state["seconds"] = seconds_before + time.perf_counter() - started
            state["scaler"] = scaler.state_dict()
            ckpt.save(state["step"], graph, optimizer, param_names, device, state)

        if not history["epochs"]:  # the untrained model's validation score: the baseline "loss falls" is measured from
            val_loss, val_acc = _loss_and_accuracy(job, job.val)
            history["epochs"].append({"epoch": 0, "step": 0, "train_loss": None, "val_loss": val_loss,
                                      "val_accuracy": val_acc})
        bar, task = _progress(job.progress, job.description, total, state["step"])
        with bar:
            for epoch in range(state["epoch"], opts.epochs):
                if state["stopped_early"]:
                    break
                graph.train()
                bar.update(task, epoch=epoch + 1)
                perm = np.random.default_rng([opts.seed, epoch]).permutation(n)
                batches = [perm[i:i + opts.batch_size] for i in range(0, n, opts.batch_size)]
                for g in range(state["step"] - epoch * per_epoch, per_epoch):
                    group = batches[g * opts.grad_accum:(g + 1) * opts.grad_accum]
                    step_started = time.perf_counter()
                    group_loss = _optimizer_step(job, group, optimizer, scaler, params)
                    rows = sum(len(b) for b in group)
                    state["step"] += 1
                    state["epoch_loss_sum"] += group_loss * rows
                    state["epoch_rows"] += rows
                    state["epoch_seconds"] += time.perf_counter() - step_started
                    history["step_losses"].append(group_loss)
                    bar.update(task, completed=state["step"], loss=state["epoch_loss_sum"] / state["epoch_rows"])
                    # the last step of an epoch is checkpointed after validation, below
                    if opts.checkpoint_every and state["step"] % opts.checkpoint_every == 0 and g < per_epoch - 1:
                        checkpoint()
                val_loss, val_acc = _loss_and_accuracy(job, job.val)
                history["epochs"].append({"epoch": epoch + 1, "step": state["step"],
                                          "train_loss": state["epoch_loss_sum"] / state["epoch_rows"],
                                          "val_loss": val_loss, "val_accuracy": val_acc,
                                          "train_seconds": state["epoch_seconds"]})
                state.update(epoch=epoch + 1, epoch_loss_sum=0.0, epoch_rows=0, epoch_seconds=0.0)
                best = state["best"]
                if best["val_loss"] is None or val_loss < best["val_loss"]:
                    best.update(val_loss=val_loss, epoch=epoch + 1, step=state["step"],
                                file=ckpt.write_best(graph, state["step"]))
                    state["since_best"] = 0
                else:
                    state["since_best"] += 1
                    state["stopped_early"] = state["since_best"] >= opts.patience
                checkpoint()
        ckpt.load_best(graph, state["best"]["file"])
    graph.eval()
    history.update(best_epoch=state["best"]["epoch"], best_val_loss=state["best"]["val_loss"],
                   stopped_early=state["stopped_early"], steps_per_epoch=per_epoch)
    return _Outcome(history=history, steps=state["step"], resumed_from_step=resumed_from,
                    seconds=seconds_before + time.perf_counter() - started)


# ------------------------------------------------------------------------------------------ commands


def _load_encoder(spec: ModelSpec, device: torch.device) -> tuple[nn.Module, Any]:
    model, tokenizer = load_model(spec, str(device))
    if tokenizer.pad_token_id is None:
        raise ConfigError(f"--model: {spec.path} has a tokenizer without a padding token; "
                          "expected an encoder like XLM-R or e5")
    return model, tokenizer


def _tokenize(tokenizer: Any, prefix: str, max_length: int, *splits: _Split) -> None:
    for split in splits:
        split.tok = tokenize(tokenizer, split.texts, prefix, max_length)


def _data_record(task: TaskFile, digest: str, rows: int) -> dict[str, Any]:
    return {"path": str(task.path.absolute()), "sha256_16": digest, "rows": rows, "text_column": task.text_column,
            "label_column": task.label_column, "pair_column": task.pair_column}


def _options_record(options: TrainOptions) -> dict[str, Any]:
    return {**asdict(options), "size": parse_size(options.size)}


def _runtime(device: torch.device, amp: torch.dtype | None) -> dict[str, Any]:
    import transformers

    return {"embedstore_version": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "device": str(device), "precision": str(amp).replace("torch.", "") if amp else "float32",
            "hostname": platform.node()}


def _finished(path: Path, identity: dict[str, Any], out: Path) -> dict[str, Any] | None:
    """The saved result of a finished run with this identity; a finished run with another identity in the
    same directory is refused rather than overwritten."""
    if not path.is_file():
        return None
    saved = json.loads(path.read_text(encoding="utf-8"))
    differ = _differences(saved.get("identity") or {}, identity)
    if differ:
        raise ConfigError(f"--out: {out} already holds a finished run with different {', '.join(differ)}; "
                          "choose another --out")
    return saved


@contextmanager
def _lock(out: Path) -> Iterator[None]:
    """One run per output directory: two processes resuming the same checkpoints would interleave them."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / ".embedstore-train.lock").open("w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"--out: {out} is in use by another training run") from None
        yield


def tune(train: TaskFile, out: str | os.PathLike[str], *, model: str = DEFAULT_MODEL,
         options: TrainOptions = TrainOptions(), progress: bool = False) -> TuneResult:
    """Step 1: fine-tune the LM with a classification head on English task data and save the LM alone as an
    ordinary Hugging Face model directory, which `embedstore encode --model OUT` then encodes with.

    Its weights differ from the base model's, so its fingerprint, and every store key made with it, differ
    too: tuned and untuned vectors never mix. The head is discarded: step 3 trains its own.
    """
    out = Path(out)
    spec = resolve_model(model)
    train_split, val_split, classes = _training_rows(train, options)
    identity = {"command": "tune", "base_fingerprint": spec.fingerprint, "train_hash": file_hash(train.path),
                "columns": [train.text_column, train.label_column, train.pair_column],
                "prefix": spec.prefix, **_options_record(options)}
    if (out / "config.json").is_file() and not (out / TUNE_FILE).is_file() and not (out / CHECKPOINTS).is_dir():
        raise ConfigError(f"--out: {out} already holds a model that `embedstore tune` did not write; "
                          "choose another --out")
    device = resolve_device(options.device)
    amp = _amp_dtype(options.precision, device)
    with _lock(out):
        done = _finished(out / TUNE_FILE, identity, out)
        if done is not None:  # a kill may have landed between the result and the clean-up
            shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
            return _tune_result(out, done)
        encoder, tokenizer = _load_encoder(spec, device)
        _tokenize(tokenizer, spec.prefix, options.max_length, train_split, val_split)
        head = _head_module(options.head, spec.hidden_size, len(classes), options.seed)
        graph = TextClassifier(encoder, head, len(classes), train_encoder=True)
        job = _Job(graph, tokenizer, train_split, val_split, options, device, amp, _Checkpoints(out / CHECKPOINTS),
                   identity, progress, "tune")
        outcome = _train(job)
        staging = out / ".staging"
        shutil.rmtree(staging, ignore_errors=True)
        graph.encoder.to("cpu").save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        for f in sorted(staging.iterdir()):
            os.replace(f, out / f.name)
        staging.rmdir()
        provenance = {
            "config": _options_record(options), "seed": options.seed,
            "base_model": {"name": spec.name, "path": str(spec.path), "fingerprint": spec.fingerprint},
            "model_fingerprint": model_fingerprint(out), "prefix": spec.prefix,
            "data": {"train": _data_record(train, identity["train_hash"], len(train_split.texts)),
                     "val_rows": len(val_split.texts), "classes": classes.tolist()},
            "wall_time_s": outcome.seconds, **_runtime(device, amp),
        }
        record = {"identity": identity, "provenance": provenance, "history": outcome.history,
                  "steps": outcome.steps, "resumed_from_step": outcome.resumed_from_step}
        _write_atomic(out / TUNE_FILE, _json_bytes(record))  # written last: its presence means "finished"
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    return _tune_result(out, record)


def _tune_result(out: Path, record: dict[str, Any]) -> TuneResult:
    prov = record["provenance"]
    return TuneResult(out=out, fingerprint=prov["model_fingerprint"],
                      base_fingerprint=prov["base_model"]["fingerprint"], steps=record["steps"],
                      resumed_from_step=record["resumed_from_step"], history=record["history"], provenance=prov)


def finetune(train: TaskFile, test: TaskFile, aligner: str | os.PathLike[str], out: str | os.PathLike[str], *,
             model: str = DEFAULT_MODEL, train_aligner: bool = False, freeze_lm: bool = False,
             aligner_at_test: bool = False, options: TrainOptions = TrainOptions(),
             progress: bool = False) -> FinetuneResult:
    """Step 3 on text: train LM → aligner → head on English rows, then score native target-language rows.

    The aligner is frozen by default (the paper trains it in step 2 and keeps it fixed). Test rows skip it by
    default: they are native target-language vectors, already where the aligner maps English to, and a
    closed-form aligner (mean shift, Procrustes, least squares) would move them away from there. With
    `aligner_at_test` they pass through it too, the single-graph deployment that suits aligners trained with
    LangAlign's identity term (which teaches them to leave target vectors in place). Writes `results.json` (method
    `langalign-e2e`, metrics, provenance) and `model.safetensors` (the trained parameters; frozen ones are
    the base model's and the aligner's, named by fingerprint in the provenance).
    """
    out, aligner_dir = Path(out), Path(aligner)
    spec = resolve_model(model)
    fitted = load_aligner(aligner_dir)
    align = aligner_module(fitted)
    if fitted.dim_ != spec.hidden_size:
        raise ConfigError(f"--aligner: {aligner_dir} maps {fitted.dim_}-d vectors but {spec.name} makes "
                          f"{spec.hidden_size}-d ones; use an aligner trained on this model's vectors")
    train_split, val_split, classes = _training_rows(train, options)
    test_texts, test_labels = _read_task(test)
    test_split = _Split(test_texts)
    identity = {"command": "finetune", "base_fingerprint": spec.fingerprint, "train_hash": file_hash(train.path),
                "test_hash": file_hash(test.path), "aligner_hash": _dir_hash(aligner_dir),
                "columns": [train.text_column, train.label_column, train.pair_column],
                "test_columns": [test.text_column, test.label_column, test.pair_column], "prefix": spec.prefix,
                "train_aligner": train_aligner, "freeze_lm": freeze_lm, "aligner_at_test": aligner_at_test,
                **_options_record(options)}
    device = resolve_device(options.device)
    amp = _amp_dtype(options.precision, device)
    with _lock(out):
        done = _finished(out / RESULTS_FILE, identity, out)
        if done is not None:  # a kill may have landed between the result and the clean-up
            shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
            return _finetune_result(out, done)
        encoder, tokenizer = _load_encoder(spec, device)
        _tokenize(tokenizer, spec.prefix, options.max_length, train_split, val_split, test_split)
        head = _head_module(options.head, spec.hidden_size, len(classes), options.seed)
        graph = TextClassifier(encoder, head, len(classes), align, train_encoder=not freeze_lm,
                               train_aligner=train_aligner)
        job = _Job(graph, tokenizer, train_split, val_split, options, device, amp, _Checkpoints(out / CHECKPOINTS),
                   identity, progress, "finetune")
        outcome = _train(job)
        logits = _logits(graph, tokenizer, test_split.tok, device, amp, options.batch_size, aligner_at_test)
        predicted = classes[logits.argmax(1).numpy()].tolist()
        metrics = classification_metrics(test_labels, predicted)
        metrics["unseen_test_labels"] = sorted(set(test_labels) - set(classes.tolist()))
        _save_tensors_atomic(_trainable(graph), out / WEIGHTS_FILE)
        aligner_config = read_config(aligner_dir)
        provenance = {
            "method": METHOD, "config": _options_record(options), "seed": options.seed,
            "model": spec.name, "model_path": str(spec.path), "model_fingerprint": spec.fingerprint,
            "prefix": spec.prefix, "pooling": "mean", "train_aligner": train_aligner, "freeze_lm": freeze_lm,
            "aligner_at_test": aligner_at_test,
            "aligner": {"dir": str(aligner_dir.absolute()), "hash": identity["aligner_hash"],
                        "class": aligner_config.get("class"), "params": aligner_config.get("params"),
                        "provenance": aligner_config.get("provenance")},
            "data": {"train": _data_record(train, identity["train_hash"], len(train_split.texts)),
                     "val_rows": len(val_split.texts),
                     "test": _data_record(test, identity["test_hash"], len(test_split.texts)),
                     "classes": classes.tolist()},
            "wall_time_s": outcome.seconds, **_runtime(device, amp),
        }
        record = {"method": METHOD, "metrics": metrics, "provenance": provenance, "identity": identity,
                  "history": outcome.history, "steps": outcome.steps, "resumed_from_step": outcome.resumed_from_step}
        _write_atomic(out / RESULTS_FILE, _json_bytes(record))  # written last: its presence means "finished"
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    return _finetune_result(out, record)


def _finetune_result(out: Path, record: dict[str, Any]) -> FinetuneResult:
    return FinetuneResult(out=out, metrics=record["metrics"], provenance=record["provenance"],
                          history=record["history"], steps=record["steps"],
                          resumed_from_step=record["resumed_from_step"])
