"""The model card beside an export (README.md), and the ONNX graph's own metadata.

Why: sentence-transformers writes its unfilled template (with an `encode_document` example under another prompt
than the head was trained with), and the ONNX graph's input and output names lived only in docs/contracts.md. A
card filled from the pipeline's manifest and the export's check says what a user downloading the directory needs:
the data and its provenance, the aligner, the head, the exact prompt, how the export was verified, and the
evaluation figures with their intervals when an `evaluate` record is given.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from embedstore.base.stats import wilson

CARD_FILE = "README.md"


def _aligner(pipeline_dir: Path, manifest: Mapping[str, Any]) -> str:
    from embedstore.estimators.artifacts import read_config

    if not manifest.get("aligner"):
        return "none (the head reads the encoder's vectors as they are)"
    provenance = read_config(pipeline_dir / manifest["aligner"]).get("provenance") or {}
    pairs, sizes = provenance.get("pairs") or {}, provenance.get("sizes") or {}
    return (f"{provenance.get('arch', '?')}{' (reverse: target language into English space)' if provenance.get('reverse') else ''}"
            f", fitted on {sizes.get('pairs', '?')} pairs of `{pairs.get('path', '?')}` (sha256 "
            f"{_digest(pairs)})")


def _digest(file: Mapping[str, Any]) -> str:
    """A file identity's digest, in the record shape of either generation (sha256, or the older sha256_16)."""
    return str(file.get("sha256") or file.get("sha256_16") or "?")[:16]


def _metrics(metrics: Mapping[str, Any] | None) -> list[str]:
    if not metrics:
        return ["No evaluation was given to the export (`embedstore export --metrics EVALUATE.json`, the file "
                "`embedstore evaluate --out` writes); evaluate it on native target-language data before use."]
    primary = metrics.get("primary")
    test = metrics.get("test")
    lines = [f"On `{test.get('path', '?') if isinstance(test, dict) else test}` ({metrics.get('n', '?')} rows), as "
             "`embedstore evaluate` measured it; accuracy with its Wilson 95 % interval over those rows (the test "
             "set's sampling noise):", "", "| method | accuracy [95 % interval] | macro-F1 |", "| --- | --- | --- |"]
    for name in dict.fromkeys(n for n in (primary, "with_aligner", "without_aligner") if n in metrics):
        m = metrics[name]
        low, high = wilson(m["accuracy"], m["n"])
        lines.append(f"| {name.replace('_', ' ')}{' (what predict does)' if name == primary else ' (diagnostic)'} | "
                     f"{m['accuracy']:.4f} [{low:.4f}, {high:.4f}] | {m['macro_f1']:.4f} |")
    return lines


