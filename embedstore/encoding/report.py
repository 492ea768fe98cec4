"""What an encode did, and what it records in the store as the vectors' provenance."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from embedstore.base.provenance import stamp
from embedstore.encoding.engine_choice import EngineChoice
from embedstore.encoding.models import ModelSpec
from embedstore.encoding.options import ComputeOptions
from embedstore.store import Store, StoreKey


@dataclass
class EncodeReport:
    store: str
    keys: list[StoreKey]  # typed to every caller; `to_dict` writes them as dicts
    texts: int
    unique: int
    present: int
    encoded: int
    tokens: int
    seconds: float
    model_loaded: bool
    provenance: dict = field(default_factory=dict)
    load_seconds: float = 0.0  # model loading (the slowest rank's when distributed), part of `seconds`
    rank: int = 0  # a distributed encode returns the same totals on every rank; only rank 0 prints them
    world_size: int = 1

    @property
    def texts_per_second(self) -> float:
        return self.encoded / self.seconds if self.seconds > 0 and self.encoded else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "keys": [k.to_dict() for k in self.keys], "texts_per_second": self.texts_per_second}


def encode_provenance(spec: ModelSpec, compute: ComputeOptions, device: str, choice: EngineChoice,
                      graph_check: dict | None, linear: dict | None = None) -> dict:
    """`choice`: the engine and why (with `--backend auto`, its measurement); `graph_check`: what the ONNX graph's
    check against PyTorch found (onnx backend), recorded with the vectors; `linear`: the PyTorch engine's linear
    kernel and why (`Encoder.linear`)."""
    record = {**stamp(libraries=True), "model": spec.name, "model_path": str(spec.path),
              "model_fingerprint": spec.fingerprint, "compute_dtype": "float32", "batch_size": compute.batch_size,
              "batch_tokens": compute.batch_tokens, "device": device, "backend": choice.backend,
              "engine": {"reason": choice.reason, "measured": choice.measured}}
    if linear is not None:
        record["linear_kernel"] = {k: linear[k] for k in ("kernel", "reason") if k in linear}
    if graph_check is not None and "precision" in graph_check:  # a precision's fidelity check (encoding.precision)
        record["compute_dtype"] = graph_check["precision"]
        record["precision_check"] = {k: v for k, v in graph_check.items() if k != "graph"}
        graph_check = graph_check.get("graph")  # the fp16 graph's own check, when ONNX Runtime ran it
    if graph_check is not None:
        keep = ("quantize", "max_abs_diff", "min_cosine", "mean_cosine", "probe_texts", "onnxruntime", "opset",
                "sha256", "rebuilt")
        record["onnx"] = {k: graph_check[k] for k in keep if k in graph_check}
    return record


def lacking_matrix(st: Store, keys: list[StoreKey], ids: np.ndarray) -> np.ndarray:
    """(keys, texts) bool: which key lacks which text; a store that does not exist yet lacks everything."""
    if not st.exists():
        return np.ones((len(keys), len(ids)), bool)
    return np.stack([~st.contains_ids(k, ids) for k in keys])
