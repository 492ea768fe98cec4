"""Do alignment and task objectives pull the encoder's own parameters the same way? (`analyze encoder-gradients`)

The companion study of why better alignment does not give better transfer fine-tunes XLM-R with a contrastive
alignment loss on translation pairs next to the task loss, and reports the cosine between the two gradients per
layer: near zero, the objectives are close to orthogonal. This measures it for the joint finetune's setting:

- task loss: cross-entropy of a head on the LM's mean-pooled vectors. The head is fitted first on the current
  LM's (frozen) vectors of the training rows, so its gradient is about the task rather than a random head;
- alignment loss: the joint term itself (InfoNCE over in-batch negatives, both directions, temperature 0.05);
- per minibatch (a task batch and a pair batch of `batch_size` rows), both gradients w.r.t. every LM parameter,
  grouped by layer (embeddings, layer 0..N-1; pooler and other unused parameters have none); cosine per group and
  over all of them; spread over minibatches. Eval mode: dropout would add noise to both.

`analysis.measures.gradient_alignment` does the same on cached vectors (θ = an aligner); this one differentiates
through the transformer, which is what the study measured.
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch

from embedstore.base.errors import ConfigError
from embedstore.base.provenance import stamp
from embedstore.encoding.models import load_model, plain_encoder, resolve_device, resolve_model
from embedstore.encoding.settings import model_with_settings
from embedstore.estimators.heads import make_head
from embedstore.data.tasks import Source
from embedstore.text_training.data import tokenize_splits, training_rows
from embedstore.text_training.model import TextClassifier
from embedstore.text_training.objectives import Classification, embed_all
from embedstore.text_training.options import TrainOptions
from embedstore.text_training.pairs import alignment_term

_LAYER = re.compile(r"(?:^|\.)layers?\.(\d+)\.")


def layer_of(name: str) -> str:
    """The group of an LM parameter: `embeddings`, `layer.N`, or its first name component."""
    match = _LAYER.search(name)
    if match:
        return f"layer.{int(match.group(1))}"
    return "embeddings" if "embeddings" in name else name.split(".")[0]


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a @ b) / (a.norm() * b.norm()).clamp_min(1e-30))


def encoder_gradients(task: Source, pairs: Source, *, model: str | None = None,
                      options: TrainOptions = TrainOptions(), batches: int = 8) -> dict[str, Any]:
    """Per-layer cosine between the task-loss and alignment-loss gradients of the LM's parameters (see module)."""
    if batches < 1:
        raise ConfigError(f"batches: {batches}; expected at least 1")
    spec = plain_encoder(resolve_model(model_with_settings(model)), "encoder gradients")  # None: the project's model
    device = resolve_device(options.device)
    encoder, tokenizer = load_model(spec, str(device))
    rows = training_rows(task, options)
    tokenize_splits(tokenizer, spec.prefix, options.max_length, rows.train, rows.val)
    align = alignment_term(pairs, tokenizer, spec.prefix, options)

    graph = TextClassifier(encoder, torch.nn.Identity(), len(rows.classes)).to(device).eval()
    vectors = embed_all(graph, rows.train.tok, tokenizer.pad_token_id, device, None, options.batch_size)
    head = make_head(options.head, seed=options.seed).fit(vectors.numpy(), rows.classes[rows.train.codes])
    graph.head = head.module_.to(device).eval().requires_grad_(False)
    task_loss = Classification(tokenizer, rows.train, rows.val, options.batch_size)

    named = [(n, p) for n, p in encoder.named_parameters() if p.requires_grad]
    rng = np.random.default_rng(options.seed)
    task_order, pair_order = rng.permutation(task_loss.rows), rng.permutation(align.rows)
    per_group: dict[str, list[float]] = {}
    overall, norms = [], {"task": [], "alignment": []}
    for b in range(batches):
        take = np.arange(b * options.batch_size, (b + 1) * options.batch_size)
        task_rows, pair_rows = task_order[take % len(task_order)], pair_order[take % len(pair_order)]
        grads = {}
        for name, loss_of in (("task", lambda: task_loss.task_loss(graph, task_rows, device, None) / len(task_rows)),
                              ("alignment", lambda: align.mean_loss(graph, pair_rows, device, None))):
            graph.zero_grad(set_to_none=True)
            loss_of().backward()
            grads[name] = {n: p.grad.detach().flatten().clone() for n, p in named if p.grad is not None}
        common = sorted(set(grads["task"]) & set(grads["alignment"]))
        groups: dict[str, list[str]] = {}
        for n in common:
            groups.setdefault(layer_of(n), []).append(n)
        for group, names in groups.items():
            per_group.setdefault(group, []).append(_cosine(torch.cat([grads["task"][n] for n in names]),
                                                           torch.cat([grads["alignment"][n] for n in names])))
        flat = {k: torch.cat([grads[k][n] for n in common]) for k in grads}
        overall.append(_cosine(flat["task"], flat["alignment"]))
        for k in norms:
            norms[k].append(float(flat[k].norm()))
    graph.zero_grad(set_to_none=True)

    def spread(values: list[float]) -> dict[str, float]:
        arr = np.asarray(values)
        return {"mean": float(arr.mean()), "std": float(arr.std()), "min": float(arr.min()), "max": float(arr.max())}

    order = sorted(per_group, key=lambda g: (g != "embeddings", int(g.split(".")[1]) if g.startswith("layer.") else -1,
                                            g))
    return {
        "kind": "encoder-gradients",
        "batches": batches,
        "layers": {g: spread(per_group[g]) for g in order},
        "all_parameters": spread(overall),
        "gradient_norms": {k: spread(v) for k, v in norms.items()},
        "provenance": {"model": spec.name, "model_fingerprint": spec.fingerprint, "prefix": spec.prefix,
                       "config": options.to_record(), "seed": options.seed, "head": options.head,
                       "task": task.record(len(rows.train.texts)),
                       "pairs": pairs.record(align.rows),
                       "loss": {"task": "cross-entropy through a head fitted on the LM's frozen vectors",
                                "alignment": "InfoNCE both directions, temperature 0.05"},
                       **stamp(libraries=True)},
    }
