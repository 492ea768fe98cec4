"""Which engine runs the forward pass (PyTorch or ONNX Runtime), decided once, and the encoder that runs it.

Both encoders take the same padded batches and return the same pooled vectors (`forward(batch, layers,
pooling)`), so encode and the distributed ranks never ask which one they hold.
"""
from __future__ import annotations

from typing import Sequence

import torch

from embedstore.base.errors import ConfigError
from embedstore.encoding.encoder import Encoder, check_right_padding
from embedstore.encoding.models import ModelSpec, load_once
from embedstore.encoding.options import ComputeOptions, EncodeOptions, check_combination


def choose_backend(options: EncodeOptions, compute: ComputeOptions, device: torch.device) -> str:
    """"torch" or "onnx" for these options on `device`; a combination that cannot run is refused here, before
    anything loads."""
    from embedstore.encoding.onnx_runtime import cuda_available

    check_combination(options, compute)
    if options.quantize is not None:
        if device.type != "cpu":
            raise ConfigError(f"quantize: {options.quantize} is a CPU path (ONNX Runtime's dynamic int8 kernels); "
                              f"expected --device cpu, not {device}")
        return "onnx"
    if compute.backend != "auto":
        return compute.backend
    return "onnx" if device.type == "cpu" or cuda_available() else "torch"


def load_encoder(spec: ModelSpec, options: EncodeOptions, compute: ComputeOptions, layers: Sequence[int],
                 device: torch.device):
    """The encoder of `choose_backend`, for hidden states `layers` (absolute); the ONNX graph is exported and
    checked against PyTorch on first use (encoding.onnx_backend). Returns (encoder, backend name, graph check
    record or None)."""
    backend = choose_backend(options, compute, device)
    if backend == "torch":
        model, tokenizer = load_once(spec, device)
        return Encoder(model, tokenizer, device), backend, None
    from transformers import AutoTokenizer

    from embedstore.encoding.onnx_backend import OnnxEncoder, load_graph

    graph, data = load_graph(spec, layers, options.quantize)
    cache_key = (str(graph.path), graph.check["sha256"], str(device), torch.get_num_threads())
    if cache_key not in _SESSIONS:
        _SESSIONS.clear()  # one graph in memory, as load_once keeps one model
        tokenizer = AutoTokenizer.from_pretrained(spec.path)
        check_right_padding(tokenizer)
        _SESSIONS[cache_key] = OnnxEncoder(graph, data, tokenizer, device, torch.get_num_threads())
    return _SESSIONS[cache_key], backend, graph.check


_SESSIONS: dict[tuple[str, str, str, int], object] = {}
"""Library callers (trainers, sweeps, predict) encode many small sets: one ONNX Runtime session per process."""
