"""How to train on text: one validated value shared by `tune` and `finetune`.

Errors name the parameter (`grad_accum`), not a CLI flag: sweeps build these options from `[e2e]` tables.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from embedstore.base.errors import ConfigError
from embedstore.data.selection import parse_size
from embedstore.estimators.heads import DEFAULT_HEAD, HEADS

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def _option(default: Any, help: str) -> Any:
    """A field with its help, which the CLI flags and config docs read (`base.schema.options_of`)."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class TrainOptions:
    """How to train on text. `batch_size` rows go through the LM per forward pass and `grad_accum` passes
    make one optimizer step, so the effective batch is their product (accumulation lets a GPU that fits 8
    rows train with the paper's batch of 16)."""

    epochs: int = _option(3, "Maximum epochs (early stopping may end sooner).")
    batch_size: int = _option(16, "Rows per forward pass.")
    # LM and aligner: small, so task tuning does not wash out what they learned
    lr: float = _option(2e-5, "Learning rate of the LM (and of the aligner, when it is trained).")
    # the head starts from random weights and must move far in few steps
    head_lr: float = _option(1e-3, "Learning rate of the task head.")
    weight_decay: float = _option(0.01, "AdamW weight decay (not applied to biases and LayerNorm weights).")
    grad_accum: int = _option(1, "Forward passes per optimizer step (effective batch = batch size x this).")
    max_length: int = _option(128, "Tokens per text (longer texts are truncated).")
    val_fraction: float = _option(0.1, "Share of the training rows held out for early stopping.")
    patience: int = _option(2, "Epochs without a lower validation loss before stopping.")
    max_grad_norm: float = _option(1.0, "Gradient norm clip.")
    seed: int = _option(0, "Seed of the split, the sample, the head's init and dropout.")
    size: str | int = _option("all", "English rows to train on: a number, 1k-style, or all (seeded sample).")
    head: str = _option(DEFAULT_HEAD, f"Task head: {', '.join(HEADS)}.")
    checkpoint_every: int = _option(0, "Checkpoint every N optimizer steps (0: at epoch ends only).")
    device: str = _option("auto", "auto (CUDA when present), cpu, cuda, cuda:N.")
    # fp32 unless asked: bf16/fp16 autocast run on CUDA only; auto = bf16 on CUDA where supported, else fp16, and
    # fp32 on CPU (so its result depends on the device: never a default)
    precision: str = _option("fp32", f"{', '.join(PRECISIONS)}: fp32 unless asked; bf16/fp16 autocast on CUDA "
                             "only; auto = bf16 or fp16 on CUDA, fp32 on CPU.")

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "grad_accum", "max_length", "patience"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}: {value!r}; expected a positive integer")
        for name in ("lr", "head_lr", "max_grad_norm"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}: {getattr(self, name)!r}; expected a number > 0")
        if not self.weight_decay >= 0:
            raise ConfigError(f"weight_decay: {self.weight_decay!r}; expected a number >= 0")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"val_fraction: {self.val_fraction!r}; expected a number between 0 and 1")
        if self.checkpoint_every < 0:
            raise ConfigError(f"checkpoint_every: {self.checkpoint_every}; expected 0 (epoch ends only) or more")
        if self.seed < 0:
            raise ConfigError(f"seed: {self.seed}; expected a non-negative integer")
        if self.head not in HEADS:
            raise ConfigError(f"head: {self.head!r}; expected one of {', '.join(HEADS)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision: {self.precision!r}; expected one of {', '.join(PRECISIONS)}")
        parse_size(self.size)

    def to_record(self) -> dict[str, Any]:
        """The options as a run records them: `size` as a row count, so "1k" and 1000 are the same run."""
        return {**asdict(self), "size": parse_size(self.size)}


GRADIENT_OPTIONS = ("batch_size", "max_length", "size", "val_fraction", "head", "seed", "device")
"""The training options `analyze encoder-gradients` reads (its rows, split, batches, head and device): its flags
and API keywords are these fields of `TrainOptions`; the others train nothing there."""
GRADIENT_DEFAULTS = {"head": "linear"}
"""Where that measurement's defaults differ from training's."""
