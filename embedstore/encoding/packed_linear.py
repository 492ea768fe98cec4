"""PyTorch's CPU forward pass with its linear layers' weights packed once for oneDNN: the same fp32 products, faster.

Why: PyTorch runs an `nn.Linear` on CPU as an MKL sgemm that lays the weight out again on every call. The weight
products are ~85 % of an encoder's forward pass (torch.profiler over the demo's batches), and on the AMD EPYC the
demo is measured on, MKL's fp32 kernels reached 78-89 GFLOP/s a core on e5-small's four weight shapes where oneDNN,
with each weight reordered once into its blocked layout (`mkldnn._reorder_linear_weight`, what PyTorch's own
inference compiler does with frozen weights), reached 102-108; with two threads 39-55 against 65-90 (CPU seconds
under load: docs/performance.md, "The demo: where its time goes").

The same numbers: oneDNN's default fp32 math (no bf16 or tf32 shortcuts), only the order of the sums differs, like
two batch sizes or ONNX Runtime's fp32 kernels. Each packed layer is checked against `F.linear` on a probe input
when it is packed, and one that disagrees beyond `TOLERANCE` keeps the plain layer; the pooled vectors of e5-small
and of the tiny XLM-R move by ~1e-6, inside the 1e-5 the engines already share (the ONNX export check's bound), so
the store key stays the model's (docs/performance.md, "Why fp32 ONNX shares the PyTorch key").

The model itself is left as it is: the process's other users of `models.load_once` (an export's tracing, autocast,
a fine-tune) keep the plain layers; the packed copy shares every tensor with it but the packed weights (e5-small:
85 MB more).
"""
from __future__ import annotations

import copy
import itertools
import weakref

import torch
from torch import nn
from torch.nn import functional as F

TOLERANCE = 1e-5
"""Largest difference from `F.linear` a packed layer may show on its probe input, relative to the output's scale
(the ONNX export check's bound on hidden states)."""
PROBE_ROWS = 8


class PackedLinear(nn.Module):
    """An `nn.Linear` for inference whose weight oneDNN reordered once (and shares the bias with the original)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), None)
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


def packable(linear: nn.Module) -> bool:
    return type(linear) is nn.Linear and linear.weight.dtype == torch.float32 and linear.weight.device.type == "cpu"


def agrees(packed: PackedLinear, linear: nn.Linear) -> bool:
    """The packed product equals `F.linear` within `TOLERANCE` on a fixed random input."""
    x = torch.randn(PROBE_ROWS, linear.in_features, generator=torch.Generator().manual_seed(0))
    want = F.linear(x, linear.weight, linear.bias)
    return bool((packed(x) - want).abs().max() <= TOLERANCE * max(1.0, float(want.abs().max())))


def packed_copy(model: nn.Module) -> nn.Module:
    """`model` for inference on CPU with its fp32 `nn.Linear` layers packed (`PackedLinear`); every other module and
    tensor is shared with `model`, which is not changed. `model` itself when oneDNN is not built in or no layer can
    be packed. Kept per model object while it lives and its weights are unchanged (a tensor's version counter
    moves with every in-place write, e.g. an optimizer step), so encoding many small sets packs the weights once."""
    stamp = weights_stamp(model)
    if model not in _PACKED or _PACKED[model][0] != stamp:
        _PACKED[model] = (stamp, _pack(model))
    fast = _PACKED[model][1]
    return model if fast is None else fast


def forget(model: nn.Module) -> None:
    """Drop `model`'s packed copy now rather than with the model: for a caller that is done encoding but keeps the
    model for something else (an export traces or saves it)."""
    _PACKED.pop(model, None)


def weights_stamp(model: nn.Module) -> tuple:
    return tuple((t.data_ptr(), t._version) for m in model.modules() if packable(m)
                 for t in (m.weight, m.bias) if t is not None)


def _pack(model: nn.Module) -> nn.Module | None:
    """The packed copy, or None (not `model`: a value that holds its weak key would keep it alive)."""
    if not torch.backends.mkldnn.is_available():
        return None
    with torch.no_grad():
        shared = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
        candidate = copy.deepcopy(model, memo=shared)
        swapped = 0
        for parent in list(candidate.modules()):
            for name, child in list(parent.named_children()):
                if packable(child):
                    packed = PackedLinear(child)
                    if agrees(packed, child):
                        setattr(parent, name, packed)
                        swapped += 1
    return candidate if swapped else None


_PACKED: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, nn.Module | None]]" = weakref.WeakKeyDictionary()
