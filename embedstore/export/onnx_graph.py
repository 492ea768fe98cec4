"""`--format onnx`: encoder, pooling, aligner and head as one ONNX graph, and the runtime that serves it.

The graph takes `input_ids` and `attention_mask` (int64, dynamic batch and length) and gives `embedding` (the
vector the head reads) and `probabilities`. Exported by the encode engine's exporter (`encoding.onnx_export`), run
in sessions from its session factory (`encoding.onnx_runtime`, which verifies the graph's sha256 recorded in the
config), and fed by its batching code (`encoding.batching`: NFC, prefix, the cut of long texts, truncation at
max_length, length-sorted token-budget batches), so the exported pipeline tokenizes, cuts and pads exactly as
`encode` does. Tokenization stays outside the graph: the tokenizer files and the prefix travel beside it, so a
product needs onnxruntime and a tokenizer, not torch.
"""
from __future__ import annotations

import json
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
    from embedstore.base.progress import note_step
    from embedstore.encoding.onnx_export import export_graph
    from embedstore.export.graph import ExportGraph, check_close, release_model

    note_step("tracing the pipeline into an ONNX graph (minutes for a full-size model on a CPU)")
    graph = ExportGraph(parts).eval()
    example = parts.tokenizer(["a b c d e", "a"], padding=True, return_tensors="pt")
    export_graph(graph, (example["input_ids"], example["attention_mask"]), INPUTS, OUTPUTS, out / GRAPH_FILE)
    del graph  # it holds the model, which the check must not hold beside its session
    release_model(parts)
    parts.tokenizer.save_pretrained(out)
    config = {"format": ONNX_FORMAT, "prefix": parts.prefix, "max_length": parts.max_length,
              "classes": parts.classes, "inputs": list(INPUTS), "outputs": list(OUTPUTS)}
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")

    note_step(f"checking the ONNX graph against the torch pipeline on {len(reference.texts)} texts")
    served = OnnxPipeline.load(out)
    vectors, probabilities = served.run(reference.texts, batch_size=4)  # batches of other shapes
    vector_diff = check_close("ONNX vectors", vectors, reference.vectors, tolerance)
    proba_diff = check_close("ONNX probabilities", probabilities, reference.probabilities, tolerance)
    if not np.array_equal(probabilities.argmax(1), reference.probabilities.argmax(1)):
        raise ConfigError("export check: the ONNX graph predicts another class than the torch pipeline; "
                          "the export was not written")
    return {"max_vector_difference": vector_diff, "max_probability_difference": proba_diff}


def seal(out: Path) -> None:
    """Record the graph's sha256 in its config once the file is final (`export.card.onnx_metadata` rewrites it after
    the check): `OnnxPipeline.load` verifies the bytes it runs against it."""
    from embedstore.base.files import file_sha256

    config = json.loads((out / CONFIG_FILE).read_text(encoding="utf-8"))
    config["sha256"] = file_sha256(out / GRAPH_FILE)
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")


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
        from embedstore.encoding.models import tokenizer_at
        from embedstore.encoding.onnx_runtime import open_session, verified_bytes

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
        graph = directory / GRAPH_FILE
        # the export's own check runs before `seal`; exports written before digests were recorded load unverified
        source = verified_bytes(graph, str(config["sha256"])) if "sha256" in config else graph
        try:
            session = open_session(source, threads=threads)
            tokenizer = tokenizer_at(directory)
        except Exception as e:  # noqa: BLE001 - onnxruntime's and transformers' many ways to refuse a file
            raise ConfigError(f"{directory}: not a loadable ONNX export ({type(e).__name__}: "
                              f"{' '.join(str(e).split())[:160]})") from None
        outputs = {o.name: o.shape for o in session.get_outputs()}
        width = (outputs.get(OUTPUTS[1]) or [None])[-1]  # a symbolic width is checked by the first prediction
        if any(name not in outputs for name in OUTPUTS) or (isinstance(width, int) and width != len(classes)):
            raise ConfigError(f"{directory / GRAPH_FILE}: outputs {outputs}; expected {', '.join(OUTPUTS)} with "
                              f"{len(classes)} probabilities (one per class of {where.name})")
        return cls(session, tokenizer, prefix, max_length, classes)

    def run(self, texts: Sequence[str], batch_size: int | None = None, *,
            progress: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(vectors, probabilities) in input order; texts normalised, cut, tokenized and batched by encode's own
        code (`encoding.batching`), at encode's default token budget (`batch_size`: at most that many per batch),
        `CHUNK_TEXTS` at a time as encode reads them, so a long input is never tokenized whole. `progress`: a bar
        on stderr, as `Pipeline.predict` shows one (None: on long inputs, to a person watching)."""
        from embedstore.base.progress import bars_on_stderr, progress_bar, watched_long
        from embedstore.data.hashing import text_ids
        from embedstore.encoding.batching import length_sorted_batches, pad_batch, tokenize
        from embedstore.encoding.encode import CHUNK_TEXTS
        from embedstore.encoding.options import ComputeOptions

        if not texts:
            return np.zeros((0, 0), np.float32), np.zeros((0, len(self.classes)), np.float32)
        compute = ComputeOptions()
        vectors, probabilities = [None] * len(texts), [None] * len(texts)
        with bars_on_stderr(), progress_bar("texts", enabled=watched_long(progress, len(texts))) as bar:
            task = bar.add_task("predicting", total=len(texts))
            for start in range(0, len(texts), CHUNK_TEXTS):
                normalized = [normalize_text(t) for t in texts[start:start + CHUNK_TEXTS]]
                tok = tokenize(self.tokenizer, normalized, self.prefix, self.max_length)
                for rows in length_sorted_batches(tok.lengths, text_ids(normalized), compute.batch_tokens,
                                                  batch_size or compute.batch_size):
                    batch = pad_batch(tok, rows, self.tokenizer.pad_token_id)
                    vec, proba = self.session.run(list(OUTPUTS), {name: batch[name] for name in INPUTS})
                    for i, r in enumerate(rows):
                        vectors[start + r], probabilities[start + r] = vec[i], proba[i]
                    bar.advance(task, len(rows))
        return np.stack(vectors), np.stack(probabilities)

    def predict_proba(self, texts: Sequence[str], *, progress: bool | None = None) -> np.ndarray:
        return self.run(texts, progress=progress)[1]

    def predict(self, texts: Sequence[str], *, progress: bool | None = None) -> list[str]:
        """The predicted label of each text (as `Pipeline.predict`)."""
        names = [str(c) for c in self.classes]
        return [names[i] for i in self.predict_proba(texts, progress=progress).argmax(axis=1)]

    def predict_records(self, texts: Sequence[str], *, progress: bool | None = None) -> list[dict]:
        """Text, label and per-class probabilities for each text (the records `Pipeline.predict_records` gives)."""
        from embedstore.pipelines.pipeline import prediction_records

        return prediction_records(texts, [str(c) for c in self.classes],
                                  self.predict_proba(texts, progress=progress))
