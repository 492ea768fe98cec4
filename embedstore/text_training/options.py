"""How to train on text: one validated value shared by `tune` and `finetune`.

Errors name the parameter (`grad_accum`), not a CLI flag: sweeps build these options from `[e2e]` tables.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from embedstore.base.errors import ConfigError
from embedstore.data.selection import parse_size
from embedstore.estimators.heads import DEFAULT_HEAD, HEADS

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


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
    head: str = DEFAULT_HEAD
    checkpoint_every: int = 0  # optimizer steps; 0 = only at the end of each epoch
    device: str = "auto"
    #: fp32 unless asked: bf16/fp16 autocast run on CUDA only; auto = bf16 on CUDA where supported, else fp16, and
    #: fp32 on CPU (so its result depends on the device: never a default)
    precision: str = "fp32"

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