def model_card(record: Mapping[str, Any], pipeline_dir: Path, metrics: Mapping[str, Any] | None = None) -> str:
    """The README.md of an export, from its record (`export_pipeline`'s) and the pipeline directory."""
    manifest = record["pipeline_manifest"]
    encoding = manifest.get("encoding", {})
    train = manifest.get("train", {})
    check = record["check"]
    prompt = check.get("prompt", encoding.get("prefix", ""))
    fit = {k: v for k, v in manifest.get("head_fit", {}).items() if isinstance(v, (int, float, str, bool))}
    if record["format"] == "onnx":
        usage = ["```python", "from embedstore.export.onnx_graph import OnnxPipeline",
                 "pipe = OnnxPipeline.load('.')", "pipe.predict(['새 문서를 여는 방법'])", "```", "",
                 "The graph (`model.onnx`) takes `input_ids` and `attention_mask` (int64, batch × length, dynamic) "
                 "and returns `embedding` (batch × dim) and `probabilities` (batch × classes, in the order of "
                 f"`classes` below); the text prefix {prompt!r} is prepended before tokenizing, texts are NFC "
                 f"normalised and stripped, and cut at {encoding.get('max_length', '?')} tokens. The same facts are in "
                 "the graph's metadata (`metadata_props`) and in `embedstore-onnx.json`."]
    else:
        usage = ["```python", "from sentence_transformers import SentenceTransformer",
                 "from embedstore.export.head import load_exported_head", "",
                 "model = SentenceTransformer('.')            # adds the prompt below by default",
                 "head = load_exported_head('head')", "head.predict(model.encode(['새 문서를 여는 방법']))", "```", "",
                 f"`model.encode(texts)` adds the prompt {prompt!r} (the default prompt), which is the prefix the "
                 "head was trained with; do not pass another prompt (`encode_query`/`encode_document` with other "
                 "prompts give other vectors). NFC-normalise and strip texts first, as embedstore does."]
    lines = [
        "---", "library_name: sentence-transformers" if record["format"] != "onnx" else "library_name: onnx",
        "tags: [embedstore, cross-lingual, text-classification, langalign]", "---", "",
        f"# {Path(str(record.get('pipeline', 'pipeline'))).name}: an embedstore pipeline ({record['format']})", "",
        "A text classifier trained on English task data behind a cross-lingual aligner (LangAlign), exported by "
        f"embedstore {record.get('embedstore_version', record.get('embedstore', ''))}.", "",
        "## Usage", "", *usage, "",
        "## How it was made", "",
        f"- **Encoder**: `{encoding.get('model', '?')}` (fingerprint `{encoding.get('fingerprint', '?')}`), layer "
        f"{(encoding.get('layers') or ['?'])[0]}, {encoding.get('pooling', '?')} pooling, max length "
        f"{encoding.get('max_length', '?')} tokens, prompt (text prefix) {prompt!r}.",
        f"- **Task data**: `{train.get('path', '?')}` (sha256 {_digest(train)}), text column "
        f"`{train.get('text', train.get('text_column', '?'))}`, label column "
        f"`{train.get('label', train.get('label_column', '?'))}`, rows where {train.get('where') or 'all'}; "
        f"{manifest.get('sizes', {}).get('train', '?')} rows used "
        f"({manifest.get('sizes', {}).get('dropped_as_aligner_pairs', 0)} dropped as aligner pairs).",
        f"- **Aligner**: {_aligner(pipeline_dir, manifest)}; in this export: "
        f"{'yes' if record['aligner_in_model'] else 'no (the pipeline leaves target-language text where it is)'}.",
        f"- **Head**: {manifest.get('head_kind', '?')} (seed {manifest.get('seed', '?')}, recipe "
        f"{manifest.get('recipe', '?')}){'; ' + ', '.join(f'{k} {v}' for k, v in fit.items()) if fit else ''}; "
        f"classes: {', '.join(map(str, record['classes']))}.",
        "", "## Evaluation", "", *_metrics(metrics), "",
        "## Verification", "",
        f"Before it was written, the export was run on {check['texts']} probe texts and compared with the torch "
        f"pipeline: vectors within {check['max_vector_difference']:.1e}, probabilities within "
        f"{check.get('max_probability_difference', float('nan')):.1e} (tolerance {check['tolerance']}), the same "
        "predicted class for every text.", "",
        "## Provenance", "", "`embedstore-export.json` beside this card holds the full record: the pipeline's "
        "manifest (input file hashes, model fingerprint, store key, seed), the export check and the versions."
        + (" `mteb_model_meta.json` holds MTEB's model metadata (`mteb.ModelMeta(**json.load(f))`); set its "
           "`name` and `revision` to the hub repository and commit once pushed." if record["format"] != "onnx"
           else ""), ""]
    return "\n".join(lines)


def onnx_metadata(graph: Path, record: Mapping[str, Any]) -> None:
    """The graph's inputs, outputs, prefix, max length and classes in its own metadata_props, so a runtime that
    only has the .onnx file knows how to feed it."""
    import onnx

    model = onnx.load(str(graph))
    encoding = record["pipeline_manifest"].get("encoding", {})
    facts = {"embedstore.inputs": "input_ids,attention_mask (int64, batch x length)",
             "embedstore.outputs": "embedding (batch x dim), probabilities (batch x classes)",
             "embedstore.prefix": str(record["check"].get("prompt", encoding.get("prefix", ""))),
             "embedstore.max_length": str(encoding.get("max_length", "")),
             "embedstore.classes": json.dumps(record["classes"], ensure_ascii=False),
             "embedstore.text_preparation": "NFC-normalise and strip, prepend the prefix, tokenize with the "
                                            "tokenizer beside the graph, cut at max_length tokens"}
    del model.metadata_props[:]
    for key, value in facts.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(graph))
