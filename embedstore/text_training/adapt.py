"""Adapting the encoder itself (`adapt`): the methods the LangAlign paper compares its aligners with (Table 5,
Appendix G) and the companion study's explicit alignment.

- `lora`: task adaptation with LoRA adapters (peft) on English task labels, the paper's recipe by default
  (rank 8, alpha 8, dropout 0.1 on the attention query and key projections, batch 16, lr 1e-5, max length
  256, AdamW); the adapters are merged into the weights before saving.
- `simcse`: unsupervised SimCSE on unlabeled texts: InfoNCE over in-batch negatives at temperature 0.05, the
  positive being the same text under another dropout mask.
- `align`: InfoNCE on translation pairs in both directions (English → target and back), optionally plus an
  identity term that keeps target-language vectors near the base model's (`identity_weight`), as the paper's
  aligners keep target vectors in place.

Each saves an ordinary Hugging Face model directory with `embedstore-tune.json` beside it (the recipe, the base
model's fingerprint, the data hashes, the text prefix), so its fingerprint differs from the base model's and
`encode --model OUT` stores its vectors under their own key; every cached method then runs on it unchanged.
Runs are resumable exactly like `tune` (same checkpoints, loop, run directory rules).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from embedstore.base.errors import ConfigError
from embedstore.encoding.settings import model_with_settings
from embedstore.encoding.models import TUNE_FILE, ModelSpec, plain_encoder, resolve_model
from embedstore.data.tasks import Source
from embedstore.text_training.data import training_rows
from embedstore.text_training.model import SentenceEncoder
from embedstore.text_training.objectives import TEMPERATURE, Contrastive, embed_all
from embedstore.text_training.options import TrainOptions
from embedstore.text_training.pairs import ContrastRows, contrast_rows
from embedstore.text_training.run import Built, Trained, data_record, identity, run_once, train_once
from embedstore.text_training.tune import TuneResult, publish_encoder

METHODS = ("lora", "simcse", "align")

#: Each method's training options where they differ from `TrainOptions`' defaults: the paper's LoRA recipe;
#: SimCSE's learning rate (Gao et al. use 3e-5 for base models) and one epoch; alignment likewise one epoch.
METHOD_OPTIONS: dict[str, dict[str, Any]] = {
    "lora": {"batch_size": 16, "lr": 1e-5, "max_length": 256},
    "simcse": {"batch_size": 16, "lr": 3e-5, "max_length": 128, "epochs": 1},
    "align": {"batch_size": 16, "lr": 2e-5, "max_length": 128, "epochs": 1},
}


def method_options(method: str, **given: Any) -> TrainOptions:
    """The method's recipe with the options the user gave (None = the recipe's value) on top."""
    check_method(method)
    return TrainOptions(**{**METHOD_OPTIONS[method], **{k: v for k, v in given.items() if v is not None}})


def check_method(method: str) -> None:
    if method not in METHODS:
        raise ConfigError(f"method: {method!r}; expected one of {', '.join(METHODS)}")


@dataclass(frozen=True)
class AdaptRecipe:
    """What a method does beyond the training options: LoRA's adapters, the contrastive temperature, the
    identity term's weight. Only the fields of the chosen method enter its identity and provenance."""

    method: str
    lora_r: int = field(default=8, metadata={"help": "lora: adapter rank."})
    lora_alpha: float = field(default=8, metadata={"help": "lora: adapter scale numerator (scale = alpha / r)."})
    lora_dropout: float = field(default=0.1, metadata={"help": "lora: dropout on the adapters' input."})
    lora_targets: tuple[str, ...] = field(default=("query", "key"), metadata={
        "help": "lora: module names to adapt; repeat for several.", "flag": "--lora-target"})
    temperature: float = field(default=TEMPERATURE, metadata={
        "help": "simcse, align: InfoNCE temperature (similarities x 1/t)."})
    identity_weight: float = field(default=0.0, metadata={
        "help": "align: weight of the term keeping target-language vectors near the base model's."})

    def __post_init__(self) -> None:
        check_method(self.method)
        object.__setattr__(self, "lora_targets", tuple(self.lora_targets))
        if isinstance(self.lora_r, bool) or not isinstance(self.lora_r, int) or self.lora_r < 1:
            raise ConfigError(f"lora_r: {self.lora_r!r}; expected a positive integer")
        if not self.lora_alpha > 0:
            raise ConfigError(f"lora_alpha: {self.lora_alpha!r}; expected a number > 0")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"lora_dropout: {self.lora_dropout!r}; expected a number in [0, 1)")
        if not self.lora_targets:
            raise ConfigError("lora_targets: empty; expected module names such as query, key")
        if not self.temperature > 0:
            raise ConfigError(f"temperature: {self.temperature!r}; expected a number > 0")
        if not self.identity_weight >= 0:
            raise ConfigError(f"identity_weight: {self.identity_weight!r}; expected a number >= 0")
        if self.identity_weight and self.method != "align":
            raise ConfigError(f"identity_weight: {self.identity_weight}; only method align has an identity term")

    def to_record(self) -> dict[str, Any]:
        record = asdict(self)
        fields = {"lora": ("lora_r", "lora_alpha", "lora_dropout", "lora_targets"), "simcse": ("temperature",),
                  "align": ("temperature", "identity_weight")}[self.method]
        return {"method": self.method, **{k: (list(record[k]) if k == "lora_targets" else record[k]) for k in fields}}


