"""`--format onnx`: encoder, pooling, aligner and head as one ONNX graph, and the runtime that serves it.

The graph takes `input_ids` and `attention_mask` (int64, dynamic batch and length) and gives `embedding` (the
vector the head reads) and `probabilities`. Exported with torch's TorchScript exporter (`dynamo=False`: the
dynamo exporter needs onnxscript, which nothing else here does) from a wrapper that calls the model with
keywords (transformers 5's positional order is not (input_ids, attention_mask)). Tokenization stays outside
the graph: the tokenizer files and the prefix travel beside it, and `OnnxPipeline` applies them as `encode`
does (NFC, prefix, truncation at max_length), so a product needs onnxruntime and a tokenizer, not torch.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from embedstore.base.errors import ConfigError
from embedstore.data.hashing import normalize_text
from embedstore.export.head import checked_classes

GRAPH_FILE, CONFIG_FILE = "model.onnx", "embedstore-onnx.json"
ONNX_FORMAT = "embedstore.onnx_pipeline"
INPUTS, OUTPUTS = ("input_ids", "attention_mask"), ("embedding", "probabilities")


def write_onnx(parts, reference, out: Path, tolerance: float) -> dict:
    """Export the graph into `out` (an empty staging directory), run it with onnxruntime on the reference texts
    and check it; returns what the check measured."""
    import torch

    from embedstore.export.graph import ExportGraph, check_close

    graph = ExportGraph(parts).eval()
    example = parts.tokenizer(["a b c d e", "a"], padding=True, return_tensors="pt")
    # the tracer warns about values it fixes as constants (transformers' mask padding length, always 0 here) and
    # the exporter about negative indices; the check below runs the graph on other batch sizes and lengths
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")
        torch.onnx.export(graph, (example["input_ids"], example["attention_mask"]), str(out / GRAPH_FILE),
                          input_names=list(INPUTS), output_names=list(OUTPUTS), dynamo=False, opset_version=17,
                          dynamic_axes={"input_ids": {0: "batch", 1: "length"},
                                        "attention_mask": {0: "batch", 1: "length"},
                                        "embedding": {0: "batch"}, "probabilities": {0: "batch"}})
    parts.tokenizer.save_pretrained(out)
    config = {"format": ONNX_FORMAT, "prefix": parts.prefix, "max_length": parts.max_length,
              "classes": parts.classes, "inputs": list(INPUTS), "outputs": list(OUTPUTS)}
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")

    served = OnnxPipeline.load(out)
    vectors, probabilities = served.run(reference.texts, batch_size=4)  # two batches of other shapes
    vector_diff = check_close("ONNX vectors", vectors, reference.vectors, tolerance)
    proba_diff = check_close("ONNX probabilities", probabilities, reference.probabilities, tolerance)
    if not np.array_equal(probabilities.argmax(1), reference.probabilities.argmax(1)):
        raise ConfigError("export check: the ONNX graph predicts another class than the torch pipeline; "
                          "the export was not written")
    return {"max_vector_difference": vector_diff, "max_probability_difference": proba_diff}


@dataclass
class OnnxPipeline:
    """An exported ONNX pipeline under onnxruntime: `predict(texts)` answers as `Pipeline.predict` does."""

    session: Any
    tokenizer: Any
    prefix: str
    max_length: int
    classes: list

    @classmethod
    def load(cls, directory: str | Path, *, threads: int | None = None) -> "OnnxPipeline":
        import onnxruntime as ort
        from transformers import AutoTokenizer

        directory = Path(directory)
        try:
            config = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ConfigError(f"{directory / CONFIG_FILE}: not readable JSON ({e}); expected an ONNX export") \
                from None
        if not isinstance(config, dict) or config.get("format") != ONNX_FORMAT:
            raise ConfigError(f"{directory / CONFIG_FILE}: format is not {ONNX_FORMAT!r}")
        where = directory / CONFIG_FILE
        prefix, max_length = config.get("prefix"), config.get("max_length")
        if not isinstance(prefix, str):
            raise ConfigError(f"{where}: prefix: {str(prefix)[:40]}; expected a string")
        if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 2:
            raise ConfigError(f"{where}: max_length: {str(max_length)[:40]}; expected an integer >= 2")
        classes = checked_classes(config.get("classes"), where)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            session = ort.InferenceSession(str(directory / GRAPH_FILE), options, providers=["CPUExecutionProvider"])
            tokenizer = AutoTokenizer.from_pretrained(directory)
        except Exception as e:  # noqa: BLE001 - onnxruntime's and transformers' many ways to refuse a file
            raise ConfigError(f"{directory}: not a loadable ONNX export ({type(e).__name__}: "
                              f"{' '.join(str(e).split())[:160]})") from None
        outputs = {o.name: o.shape for o in session.get_outputs()}
        width = (outputs.get(OUTPUTS[1]) or [None])[-1]  # a symbolic width is checked by the first prediction
        if any(name not in outputs for name in OUTPUTS) or (isinstance(width, int) and width != len(classes)):
            raise ConfigError(f"{directory / GRAPH_FILE}: outputs {outputs}; expected {', '.join(OUTPUTS)} with "
                              f"{len(classes)} probabilities (one per class of {where.name})")
        return cls(session, tokenizer, prefix, max_length, classes)

    def run(self, texts: Sequence[str], batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """(vectors, probabilities) in input order; batches formed over texts sorted by length."""
        if not texts:
            return np.zeros((0, 0), np.float32), np.zeros((0, len(self.classes)), np.float32)
        inputs = [self.prefix + normalize_text(t) for t in texts]
        ids = self.tokenizer(inputs, truncation=True, max_length=self.max_length)["input_ids"]
        order = np.argsort([-len(x) for x in ids], kind="stable")
        vectors, probabilities = [None] * len(ids), [None] * len(ids)
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            width = max(len(ids[r]) for r in rows)
            input_ids = np.full((len(rows), width), self.tokenizer.pad_token_id, np.int64)
            mask = np.zeros((len(rows), width), np.int64)
            for i, r in enumerate(rows):
                input_ids[i, :len(ids[r])] = ids[r]
                mask[i, :len(ids[r])] = 1
            vec, proba = self.session.run(list(OUTPUTS), {"input_ids": input_ids, "attention_mask": mask})
            for i, r in enumerate(rows):
                vectors[r], probabilities[r] = vec[i], proba[i]
        return np.stack(vectors), np.stack(probabilities)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return self.run(texts)[1]

    def predict(self, texts: Sequence[str]) -> list[str]:
        """The predicted label of each text (as `Pipeline.predict`)."""
        names = [str(c) for c in self.classes]
        return [names[i] for i in self.predict_proba(texts).argmax(axis=1)]

    def predict_records(self, texts: Sequence[str]) -> list[dict]:
        """Text, label and per-class probabilities for each text (the records `Pipeline.predict_records` gives)."""
        from embedstore.pipelines.pipeline import prediction_records

        return prediction_records(texts, [str(c) for c in self.classes], self.predict_proba(texts))
