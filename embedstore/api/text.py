"""Training on text: `tune` (step 1), `finetune` (step 3 end to end), `adapt` (the encoder itself) and
`lora-ta` (the paper's LoRA task adaptation).

Training options come as keywords named as `TrainOptions`' fields (epochs, batch_size, lr, ...: names and
defaults from the dataclass) or as one `options=TrainOptions(...)`; `model` None is the project's model. Each run
resumes: called again with the same arguments after an interruption, it continues from its latest checkpoint.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

from embedstore.api.commands import command
from embedstore.api.values import PathLike, WhereLike, rows
from embedstore.base.errors import ConfigError
from embedstore.base.progress import watched
from embedstore.base.schema import check_keys, names_of

if TYPE_CHECKING:  # its module imports the heads' registry (scikit-learn): on call, not on `import embedstore.api`
    from embedstore.text_training.options import TrainOptions


def train_options(options: TrainOptions | None, given: dict[str, Any], *, allowed: Sequence[str] | None = None,
                  defaults: Mapping[str, Any] | None = None) -> TrainOptions:
    """One `TrainOptions` from either a built value or keywords (`allowed`: the fields a command reads, default
    all; `defaults`: where its defaults differ)."""
    from embedstore.text_training.options import TrainOptions

    check_keys("training option ", given, names_of(TrainOptions) if allowed is None else allowed)
    if options is not None and given:
        raise ConfigError("give the training options either as options=TrainOptions(...) or as keywords, not both")
    return options if options is not None else TrainOptions(**{**(defaults or {}), **given})


@command("tune")
def tune(train: PathLike, *, out: PathLike, text_column: str = "text", label_column: str = "label",
         pair_column: str | None = None, where: WhereLike = None, model: PathLike | None = None,
         options: TrainOptions | None = None, progress: bool | None = None, **training: Any):
    """`embedstore tune`: fine-tune the encoder on English task rows and save it in `out` as an ordinary Hugging
    Face model directory (`encode(model=out)` then encodes with it); returns the `TuneResult`."""
    from embedstore.text_training.tune import tune as run

    progress = watched(progress)
    return run(rows(train, text_column, pair=pair_column, label=label_column, where=where), out,
               model=None if model is None else str(model), options=train_options(options, training),
               progress=progress)


@command("finetune")
def finetune(train: PathLike, test: PathLike, *, aligner: PathLike, out: PathLike, text_column: str = "text",
             label_column: str = "label", pair_column: str | None = None, test_text_column: str | None = None,
             test_label_column: str | None = None, test_pair_column: str | None = None, where: WhereLike = None,
             test_where: WhereLike = None, model: PathLike | None = None, train_aligner: bool = False,
             freeze_lm: bool = False, aligner_at_test: bool = False, pairs: PathLike | None = None,
             pairs_source_column: str = "en", pairs_target_column: str = "ko", align_weight: float = 0.0,
             options: TrainOptions | None = None, progress: bool | None = None, **training: Any):
    """`embedstore finetune`: LM → aligner → head trained end to end on English rows, scored on the
    target-language `test` rows (its columns default to the training file's); with `pairs` and `align_weight`
    the joint objective. Results, weights and checkpoints go to `out`; returns the `FinetuneResult`."""
    from embedstore.text_training.finetune import finetune as run

    progress = watched(progress)
    train_rows = rows(train, text_column, pair=pair_column, label=label_column, where=where)
    test_rows = rows(test, test_text_column or text_column, pair=test_pair_column or pair_column,
                     label=test_label_column or label_column, where=test_where)
    return run(train_rows, test_rows, aligner, out, model=None if model is None else str(model),
               train_aligner=train_aligner, freeze_lm=freeze_lm, aligner_at_test=aligner_at_test,
               options=train_options(options, training),
               pairs=rows(pairs, pairs_source_column, target=pairs_target_column) if pairs is not None else None,
               align_weight=align_weight, progress=progress)


@command("adapt")
def adapt(method: str, data: PathLike, *, out: PathLike, text_column: str = "text", label_column: str = "label",
          target_column: str | None = None, where: WhereLike = None, model: PathLike | None = None,
          progress: bool | None = None, **settings: Any):
    """`embedstore adapt`: change the encoder by `method` (lora on labelled task rows, simcse on texts, align
    on translation pairs: `target_column`) and save it in `out`; returns the `TuneResult`. `settings`: the
    method's own (`AdaptRecipe`'s fields: lora_r, temperature, ...) and training options, which default to the
    method's recipe."""
    from embedstore.text_training.adapt import AdaptRecipe, adapt as run, method_options
    from embedstore.text_training.options import TrainOptions

    progress = watched(progress)
    recipe_names = names_of(AdaptRecipe, exclude=("method",))
    check_keys(f"adapt {method} option ", settings, (*recipe_names, *names_of(TrainOptions)))
    recipe = AdaptRecipe(method, **{k: v for k, v in settings.items() if k in recipe_names and v is not None})
    data_rows = rows(data, text_column, label=label_column if method == "lora" else None,
                     target=target_column if method != "lora" else None, where=where)
    return run(recipe, data_rows, out, model=None if model is None else str(model),
               options=method_options(method, **{k: v for k, v in settings.items() if k not in recipe_names}),
               progress=progress)


@command("lora-ta")
def lora_ta(train: PathLike, test: PathLike, *, out: PathLike, text_column: str = "text", label_column: str = "label",
            test_text_column: str | None = None, test_label_column: str | None = None, where: WhereLike = None,
            test_where: WhereLike = None, model: PathLike | None = None, progress: bool | None = None, **settings: Any):
    """`embedstore lora-ta`: the paper's LoRA-TA, LoRA adapters and a task head fine-tuned together on translated
    task rows, that head scoring the `test` rows (its columns default to the training file's). `settings`: LoRA's
    (`AdaptRecipe`'s lora_* fields) and training options, defaulting to the paper's recipe. Returns the
    `FinetuneResult` (results.json in `out`)."""
    from embedstore.text_training.adapt import AdaptRecipe, method_options
    from embedstore.text_training.lora_ta import lora_ta as run
    from embedstore.text_training.options import TrainOptions

    progress = watched(progress)
    recipe_names = names_of(AdaptRecipe, exclude=("method",))
    check_keys("lora-ta option ", settings, (*recipe_names, *names_of(TrainOptions)))
    recipe = AdaptRecipe("lora", **{k: v for k, v in settings.items() if k in recipe_names and v is not None})
    return run(rows(train, text_column, label=label_column, where=where),
               rows(test, test_text_column or text_column, label=test_label_column or label_column, where=test_where),
               out, model=None if model is None else str(model), recipe=recipe,
               options=method_options("lora", **{k: v for k, v in settings.items() if k not in recipe_names}),
               progress=progress)
