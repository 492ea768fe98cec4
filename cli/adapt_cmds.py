"""`adapt`: change the encoder itself (LoRA task adaptation, SimCSE, contrastive alignment on pairs).

Resumes like `tune`: rerun the same command after an interruption and it continues from the latest checkpoint.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Optional

import typer

from embedstore.api import ADAPT_METHODS, options_of

from .common import WHERE, console, inject_options, model_flag, model_option, print_json, user_errors
from .finetune_cmds import _print_history, task_files, training_parameters

recipe_options = inject_options(training_parameters(recipe_defaults=True),
                                lambda values: {k: v for k, v in values.items() if v is not None}, "overrides")


def _method_parameters() -> list[inspect.Parameter]:
    """The typer declarations of `AdaptRecipe`'s fields (names, types, defaults, help from the dataclass)."""
    from embedstore.api import AdaptRecipe

    return [inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY, annotation=o.type,
                              default=typer.Option(o.default, o.flag, help=o.help))
            for o in options_of(AdaptRecipe, exclude=("method",))]


recipe_fields = inject_options(_method_parameters(), lambda values: values, "method_fields")


@user_errors
@recipe_options
@recipe_fields
def adapt(
    method: str = typer.Argument(..., help=f"{', '.join(ADAPT_METHODS)}: LoRA task adaptation on labelled English rows, "
                                 "unsupervised SimCSE on texts, or contrastive alignment on translation pairs."),
    data: Path = typer.Option(..., "--data", help="TSV (no quoting), CSV or JSONL: task rows (lora), texts (simcse) "
                              "or translation pairs (align)."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for the adapted model (a Hugging Face model dir): "
                             "new, empty, or this run's own to resume."),
    text_column: str = typer.Option("text", help="Column of the (English) texts."),
    label_column: str = typer.Option("label", help="lora: column of the class labels."),
    target_column: Optional[str] = typer.Option(None, help="align: column of the translations (e.g. ko)."),
    where: list[str] = WHERE,
    model: Optional[str] = model_flag(),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON (no progress bar)."),
    *,
    overrides: dict[str, Any],
    method_fields: dict[str, Any],
) -> None:
    """Adapt the encoder; `encode --model OUT` then stores its vectors under their own key.

    Training options left unset take the method's recipe (the paper's for LoRA): lora batch 16, lr 1e-5,
    max length 256; simcse batch 16, lr 3e-5, max length 128, 1 epoch; align batch 16, lr 2e-5, max length 128,
    1 epoch.
    """
    from embedstore.api import adapt as run

    result = run(method, data, out=out, text_column=text_column, label_column=label_column,
                 target_column=target_column, where=where, model=model_option(model), progress=not as_json,
                 **method_fields, **overrides)
    if as_json:
        print_json(result.to_dict())
        return
    _print_history(result.history, result.steps, result.resumed_from_step)
    console.print(f"adapted model ({method}): {result.out} (fingerprint {result.fingerprint}, base "
                  f"{result.base_fingerprint}); encode with: embedstore encode FILE --model {result.out}",
                  soft_wrap=True)


@user_errors
@recipe_options
@recipe_fields
@task_files("Translated task rows: TSV (no quoting), CSV or JSONL with a text and a label column.", pair=False)
def lora_ta(
    out: Path = typer.Option(..., "--out", "-o", help="Directory for results.json and the trained adapters and "
                             "head: new, empty, or this run's own to resume."),
    model: Optional[str] = model_flag(),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON (no progress bar)."),
    *,
    files: dict[str, Any],
    overrides: dict[str, Any],
    method_fields: dict[str, Any],
) -> None:
    """The paper's LoRA-TA: LoRA adapters and a task head fine-tuned together on translated task rows, that head
    scoring the test rows; prints ‖ΔW‖/‖W‖ and the base-vs-adapted cosine beside the scores.

    Unset options take the paper's recipe (r 8, alpha 8, dropout 0.1 on query and key; batch 16, lr 1e-5, max
    length 256, AdamW), with early stopping on a validation split of the training rows.
    """
    from embedstore.api import lora_ta as run

    result = run(**files, out=out, model=model_option(model), progress=not as_json, **method_fields, **overrides)
    if as_json:
        print_json(result.to_dict())
        return
    _print_history(result.history, result.steps, result.resumed_from_step)
    m = result.metrics
    moved = m["adaptation"]
    console.print(f"lora-ta on {files['test']} ({m['n']:,} rows): accuracy {m['accuracy']:.4f}, "
                  f"macro-F1 {m['macro_f1']:.4f}; ‖ΔW‖/‖W‖ {moved['relative_weight_change']['overall']:.2e}, "
                  f"mean cosine base vs adapted {moved['mean_cosine_base_adapted']:.3f}; "
                  f"results in {result.out / 'results.json'}", soft_wrap=True)