def adapt(recipe: AdaptRecipe, data: Source, out: str | os.PathLike[str], *,
          model: str | None = None, options: TrainOptions | None = None, progress: bool = False) -> TuneResult:
    """Adapt the encoder by `recipe.method` on `data` (task rows for lora, texts for simcse, translation pairs
    for align) and save it in `out` as an ordinary Hugging Face model directory."""
    out = Path(out)
    options = options if options is not None else method_options(recipe.method)
    spec = plain_encoder(resolve_model(model_with_settings(model)), "adapt")  # None: the project's model
    _check_data(recipe.method, data)
    ident = identity("adapt", spec, data, options, recipe=recipe.to_record())

    def finish(trained: Trained) -> dict[str, Any]:
        encoder = trained.graph.encoder
        if recipe.method == "lora":
            encoder = encoder.merge_and_unload()  # W + (alpha/r)·BA: an ordinary model, no peft to load it
        return publish_encoder(encoder, trained, out, spec, options, data_rows,
                               extra={"method": recipe.method, "recipe": recipe.to_record()})

    if recipe.method == "lora":
        rows = training_rows(data, options)
        data_rows = data_record(data, ident, rows)
        record = train_once(out, TUNE_FILE, ident, spec, options, rows, finish, description="adapt lora",
                            progress=progress, wrap_encoder=lambda encoder: with_lora(encoder, recipe, options.seed))
    else:
        contrast = contrast_rows(data, options)
        data_rows = {"train": data.record(len(contrast.train[0])),
                     "val_rows": len(contrast.val[0])}
        record = run_once(out, TUNE_FILE, ident, spec, options, _contrastive_builder(recipe, spec, options, contrast),
                          finish, description=f"adapt {recipe.method}", progress=progress)
    return TuneResult.from_record(out, record)


def _check_data(method: str, data: Source) -> None:
    if method == "lora" and data.label is None:
        raise ConfigError(f"method lora trains on task rows with labels: name {data.file}'s label column")
    if method != "lora" and data.label is not None:
        raise ConfigError(f"method {method} trains on texts, not labelled task rows: a label column "
                          f"({data.label!r}) was given")
    if method == "simcse" and data.target is not None:
        raise ConfigError("method simcse: a positive column was given; SimCSE's positive is the text itself "
                          "(use method align for translation pairs)")
    if method == "align" and data.target is None:
        raise ConfigError("method align needs translation pairs: name the target-language column")


def with_lora(encoder: nn.Module, recipe: AdaptRecipe, seed: int) -> nn.Module:
    """The encoder with LoRA adapters on `lora_targets`; only the adapters train. Their initialisation draws
    from the run's seed without touching the caller's RNG."""
    from peft import LoraConfig, get_peft_model

    present = {name.rsplit(".", 1)[-1] for name, _ in encoder.named_modules()}
    missing = [t for t in recipe.lora_targets if t not in present]
    if missing:
        raise ConfigError(f"lora_targets: {', '.join(missing)} not found in {type(encoder).__name__}; expected "
                          "names of its linear modules (query, key, value for XLM-R and e5)")
    config = LoraConfig(r=recipe.lora_r, lora_alpha=recipe.lora_alpha, lora_dropout=recipe.lora_dropout,
                        target_modules=list(recipe.lora_targets))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_peft_model(encoder, config)


def _contrastive_builder(recipe: AdaptRecipe, spec: ModelSpec, options: TrainOptions, contrast: ContrastRows):
    def build(encoder: nn.Module, tokenizer: Any, device: torch.device) -> Built:
        train_pairs, val_pairs = contrast.tokenized(tokenizer, spec.prefix, options.max_length)
        graph = SentenceEncoder(encoder).to(device)
        anchors = None
        if recipe.identity_weight:  # the base model's target vectors, before any checkpoint is restored
            graph.eval()
            anchors = embed_all(graph, train_pairs.right, tokenizer.pad_token_id, device, None, options.batch_size)
        objective = Contrastive(train_pairs, val_pairs, tokenizer.pad_token_id, options.batch_size,
                                temperature=recipe.temperature, identity_weight=recipe.identity_weight,
                                anchors=anchors)
        return Built(graph, objective)

    return build
