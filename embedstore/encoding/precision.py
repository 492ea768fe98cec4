"""Encoding at reduced precision (`--precision fp16|bf16|onnx-fp16`), checked against fp32 first.

Two engines. PyTorch under autocast (fp16, bf16): matrix products run in the reduced type (what makes a GPU fast)
while layer norms, softmax and the pooling's sums stay in fp32, which is what keeps vectors close to fp32's. ONNX
Runtime (onnx-fp16): the checked fp32 graph converted to fp16 by onnxruntime's own converter (`onnx_backend`), run
by its CUDA provider on a GPU; on a CPU it runs too (the CPU provider casts around the operators it has no fp16
kernel for: expect fp16's rounding without its speed), so the path is checked where there is no GPU.

Why a check: half precision moves vectors by more than fp32 noise (bf16 keeps 8 bits of mantissa), and how much
depends on the model, the engine and the device. So on first use of a (model, precision, device type, runtime) the
bundled sample's sentences (English and Korean, real lengths, padded batches) are encoded both ways, fp32 being the
model in PyTorch (the reference every graph is checked against); the minimum cosine between a text's two vectors
and P@1 (is each reduced vector's nearest fp32 vector its own?) are recorded beside the model and reported in the
encode's provenance, and the precision is refused (one line naming both figures) when they fall below
`MIN_COSINE` or `MIN_P_AT_1`. The vectors go under a key of their own (`options.precision_fingerprint`), so they are
never mixed with fp32 ones, nor with another precision's or engine's.
"""
from __future__ import annotations

import json
from typing import Callable, Sequence

import numpy as np
import torch

from embedstore.base.atomic import write_json
from embedstore.base.errors import ConfigError
from embedstore.base.retrieval import nn_p_at_1, unit_rows
from embedstore.encoding.encoder import Encoder
from embedstore.encoding.models import ModelSpec, cache_dir

MIN_COSINE = 0.99
"""The bound: a text's reduced-precision vector must keep cosine >= 0.99 to its fp32 vector (int8 weights, which we
accept under a key of their own, move vectors by up to ~0.03)."""
MIN_P_AT_1 = 0.99
"""...and each must still find its own fp32 vector first among the sample's (retrieval is what breaks when a
reduced type collapses vectors while cosine still looks fine)."""
CHECK_TEXTS = 48  # per language, from the bundled sample
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class AutocastEncoder:
    """An `Encoder` whose forward pass runs under autocast to `precision`; same batches in, fp32 vectors out."""

    def __init__(self, encoder: Encoder, precision: str) -> None:
        self.inner, self.precision = encoder, precision
        self.tokenizer, self.device = encoder.tokenizer, encoder.device

    def forward(self, batch: dict[str, torch.Tensor], layers: Sequence[int], pooling: str) -> dict[int, np.ndarray]:
        with torch.autocast(self.device.type, dtype=DTYPES[self.precision]):
            return self.inner.forward(batch, layers, pooling)


def checked_encoder(encoder: Encoder, spec: ModelSpec, precision: str, layers: Sequence[int], pooling: str,
                    prefix: str) -> tuple[AutocastEncoder, dict]:
    """`encoder` under autocast, after the fidelity check (`checked`). Returns it with the check's record."""
    reduced = AutocastEncoder(encoder, precision)
    return reduced, checked(reduced, lambda: encoder, spec, precision, layers, pooling, prefix,
                            f"torch-{torch.__version__}")


def checked(reduced, reference: Callable[[], Encoder], spec: ModelSpec, precision: str, layers: Sequence[int],
            pooling: str, prefix: str, runtime: str) -> dict:
    """The fidelity record of `reduced` (any encoder: same batches in, pooled vectors out) against `reference()`
    (the model in PyTorch fp32 on the same device, loaded only when the check runs), run once per model,
    precision, device type and `runtime` (what computes the reduced vectors: the torch version, or onnxruntime's
    and the graph's digest), then read back. Raises ConfigError when the precision is beyond the bound."""
    device = reduced.device
    path = cache_dir() / "precision" / f"{spec.fingerprint}.{precision}.{device.type}.{runtime}.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        record = None
    if not isinstance(record, dict) or record.get("layers") != list(layers) or record.get("pooling") != pooling:
        record = {**fidelity(reference(), reduced, precision, layers, pooling, prefix), "runtime": runtime}
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, record)
    refuse_beyond_bound(record, spec.name)
    return record


def refuse_beyond_bound(record: dict, model: str) -> None:
    """ConfigError naming both figures when a fidelity record falls below either bound (NaN fails too)."""
    if not (record["min_cosine"] >= MIN_COSINE and record["p_at_1"] >= MIN_P_AT_1):
        raise ConfigError(f"precision: {record['precision']} on {record['device']} moves {model}'s vectors too far "
                          f"from fp32 (min cosine {record['min_cosine']:.4f}, P@1 {record['p_at_1']:.3f} on "
                          f"{record['texts']} sample texts; the bound is {MIN_COSINE} and {MIN_P_AT_1}); encode "
                          "in fp32 (no --precision)")


def fidelity(reference: Encoder, reduced, precision: str, layers: Sequence[int], pooling: str, prefix: str) -> dict:
    """min cosine and P@1 of `reduced`'s vectors against `reference`'s (fp32) on the bundled sample, per requested
    layer (worst kept)."""
    from embedstore.encoding.onnx_backend import sample_batches

    full: dict[int, list[np.ndarray]] = {layer: [] for layer in layers}
    low: dict[int, list[np.ndarray]] = {layer: [] for layer in layers}
    for batch in sample_batches(reference.tokenizer, prefix, 0, CHECK_TEXTS):
        tensors = {k: torch.as_tensor(v, device=reference.device) for k, v in batch.items()}
        for out, runner in ((full, reference), (low, reduced)):
            for layer, vectors in runner.forward(tensors, layers, pooling).items():
                out[layer].append(vectors)
    cosines, p_at_1 = [], []
    for layer in layers:
        a, b = np.concatenate(full[layer]), np.concatenate(low[layer])
        cosines.append(float((unit_rows(a) * unit_rows(b)).sum(1).min()))
        p_at_1.append(nn_p_at_1(b, a))
    return {"precision": precision, "device": reference.device.type, "torch": torch.__version__, "layers": list(layers),
            "pooling": pooling, "texts": int(sum(len(v) for v in full[layers[0]])),
            "min_cosine": round(min(cosines), 6), "p_at_1": round(min(p_at_1), 4),
            "bound": {"min_cosine": MIN_COSINE, "p_at_1": MIN_P_AT_1}}
