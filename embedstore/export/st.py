"""`--format sentence-transformers`: a directory `SentenceTransformer(OUT)` loads offline, without custom code.

Transformer (cut at the pipeline's layer) → Pooling (the pipeline's mode; the prompt tokens are pooled, as
embedstore pools its prefix) → Dense layers for the aligner when the pipeline applies it to target-language text
(`layers.dense_steps`; a reverse aligner thus takes target text into English space). The model's text prefix
(e5's "query: ") is the default prompt, so `model.encode(texts)` adds it as `embedstore encode` does. The head
sits beside it in `head/` (`head.load_exported_head`).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from embedstore.base.atomic import SCRATCH_MARK, owned_temp_prefix
from embedstore.base.errors import ConfigError
from embedstore.base.progress import note_step
from embedstore.export.graph import Parts, Reference, check_close, release_model, truncated
from embedstore.export.head import load_exported_head, save_exported_head
from embedstore.export.layers import dense_steps

PROMPT_NAME = "query"


def _import_st():
    try:
        import sentence_transformers
    except ImportError:
        raise ConfigError("--format sentence-transformers needs the sentence-transformers package: "
                          "pip install 'embedstore[export]'") from None
    return sentence_transformers


def write_sentence_transformers(parts: Parts, reference: Reference, out: Path, tolerance: float) -> dict:
    """Write the model into `out` (an empty staging directory), load it back as a user would, and check it on
    the reference texts; returns what the check measured."""
    st = _import_st()
    from sentence_transformers.base.modules import Dense, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    aligner_steps = dense_steps(parts.aligner, "aligner") if parts.aligner is not None else []
    head_steps = dense_steps(parts.head, "head")
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=owned_temp_prefix(SCRATCH_MARK)) as scratch:
        with truncated(parts.model, parts.layer) as model:  # the first blocks, saved, never copied in memory
            model.save_pretrained(scratch)
        width = parts.model.config.hidden_size
        del model
        release_model(parts)  # from here on, the one copy in memory is the one sentence-transformers loads
        parts.tokenizer.save_pretrained(scratch)
        modules = [Transformer(scratch, max_seq_length=parts.max_length),
                   Pooling(width, pooling_mode=parts.pooling)]
        for step in aligner_steps:
            activation = getattr(torch.nn, step.activation)()
            modules.append(Dense(step.weight.shape[1], step.weight.shape[0], activation_function=activation,
                                 init_weight=torch.from_numpy(step.weight), init_bias=torch.from_numpy(step.bias)))
        prompts = {PROMPT_NAME: parts.prefix} if parts.prefix else None
        model = st.SentenceTransformer(modules=modules, prompts=prompts,
                                       default_prompt_name=PROMPT_NAME if prompts else None, device="cpu")
        model.save(str(out))
        del model, modules  # before the check loads the export back
    save_exported_head(out / "head", head_steps, parts.classes)

    note_step(f"loading the sentence-transformers export back and checking it on {len(reference.texts)} texts")
    loaded = st.SentenceTransformer(str(out), device="cpu", local_files_only=True)
    vectors = loaded.encode(reference.texts, convert_to_numpy=True, batch_size=len(reference.texts))
    head = load_exported_head(out / "head")
    vector_diff = check_close("sentence-transformers vectors", vectors, reference.vectors, tolerance)
    probabilities = head.predict_proba(vectors)
    proba_diff = check_close("exported head probabilities", probabilities, reference.probabilities, tolerance)
    _check_labels(probabilities, reference)
    return {"max_vector_difference": vector_diff, "max_probability_difference": proba_diff,
            "aligner_layers": len(aligner_steps), "prompt": parts.prefix,
            "model": {"embed_dim": loaded.get_embedding_dimension(),
                      "n_parameters": sum(p.numel() for p in loaded.parameters()),
                      "similarity_fn_name": loaded.similarity_fn_name}}


def _check_labels(probabilities: np.ndarray, reference: Reference) -> None:
    got, expected = probabilities.argmax(1), reference.probabilities.argmax(1)
    if not np.array_equal(got, expected):
        i = int(np.flatnonzero(got != expected)[0])
        raise ConfigError(f"export check: the export predicts another class than the torch pipeline for "
                          f"{reference.texts[i]!r}; the export was not written")
