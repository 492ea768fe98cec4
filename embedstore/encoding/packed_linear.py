"""PyTorch's CPU forward pass with its linear layers' weights packed once for oneDNN: the same fp32 products, faster
on some machines; which kernel runs is measured (`kernel_rates`), not assumed.

Why: PyTorch runs an `nn.Linear` on CPU as an MKL sgemm that lays the weight out again on every call. The weight
products are ~85 % of an encoder's forward pass (torch.profiler over the demo's batches), and on an AMD EPYC
(family 25, model 1) MKL's fp32 kernels reached 78-89 GFLOP/s a core on e5-small's four weight shapes where oneDNN,
with each weight reordered once into its blocked layout (`mkldnn._reorder_linear_weight`, what PyTorch's own
inference compiler does with frozen weights), reached 102-108; with two threads 39-55 against 65-90 (CPU seconds
under load: docs/performance.md, "The demo: where its time goes"). On another VM of the same CPU model the order
was the other way round (2026-12-07, quiet, one thread: MKL 88-93, oneDNN packed 73-82 GFLOP/s on the same shapes),
hence the measurement: the encoder runs the kernel `kernel_rates` found faster on this machine (recorded beside
the model with the engines' probe, `engine_choice.linear_kernel`).

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
import time
import weakref

import torch
from torch import nn
from torch.nn import functional as F

TOLERANCE = 1e-5
"""Largest difference from `F.linear` a packed layer may show on its probe input, relative to the output's scale
(the ONNX export check's bound on hidden states)."""
PROBE_ROWS = 8
DEFAULT_KERNEL = "onednn-packed"
"""The kernel where none was measured (a model too small to time, a distributed rank on an unrecorded machine)."""
KERNELS = (DEFAULT_KERNEL, "mkl")
"""The two ways PyTorch's fp32 `nn.Linear` can run on CPU here: oneDNN on weights packed once, or MKL's sgemm."""
RATE_ROWS = 2048
"""Rows of the products `kernel_rates` times: one batch of the encode's default 2,048-token budget."""
RATE_ROUNDS = 5


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


def linear_shapes(model: nn.Module) -> dict[tuple[int, int], int]:
    """(in, out) of each of `model`'s fp32 linear layers on CPU, with how many layers have it."""
    shapes: dict[tuple[int, int], int] = {}
    for module in model.modules():
        if packable(module):
            shape = (module.in_features, module.out_features)
            shapes[shape] = shapes.get(shape, 0) + 1
    return shapes


def linear_gflop_per_token(model: nn.Module) -> float:
    """GFLOP a token costs in `model`'s fp32 linear layers: the weight products every speed figure is a share of
    (the engine choice's bound, the benchmark's share of the peak). Read from the layers themselves, since any
    architecture's config names its sizes its own way; a pooler's layer runs once per text, not per token, and
    is not counted."""
    pooler = getattr(model, "pooler", None)
    once = set(pooler.modules()) if isinstance(pooler, nn.Module) else set()
    return sum(2 * m.in_features * m.out_features for m in model.modules() if packable(m) and m not in once) / 1e9


def kernel_rates(model: nn.Module, rows: int = RATE_ROWS, rounds: int = RATE_ROUNDS) -> dict[str, float]:
    """GFLOP/s of `model`'s fp32 linear products under each of `KERNELS`, on one intra-op thread (as batches run
    side by side, `batch_threads`) and random inputs of `rows` rows: each distinct weight shape once per round,
    weighted by how many layers have it, the kernels alternated so that a drift of the machine touches both, each
    kernel's best round kept. {"mkl": ...} alone when oneDNN is not built in. About a second for e5-small.

    Why timed on the weight shapes alone and not through the model: the products are where the kernels differ,
    and a product of known size times cleanly where a whole pass adds attention, GELU and the rest alike to both."""
    shapes = linear_shapes(model)
    kernels = KERNELS if torch.backends.mkldnn.is_available() else ("mkl",)
    layers = {shape: nn.Linear(*shape) for shape in shapes}
    runs = {"mkl": layers, DEFAULT_KERNEL: {shape: PackedLinear(layer) for shape, layer in layers.items()}
            if DEFAULT_KERNEL in kernels else {}}
    inputs = {shape: torch.randn(rows, shape[0], generator=torch.Generator().manual_seed(0)) for shape in shapes}
    flop = sum(2 * rows * i * o * count for (i, o), count in shapes.items())
    best = {kernel: float("inf") for kernel in kernels}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            for kernel in kernels:  # warm-up: first calls allocate and, for oneDNN, create primitives
                for shape, layer in runs[kernel].items():
                    layer(inputs[shape])
            for _ in range(rounds):
                for kernel in kernels:
                    seconds = 0.0
                    for shape, layer in runs[kernel].items():
                        t0 = time.perf_counter()
                        layer(inputs[shape])
                        seconds += (time.perf_counter() - t0) * shapes[shape]
                    best[kernel] = min(best[kernel], seconds)
    finally:
        torch.set_num_threads(threads)
    return {kernel: flop / max(seconds, 1e-12) / 1e9 for kernel, seconds in best.items()}


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
