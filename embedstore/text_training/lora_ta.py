"""LoRA-TA as the LangAlign paper ran it (its Appendix G): the encoder with LoRA adapters and a task head,
fine-tuned end to end on translated task rows, predicting with that head on native target-language test rows.

This is the paper's baseline for "adapt the model to the target language's task data instead of aligning", and
it differs from `adapt --method lora` followed by a head on frozen vectors (the sweep's `adapt-lora`: adapters
trained on English rows, then merged, encoded, and read by a new head) in the three ways that matter: the rows
are the translated ones, the head is the one trained with the adapters, and nothing is frozen in between.
The recipe is the paper's: LoRA rank 8, alpha 8, dropout 0.1 on the attention query and key projections
(`AdaptRecipe("lora")`), batch 16, lr 1e-5, max length 256 (`adapt.METHOD_OPTIONS["lora"]`), AdamW (the text
loop's optimizer), early stopping on a validation split of the training rows (never the test rows).

Two figures say how far the adaptation moved the model, next to the scores: the relative weight change
‖ΔW‖/‖W‖ over the adapted projections (ΔW = (alpha/r)·BA, the update LoRA adds), and the mean cosine between
the base and the adapted encoder's mean-pooled vectors of the test rows. A tiny ‖ΔW‖/‖W‖ with a cosine of 1.000
means the run barely moved the encoder (a score then is the head's alone); a low cosine, that its vectors left
the space every cached method reads.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from embedstore.base.metrics import classification_metrics
from embedstore.encoding.models import plain_encoder, resolve_model
from embedstore.encoding.settings import model_with_settings
from embedstore.text_training.adapt import AdaptRecipe, method_options, with_lora
from embedstore.data.tasks import Source
from embedstore.text_training.data import Split, read_task, training_rows
from embedstore.text_training.files import file_hash, save_tensors_atomic
from embedstore.text_training.finetune import RESULTS_FILE, WEIGHTS_FILE, FinetuneResult
from embedstore.text_training.model import trainable
from embedstore.text_training.objectives import embed_all
from embedstore.text_training.options import TrainOptions
from embedstore.text_training.run import Trained, data_record, identity, train_once

METHOD = "lora-ta"


def lora_ta(train: Source, test: Source, out: str | os.PathLike[str], *, model: str | None = None,
            recipe: AdaptRecipe = AdaptRecipe("lora"), options: TrainOptions | None = None,
            progress: bool = False) -> FinetuneResult:
    """Fine-tune LoRA adapters and a task head on `train` (translated task rows), score `test` (native rows)
    with that head. Writes `results.json` (metrics with `adaptation`, provenance) and `model.safetensors` (the
    adapters and the head: the trained parameters); resumable like `finetune`."""
    out = Path(out)
    options = options if options is not None else method_options("lora")
    spec = plain_encoder(resolve_model(model_with_settings(model)), METHOD)  # None: the project's model
    rows = training_rows(train, options)
    test_texts, test_labels = read_task(test)
    test_split = Split(test_texts)
    ident = identity(METHOD, spec, train, options, test_hash=file_hash(test.file), test_columns=test.columns,
                     recipe=recipe.to_record())

    def score(trained: Trained) -> dict[str, Any]:
        graph = trained.graph
        graph.eval()
        # the head reads the adapted vectors, so one pass over the test rows gives both the predictions and the
        # vectors the cosine compares (a pass over 1,414 rows is minutes of a loaded CPU)
        adapted = embed_all(graph, test_split.tok, trained.tokenizer.pad_token_id, trained.device, trained.amp,
                            options.batch_size)
        with torch.no_grad():
            logits = graph.head(adapted)
        predicted = rows.classes[logits.argmax(1).numpy()].tolist()
        metrics = classification_metrics(test_labels, predicted)
        metrics["unseen_test_labels"] = sorted(set(test_labels) - set(rows.classes.tolist()))
        metrics["adaptation"] = {"relative_weight_change": relative_weight_change(graph.encoder),
                                 "mean_cosine_base_adapted": _base_vs_adapted(trained, test_split, options, adapted)}
        save_tensors_atomic(trainable(graph), out / WEIGHTS_FILE)
        provenance = {"method": METHOD, "config": options.to_record(), "recipe": recipe.to_record(),
                      "seed": options.seed, "model": spec.name, "model_path": str(spec.path),
                      "model_fingerprint": spec.fingerprint, "prefix": spec.prefix, "pooling": "mean",
                      "data": data_record(train, ident, rows, test=test.record(len(test_split.texts))),
                      **trained.runtime()}
        return {"method": METHOD, "metrics": metrics, "provenance": provenance, "predicted": predicted}

    record = train_once(out, RESULTS_FILE, ident, spec, options, rows, score, description=METHOD,
                        progress=progress, test=test_split,
                        wrap_encoder=lambda encoder: with_lora(encoder, recipe, options.seed))
    return FinetuneResult(out=out, metrics=record["metrics"], provenance=record["provenance"],
                          history=record["history"], steps=record["steps"],
                          resumed_from_step=record["resumed_from_step"], method=METHOD,
                          predicted=record["predicted"])


def relative_weight_change(encoder: nn.Module) -> dict[str, float]:
    """‖ΔW‖/‖W‖ (Frobenius) over every adapted projection together, and the largest single projection's."""
    from peft.tuners.lora import LoraLayer

    delta_sq = base_sq = 0.0
    largest = 0.0
    for module in encoder.modules():
        if isinstance(module, LoraLayer):
            with torch.no_grad():
                delta = torch.cat([module.get_delta_weight(name).float().reshape(-1)
                                   for name in module.active_adapters])
                base = module.get_base_layer().weight.float()
            delta_sq += float(delta.square().sum())
            base_sq += float(base.square().sum())
            largest = max(largest, float(delta.norm() / base.norm()))
    return {"overall": (delta_sq / base_sq) ** 0.5, "largest_layer": largest}


def _base_vs_adapted(trained: Trained, test: Split, options: TrainOptions, adapted: torch.Tensor) -> float:
    """Mean cosine between the base encoder's (adapters off) and the adapted encoder's vectors of the test rows."""
    graph, pad = trained.graph, trained.tokenizer.pad_token_id
    graph.eval()
    with graph.encoder.disable_adapter():
        base = embed_all(graph, test.tok, pad, trained.device, trained.amp, options.batch_size)
    # in float64: a barely moved encoder's 1 - 1e-9 would round to 1.0 in float32
    return float(nn.functional.cosine_similarity(adapted.double(), base.double(), dim=1).mean())
