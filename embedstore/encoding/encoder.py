"""The PyTorch forward pass over the batches of `batching`: padded batches in, pooled hidden layers out."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from embedstore.base.errors import ConfigError
from embedstore.encoding.batching import Tokenized, pad_batch
from embedstore.encoding.packed_linear import DEFAULT_KERNEL, KERNELS, packed_copy
from embedstore.store import POOLINGS


def collate(tok: Tokenized, rows: np.ndarray, pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(array).to(device) for name, array in pad_batch(tok, rows, pad_id).items()}


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Masked pooling: padding never leaks into a vector, whatever its batch neighbours."""
    if pooling == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    if pooling == "mean":
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
    if pooling == "max":
        return hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).max(1).values
    raise ConfigError(f"pooling: '{pooling}' is not supported; expected one of {', '.join(POOLINGS)}")


def pool_array(hidden: np.ndarray, mask: np.ndarray, pooling: str) -> np.ndarray:
    """`pool` in numpy, for the ONNX Runtime engine, whose process must not wake torch's thread team between two
    session runs: on 2 cores torch's OpenMP threads and ONNX Runtime's spinning pool then oversubscribe the cores,
    and `pool` took ~20 ms a batch where these single-threaded loops take ~1 ms (cProfile of an encode,
    docs/performance.md). The same sums in fp32, so the vectors equal `pool`'s to fp32 noise."""
    if pooling == "cls":
        return np.ascontiguousarray(hidden[:, 0])
    m = mask[..., None].astype(hidden.dtype)
    if pooling == "mean":
        return (hidden * m).sum(1) / np.maximum(m.sum(1), 1.0)
    if pooling == "max":
        return np.where(m == 0, np.finfo(hidden.dtype).min, hidden).max(1)
    raise ConfigError(f"pooling: '{pooling}' is not supported; expected one of {', '.join(POOLINGS)}")


def check_right_padding(tokenizer) -> None:
    if getattr(tokenizer, "padding_side", "right") != "right":
        raise ConfigError("tokenizer pads on the left; cls pooling needs right padding")


class Encoder:
    """A loaded model in inference mode that turns padded batches into pooled vectors per layer.

    On CPU its fp32 pass runs its linear layers with the kernel `linear["kernel"]` names, one of
    `packed_linear.KERNELS`: "onednn-packed" (the default), a copy whose weights are packed for oneDNN
    (`packed_linear`: the same products, 20-35 % faster on some machines, ~10 % slower on others), or "mkl", the
    model as it is. `backend` passes the record of the kernel measured faster here (`engine_choice.linear_kernel`),
    kept as `linear` for the encode's provenance. Under autocast (`precision`) it runs the model as it is, whose
    layers autocast knows."""

    def __init__(self, model, tokenizer, device: torch.device, linear: dict | None = None) -> None:
        self.linear = dict(linear) if linear is not None else {"kernel": DEFAULT_KERNEL, "reason": "the default"}
        if self.linear.get("kernel") not in KERNELS:
            raise ConfigError(f"linear kernel {self.linear.get('kernel')!r}: expected one of {', '.join(KERNELS)}")
        check_right_padding(tokenizer)
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.device = device
        packs = device.type == "cpu" and self.linear["kernel"] == DEFAULT_KERNEL
        self.packed = packed_copy(self.model) if packs else self.model

    @torch.inference_mode()
    def forward(self, batch: dict[str, torch.Tensor], layers: Sequence[int], pooling: str) -> dict[int, np.ndarray]:
        num_layers = self.model.config.num_hidden_layers
        need_all = any(layer != num_layers for layer in layers)
        model = self.model if torch.is_autocast_enabled(self.device.type) else self.packed
        out = model(**batch, output_hidden_states=need_all)
        hidden = out.hidden_states if need_all else {num_layers: out.last_hidden_state}
        mask = batch["attention_mask"]
        return {layer: pool(hidden[layer], mask, pooling).float().cpu().numpy() for layer in layers}
