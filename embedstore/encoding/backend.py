"""Which engine runs the forward pass (PyTorch or ONNX Runtime), decided once, and the encoder that runs it.

Both encoders take the same padded batches and return the same pooled vectors (`forward(batch, layers,
pooling)`), so encode and the distributed ranks never ask which one they hold. `--backend auto` with two engines
that can run is decided by measuring them (`engine_choice`); the other cases have one answer, given here.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from embedstore.base.errors import ConfigError
from embedstore.encoding.encoder import Encoder, check_right_padding
from embedstore.encoding.engine_choice import EngineChoice
from embedstore.encoding.models import ModelSpec, load_once, load_tokenizer, unload
from embedstore.encoding.options import PRECISION_ENGINES, ComputeOptions, EncodeOptions, check_combination
from embedstore.store import StoreKey


def fixed_choice(options: EncodeOptions, compute: ComputeOptions, device: torch.device) -> EngineChoice | None:
    """The engine when there is nothing to measure (a flag, int8, a CUDA device without onnxruntime-gpu); None
    when `auto` has two engines to choose from. A combination that cannot run is refused here, before anything
    loads."""
    from embedstore.encoding.onnx_runtime import cuda_available

    check_combination(options, compute)
    if options.quantize is not None:
        if device.type != "cpu":
            raise ConfigError(f"quantize: {options.quantize} is a CPU path (ONNX Runtime's dynamic int8 kernels); "
                              f"expected --device cpu, not {device}")
        return EngineChoice("onnx", f"quantize {options.quantize} runs on ONNX Runtime")
    if options.precision is not None and PRECISION_ENGINES[options.precision] == "onnx":
        if device.type == "cuda" and not cuda_available():
            raise ConfigError(f"precision: {options.precision} on {device} needs ONNX Runtime's CUDA provider "
                              "(pip install onnxruntime-gpu); expected --precision fp16 (PyTorch autocast) or "
                              "--device cpu")
        return EngineChoice("onnx", f"precision {options.precision} runs on ONNX Runtime (the graph in fp16)")
    if options.precision is not None:
        return EngineChoice("torch", f"precision {options.precision} runs on PyTorch (autocast)")
    if compute.backend != "auto":
        return EngineChoice(compute.backend, f"--backend {compute.backend}")
    if device.type == "cuda" and not cuda_available():
        return EngineChoice("torch", "ONNX Runtime has no CUDA provider here (onnxruntime-gpu is not installed)")
    return None


def load_encoder(spec: ModelSpec, options: EncodeOptions, compute: ComputeOptions, keys: Sequence[StoreKey],
                 device: torch.device, job_tokens: int | None = None, measure: bool = True,
                 job_rate: Callable[[Encoder], tuple[float, int]] | None = None):
    """The encoder for the hidden states of `keys` (the encode's store keys: their layers, pooling and prefix), by `fixed_choice` or else measured (`engine_choice`:
    `job_tokens`, the job's size, decides whether a first graph export pays; `job_rate` measures PyTorch on the
    job's own batches). Returns (encoder, EngineChoice, graph check record or None)."""
    from embedstore.encoding import engine_choice
    from embedstore.encoding.onnx_backend import graph_cached

    threads = torch.get_num_threads()
    layers, key = [k.layer for k in keys], keys[0]
    choice = fixed_choice(options, compute, device)
    if choice is not None and options.precision is not None:  # after its check against fp32
        return _load_reduced(spec, options, layers, key, device, choice)
    if choice is not None:
        encoder = _load_onnx(spec, options, layers, device) if choice.backend == "onnx" else \
            _load_torch(spec, device, measure)
        return encoder, choice, encoder.graph.check if choice.backend == "onnx" else None

    def probe_texts(tokenizer):
        return engine_choice.probe_batches(tokenizer, key.prefix, options.max_length,
                                           compute.batch_tokens, compute.batch_size, device)

    choice, encoder = engine_choice.choose(
        spec, layers, key.pooling, device, threads, job_tokens, lambda: _load_torch(spec, device, measure),
        lambda: _load_onnx(spec, options, layers, device), graph_cached(spec, layers), probe_texts, measure, job_rate)
    if choice.backend == "onnx":
        unload()  # the probe's PyTorch model is not needed any more
    return encoder, choice, encoder.graph.check if choice.backend == "onnx" else None


def planned_choice(spec: ModelSpec, options: EncodeOptions, compute: ComputeOptions, layers: Sequence[int],
                   device: torch.device) -> EngineChoice:
    """The choice `load_encoder(..., measure=False)` will make, known before anything loads."""
    from embedstore.encoding.engine_choice import planned

    return fixed_choice(options, compute, device) or planned(spec, layers, device, torch.get_num_threads())


def _load_torch(spec: ModelSpec, device: torch.device, measure: bool = True) -> Encoder:
    """The PyTorch encoder, its linear layers on the kernel faster on this machine (`engine_choice.linear_kernel`)."""
    from embedstore.encoding.engine_choice import linear_kernel

    model, tokenizer = load_once(spec, device)
    return Encoder(model, tokenizer, device, linear=linear_kernel(spec, device, model, measure))


def _load_reduced(spec: ModelSpec, options: EncodeOptions, layers: Sequence[int], key: StoreKey,
                  device: torch.device, choice: EngineChoice):
    """The encoder of a reduced precision after its fidelity check against PyTorch fp32 (`precision.checked`):
    autocast around the PyTorch model, or the fp16 graph (whose record keeps its graph check under "graph")."""
    from embedstore.encoding import precision
    from embedstore.encoding.onnx_runtime import runtime_version

    if choice.backend == "torch":
        encoder, check = precision.checked_encoder(_load_torch(spec, device), spec, options.precision, layers,
                                                   key.pooling, key.prefix)
        return encoder, choice, check
    encoder = _load_onnx(spec, options, layers, device)
    runtime = f"onnxruntime-{runtime_version()}-{encoder.graph.check['sha256'][:12]}"
    check = precision.checked(encoder, lambda: _load_torch(spec, device), spec, options.precision, layers,
                              key.pooling, key.prefix, runtime)
    unload()  # the PyTorch reference (loaded only if the check ran) is not needed any more
    return encoder, choice, {**check, "graph": encoder.graph.check}


def _load_onnx(spec: ModelSpec, options: EncodeOptions, layers: Sequence[int], device: torch.device):
    """The process's session of the graph (`_SESSIONS`). Its bytes are read and verified only when a session is
    made from them: a kept session runs the bytes verified when it was made, so hashing the file again on every
    encode (470 MB for e5-small, ~0.5 s) would check nothing the session runs."""
    from embedstore.encoding.onnx_backend import OnnxEncoder, ensure_graph, load_graph

    graph_kind = "fp16" if options.precision is not None else options.quantize
    graph = ensure_graph(spec, layers, graph_kind)  # its check record only: cheap
    cache_key = (str(graph.path), graph.check["sha256"], str(device), torch.get_num_threads())
    if cache_key not in _SESSIONS:
        _SESSIONS.clear()  # one graph in memory, as load_once keeps one model
        graph, data = load_graph(spec, layers, graph_kind)  # a damaged graph is rebuilt here
        tokenizer = load_tokenizer(spec)
        check_right_padding(tokenizer)
        cache_key = (str(graph.path), graph.check["sha256"], str(device), torch.get_num_threads())
        _SESSIONS[cache_key] = OnnxEncoder(graph, data, tokenizer, device, torch.get_num_threads())
    return _SESSIONS[cache_key]


_SESSIONS: dict[tuple[str, str, str, int], object] = {}
"""Library callers (trainers, sweeps, predict) encode many small sets: one ONNX Runtime session per process, keyed
by the graph's recorded digest (a graph rebuilt on disk has another, so it gets a new session)."""
