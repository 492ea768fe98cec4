"""Step 1 on text (`tune`): task-tune the LM before encoding; and how a trained encoder is saved (`tune` and
`adapt` both save one)."""
from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torch import nn

from embedstore.base.atomic import publish
from embedstore.encoding.settings import model_with_settings
from embedstore.encoding.models import TUNE_FILE, ModelSpec, model_fingerprint, plain_encoder, resolve_model
from embedstore.data.tasks import Source
from embedstore.text_training.data import training_rows
from embedstore.text_training.options import TrainOptions
from embedstore.text_training.run import Trained, data_record, identity, train_once


@dataclass
class TuneResult:
    """What `tune` or `adapt` produced: an ordinary Hugging Face model directory and how it was trained."""

    out: Path
    fingerprint: str
    base_fingerprint: str
    steps: int
    resumed_from_step: int
    history: dict[str, Any]
    provenance: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "out": str(self.out)}

    @classmethod
    def from_record(cls, out: Path, record: dict[str, Any]) -> TuneResult:
        """From the run's record (`embedstore-tune.json`)."""
        prov = record["provenance"]
        return cls(out=out, fingerprint=prov["model_fingerprint"], base_fingerprint=prov["base_model"]["fingerprint"],
                   steps=record["steps"], resumed_from_step=record["resumed_from_step"], history=record["history"],
                   provenance=prov)


def publish_encoder(encoder: nn.Module, trained: Trained, out: Path, spec: ModelSpec, options: TrainOptions,
                    data: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Save `encoder` and its tokenizer into `out` as an ordinary Hugging Face model directory and return the
    run's provenance; the model's fingerprint (its config and weights) is computed from the saved files."""
    staging = out / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    encoder.to("cpu").save_pretrained(staging)
    trained.tokenizer.save_pretrained(staging)
    for f in sorted(staging.iterdir()):
        publish(f, out / f.name)  # fsynced: the record written after them says the model is complete
    staging.rmdir()
    return {"provenance": {
        **(extra or {}), "config": options.to_record(), "seed": options.seed,
        "base_model": {"name": spec.name, "path": str(spec.path), "fingerprint": spec.fingerprint},
        "model_fingerprint": model_fingerprint(out), "prefix": spec.prefix, "data": data, **trained.runtime()}}


def tune(train: Source, out: str | os.PathLike[str], *, model: str | None = None,
         options: TrainOptions = TrainOptions(), progress: bool = False) -> TuneResult:
    """Step 1: fine-tune the LM with a classification head on English task data and save the LM alone as an
    ordinary Hugging Face model directory, which `embedstore encode --model OUT` then encodes with.

    Its weights differ from the base model's, so its fingerprint, and every store key made with it, differ
    too: tuned and untuned vectors never mix. The head is discarded: step 3 trains its own.
    """
    out = Path(out)
    spec = plain_encoder(resolve_model(model_with_settings(model)), "tune")  # None: the project's model
    rows = training_rows(train, options)
    ident = identity("tune", spec, train, options)

    def save_encoder(trained: Trained) -> dict[str, Any]:
        return publish_encoder(trained.graph.encoder, trained, out, spec, options, data_record(train, ident, rows))

    record = train_once(out, TUNE_FILE, ident, spec, options, rows, save_encoder, description="tune",
                        progress=progress)
    return TuneResult.from_record(out, record)
