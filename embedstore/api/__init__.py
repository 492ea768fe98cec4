"""The Python API: every command of the CLI as a function with keyword options, re-exported by `embedstore`.

    import embedstore
    vectors = embedstore.encode(["첫 번째 문장", "second sentence"])          # (2, 384) float32, stored
    embedstore.train_aligner("pairs.parquet", target_column="ko", out="cache/al")
    embedstore.train_head("task.en.parquet", label_column="label", aligner="cache/al", out="cache/pipe")
    pipe = embedstore.Pipeline.load("cache/pipe")
    pipe.predict(["새 문서를 여는 방법"])                                        # ["shared"]: one label per text
    pipe.predict_proba(["새 문서를 여는 방법"])                                  # (1, n_classes), pipe.classes_ order

Every CLI command parses its options, calls its function here (`COMMANDS`: command → function) and prints what
it returns, so a command and its function cannot drift apart; the CLI imports nothing of the library but this
package. This is where keyword options become the library's values (rows of a file, encoding options, sizes,
the store). What a call leaves unset (the store, the model, the encoding options) comes from the project
settings (`embedstore.toml`, `EMBEDSTORE_*` variables: `embedstore.encoding.settings`), then the defaults, and the
records returned say under "settings" where each value came from.

Functions import the estimators (torch, scikit-learn) they need when called, so `encode_files` (and a re-run of
a finished `embedstore encode`) never pays for them; the vocabulary a caller chooses from (the registries of
aligners, heads and recipes, the option dataclasses, the errors) is here too, the registries imported on first use.
"""
from __future__ import annotations

import importlib
from typing import Any

from embedstore.api.analysis import analyze_cosine, analyze_encoder_gradients, analyze_gradients, analyze_layers, \
    analyze_retrieval, mine
from embedstore.api.commands import COMMANDS
from embedstore.api.encoding import encode, encode_files, list_cache, merge_stores, prune_cache, pull_model, \
    store_info, verify_store
from embedstore.api.steps import evaluate, export_pipeline, load_pipeline, predict, train_aligner, train_head
from embedstore.api.studies import demo, report, sweep
from embedstore.api.text import adapt, finetune, lora_ta, tune
from embedstore.api.values import as_where, encoding_options, mark_explicit, model_with_settings, \
    options_with_settings, project_settings, rows, settings_record, store_path
from embedstore.base.errors import ConfigError, EmbedstoreError, InputError, StoreError
from embedstore.base.schema import Option, options_of
from embedstore.data.tasks import Source
from embedstore.encoding.options import ComputeOptions, EncodeOptions, computing

__all__ = ["COMMANDS", "ComputeOptions", "ConfigError", "EmbedstoreError", "EncodeOptions", "InputError", "Option",
           "Source", "StoreError", "adapt", "analyze_cosine", "analyze_encoder_gradients", "analyze_gradients",
           "analyze_layers", "analyze_retrieval", "as_where", "computing", "demo", "encode", "encode_files", "encoding_options",
           "evaluate", "export_pipeline", "finetune", "list_cache", "load_pipeline", "lora_ta", "mark_explicit",
           "merge_stores", "mine", "model_with_settings", "options_of", "options_with_settings", "predict",
           "project_settings", "prune_cache", "pull_model", "report", "rows", "settings_record", "store_info",
           "store_path", "sweep", "train_aligner", "train_head", "tune", "verify_store", *(
               "ALIGNERS", "DEFAULT_ALIGNER", "HEADS", "DEFAULT_HEAD", "NORMALIZATIONS", "head_kinds", "RECIPES",
               "DEFAULT_RECIPE", "NO_ALIGNER", "ADAPT_METHODS", "AdaptRecipe", "TrainOptions", "GRADIENT_OPTIONS",
               "GRADIENT_DEFAULTS", "EXPORT_FORMATS",
               "EXPORT_TOLERANCE", "Pipeline", "SplitOptions", "damaged_rows", "version")]

#: The vocabulary whose modules import torch or scikit-learn: name → (module, attribute), imported on first use.
_LAZY = {
    "ALIGNERS": ("embedstore.estimators.aligners", "ALIGNERS"),
    "DEFAULT_ALIGNER": ("embedstore.estimators.aligners", "DEFAULT_ALIGNER"),
    "HEADS": ("embedstore.estimators.heads", "HEADS"),
    "DEFAULT_HEAD": ("embedstore.estimators.heads", "DEFAULT_HEAD"),
    "NORMALIZATIONS": ("embedstore.estimators.heads", "NORMALIZATIONS"),
    "head_kinds": ("embedstore.estimators.heads", "head_kinds"),
    "RECIPES": ("embedstore.estimators.training", "RECIPES"),
    "DEFAULT_RECIPE": ("embedstore.estimators.training", "DEFAULT_RECIPE"),
    "NO_ALIGNER": ("embedstore.analysis.runs", "NO_ALIGNER"),
    "ADAPT_METHODS": ("embedstore.text_training.adapt", "METHODS"),
    "AdaptRecipe": ("embedstore.text_training.adapt", "AdaptRecipe"),
    "TrainOptions": ("embedstore.text_training.options", "TrainOptions"),
    "GRADIENT_OPTIONS": ("embedstore.text_training.options", "GRADIENT_OPTIONS"),
    "GRADIENT_DEFAULTS": ("embedstore.text_training.options", "GRADIENT_DEFAULTS"),
    "EXPORT_FORMATS": ("embedstore.export.export", "FORMATS"),
    "EXPORT_TOLERANCE": ("embedstore.export.export", "TOLERANCE"),
    "Pipeline": ("embedstore.pipelines.pipeline", "Pipeline"),
    "SplitOptions": ("embedstore.analysis.runs", "SplitOptions"),
    "damaged_rows": ("embedstore.store", "damaged_rows"),
}


def version() -> str:
    """The installed package's version."""
    import embedstore

    return embedstore.__version__


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'embedstore.api' has no attribute {name!r}")
