"""Which dtype the forward passes run in.

Autocast only runs on CUDA: on CPU it is slower than fp32 for these models and would make CPU results differ
from the fp32 store's.
"""
from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from embedstore.base.errors import ConfigError


def amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for fp32."""
    if device.type != "cuda":
        if precision in ("bf16", "fp16"):
            raise ConfigError(f"precision: {precision} needs a CUDA device (got {device}); use auto or fp32")
        return None
    if precision == "fp32":
        return None
    if precision == "bf16" or (precision == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
