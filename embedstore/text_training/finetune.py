"""End-to-end step 3 on text (`finetune`): LM → aligner → head on English text, scored on native
target-language text (method `langalign-e2e`)."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from embedstore.base.errors import ConfigError
from embedstore.base.metrics import classification_metrics
from embedstore.encoding.settings import model_with_settings
from embedstore.encoding.models import plain_encoder, resolve_model
from embedstore.estimators.aligners import load_aligner
from embedstore.estimators.artifacts import read_config
from embedstore.data.tasks import Source
from embedstore.text_training.data import Split, read_task, training_rows
from embedstore.text_training.files import dir_hash, file_hash, save_tensors_atomic
from embedstore.text_training.objectives import predict_logits
from embedstore.text_training.model import trainable
from embedstore.text_training.objectives import Contrastive
from embedstore.text_training.options import TrainOptions
from embedstore.text_training.pairs import alignment_term
from embedstore.text_training.run import Trained, data_record, identity, train_once

METHOD = "langalign-e2e"
RESULTS_FILE = "results.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass
class FinetuneResult:
    """What `finetune` produced; `metrics` and `provenance` are what a sweep record needs, under `method`."""

    out: Path
    metrics: dict[str, Any]
    provenance: dict[str, Any]
    history: dict[str, Any]
    steps: int
    resumed_from_step: int
    method: str = METHOD
    #: The label predicted for each test row, in the test file's order; None for a run finished before runs kept
    #: them (its `results.json` has none).
    predicted: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "out": str(self.out)}


def finetune(train: Source, test: Source, aligner: str | os.PathLike[str], out: str | os.PathLike[str], *,
             model: str | None = None, train_aligner: bool = False, freeze_lm: bool = False,
             aligner_at_test: bool = False, options: TrainOptions = TrainOptions(),
             pairs: Source | None = None, align_weight: float = 0.0,
             progress: bool = False) -> FinetuneResult:
    """Step 3 on text: train LM → aligner → head on English rows, then score native target-language rows.

    The aligner is frozen by default (the paper trains it in step 2 and keeps it fixed). Test rows skip it by
    default: they are native target-language vectors, already where the aligner maps English to, and a
    closed-form aligner (mean shift, Procrustes, least squares) would move them away from there. With
    `aligner_at_test` they pass through it too, the single-graph deployment that suits aligners trained with
    LangAlign's identity term (which teaches them to leave target vectors in place). Writes `results.json` (method
    `langalign-e2e`, metrics, provenance) and `model.safetensors` (the trained parameters; frozen ones are
    the base model's and the aligner's, named by fingerprint in the provenance).

    The joint objective: with `align_weight` λ > 0 and translation `pairs`, each step minimises the task loss
    plus λ times the pair-alignment InfoNCE (both directions, temperature 0.05) on the LM's pooled vectors of a
    batch of pairs, the companion study's "align while fine-tuning". λ = 0 is the task loss alone.
    """
    out, aligner_dir = Path(out), Path(aligner)
    spec = plain_encoder(resolve_model(model_with_settings(model)), "finetune")  # None: the project's model
    fitted = load_aligner(aligner_dir)
    if fitted.reverse:  # the head is trained on aligned English, so only English → target maps fit the graph
        raise ConfigError(f"aligner: {aligner_dir} holds a {type(fitted).__name__} trained with reverse=True "
                          "(target → English); the end-to-end model needs an English → target aligner")
    align = fitted.to_torch()  # a copy: training it (train_aligner) never changes the saved estimator
    if fitted.dim_ != spec.hidden_size:
        raise ConfigError(f"aligner: {aligner_dir} maps {fitted.dim_}-d vectors but {spec.name} makes "
                          f"{spec.hidden_size}-d ones; use an aligner trained on this model's vectors")
    _check_joint(pairs, align_weight, freeze_lm)
    rows = training_rows(train, options)
    test_texts, test_labels = read_task(test)
    test_split = Split(test_texts)
    ident = identity("finetune", spec, train, options, test_hash=file_hash(test.file),
                     aligner_hash=dir_hash(aligner_dir), test_columns=test.columns, train_aligner=train_aligner,
                     freeze_lm=freeze_lm, aligner_at_test=aligner_at_test, **_joint_identity(pairs, align_weight))

    joint_terms: list[Contrastive] = []

    def joint_term(tokenizer: Any, _: Any) -> Contrastive:
        joint_terms.append(alignment_term(pairs, tokenizer, spec.prefix, options))
        return joint_terms[0]

    def score(trained: Trained) -> dict[str, Any]:
        logits = predict_logits(trained.graph, trained.tokenizer, test_split.tok, trained.device, trained.amp,
                                options.batch_size, aligner_at_test)
        predicted = rows.classes[logits.argmax(1).numpy()].tolist()
        metrics = classification_metrics(test_labels, predicted)
        metrics["unseen_test_labels"] = sorted(set(test_labels) - set(rows.classes.tolist()))
        save_tensors_atomic(trainable(trained.graph), out / WEIGHTS_FILE)
        aligner_config = read_config(aligner_dir)
        provenance = {
            "method": METHOD, "config": options.to_record(), "seed": options.seed,
            "model": spec.name, "model_path": str(spec.path), "model_fingerprint": spec.fingerprint,
            "prefix": spec.prefix, "pooling": "mean", "train_aligner": train_aligner, "freeze_lm": freeze_lm,
            "aligner_at_test": aligner_at_test, "align_weight": align_weight,
            **({"pairs": {**pairs.record(joint_terms[0].rows),
                          "val_rows": len(joint_terms[0].val_pairs)}} if align_weight else {}),
            "aligner": {"dir": str(aligner_dir.absolute()), "hash": ident["aligner_hash"],
                        "class": aligner_config.get("class"), "params": aligner_config.get("params"),
                        "provenance": aligner_config.get("provenance")},
            "data": data_record(train, ident, rows, test=test.record(len(test_split.texts))),
            **trained.runtime(),
        }
        return {"method": METHOD, "metrics": metrics, "provenance": provenance, "predicted": predicted}

    record = train_once(out, RESULTS_FILE, ident, spec, options, rows, score, description="finetune",
                        progress=progress, aligner=align, train_encoder=not freeze_lm, train_aligner=train_aligner,
                        test=test_split, joint_weight=align_weight,
                        joint=joint_term if align_weight else None)
    return FinetuneResult(out=out, metrics=record["metrics"], provenance=record["provenance"],
                          history=record["history"], steps=record["steps"],
                          resumed_from_step=record["resumed_from_step"], predicted=record.get("predicted"))


def _check_joint(pairs: Source | None, align_weight: float, freeze_lm: bool) -> None:
    if not align_weight >= 0:
        raise ConfigError(f"align_weight: {align_weight!r}; expected a number >= 0")
    if align_weight and pairs is None:
        raise ConfigError(f"align_weight: {align_weight}; the alignment term needs translation pairs (pairs)")
    if pairs is not None and not align_weight:
        raise ConfigError("pairs given with align_weight 0; set align_weight > 0 to use them, or leave them out")
    if align_weight and freeze_lm:
        raise ConfigError("align_weight with freeze_lm: the alignment term acts on the LM, which would not train")


def _joint_identity(pairs: Source | None, align_weight: float) -> dict[str, Any]:
    """λ and the pairs enter a run's identity only when the joint term is on: λ = 0 runs keep their identity."""
    if not align_weight:
        return {}
    return {"align_weight": align_weight, "pairs_hash": file_hash(pairs.file), "pairs_columns": pairs.columns}
