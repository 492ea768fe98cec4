"""The one place ONNX Runtime sessions are made: providers, thread and optimisation settings, and the digest check
of the graph file they load.

The encode engine (`onnx_backend.OnnxEncoder` and its export check), the int8 smoothing's calibration
(`smoothing`) and the exported pipeline (`export.onnx_graph.OnnxPipeline`) open their graphs here, so a setting tuned for one (threads, spinning, optimisation level) holds for both.

Why a digest: a cached graph that was damaged on disk (bit rot, a partial copy, a hand edit) still loads and still
runs; it computes other vectors, which would be stored under the key PyTorch's vectors share. The graph's sha256,
recorded when it was written, is compared with the bytes the session is made from: the file is read once, hashed,
and the session built from those very bytes (`InferenceSession` takes bytes), so nothing can change between the
check and the load. sha256 rather than blake2b: OpenSSL's sha256 runs on the SHA extensions of current x86 and ARM
CPUs (this machine's AMD EPYC has `sha_ni`), which makes it faster there than CPython 3.11's portable blake2b, and it
is the hash the project already identifies files by (`base.files.file_sha256`). On e5-small's 470 MB graph it costs a
fraction of what building the session costs, once per process (sessions are kept).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from embedstore.base.errors import ConfigError, EmbedstoreError


class GraphDamaged(EmbedstoreError):
    """A graph file whose bytes are not those recorded when it was written."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verified_bytes(path: Path, sha256: str | None) -> bytes:
    """The bytes of `path`, refused (`GraphDamaged`, naming the file) unless they hash to `sha256`."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise GraphDamaged(f"{path}: cannot be read ({e.strerror or e})") from None
    if sha256 is None or sha256_bytes(data) != sha256:
        raise GraphDamaged(f"{path}: its bytes do not match the sha256 recorded when it was written "
                           f"({sha256 or 'none recorded'}); the graph is damaged or not ours")
    return data


def cuda_available() -> bool:
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def runtime_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def open_session(graph: Path | bytes, *, device: Any = None, threads: int | None = None, optimize: bool = True):
    """An `InferenceSession` of `graph` (a path, or bytes already verified) on `device` (a torch device, or None
    for the CPU) with `threads` intra-op threads (None: ONNX Runtime's default, the physical cores).

    One inter-op thread: the graphs here are one chain of layers, with nothing to run side by side; all
    optimisations on (ORT_ENABLE_ALL: constant folding, the layer-norm and GELU fusions, memory planning), unless
    `optimize` is False: the graph runs node for node as written, so every tensor it names exists and can be
    asked for as an output (the int8 smoothing reads the inputs of MatMuls that fusions would swallow)."""
    import onnxruntime

    if device is not None and device.type == "cuda":
        if not cuda_available():
            raise ConfigError("backend: onnx on a CUDA device needs onnxruntime-gpu (CUDAExecutionProvider); "
                              "expected --backend torch or --device cpu")
        providers: list[Any] = [("CUDAExecutionProvider", {"device_id": device.index or 0})]
    else:
        providers = ["CPUExecutionProvider"]
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else \
        onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    source = graph if isinstance(graph, bytes) else str(graph)
    return onnxruntime.InferenceSession(source, options, providers=providers)
