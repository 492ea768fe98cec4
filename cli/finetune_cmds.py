"""Training on text: `tune` (step 1, task-tune the LM) and `finetune` (step 3 end to end, LM → aligner → head).

Both resume: rerun the same command after an interruption and it continues from the latest checkpoint.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import typer

from embedstore.api import Option, TrainOptions, options_of

from .common import WHERE, console, inject_options, model_flag, model_option, print_json, user_errors

_TRAINING_PANEL = "Training options"


def training_parameters(recipe_defaults: bool = False, *, only: Sequence[str] | None = None,
                        defaults: Mapping[str, Any] | None = None) -> list[inspect.Parameter]:
    """The typer declarations of `TrainOptions`' fields (names, types, defaults and help from the dataclass);
    with `recipe_defaults` every default is None (unset: `adapt` then takes the chosen method's recipe value);
    `only`: the fields a command reads; `defaults`: where its defaults differ."""
    def parameter(option: Option) -> inspect.Parameter:
        default = None if recipe_defaults else (defaults or {}).get(option.name, option.default)
        annotation = Optional[option.type] if recipe_defaults else option.type
        declared = typer.Option(default, option.flag, help=option.help, rich_help_panel=_TRAINING_PANEL)
        return inspect.Parameter(option.name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                                 default=declared)

    return [parameter(option) for option in options_of(TrainOptions) if only is None or option.name in only]


training_options = inject_options(training_parameters(), lambda values: values, "options")
_TRAIN_HELP = "English task data: TSV (no quoting), CSV or JSONL with a text and a label column."
_AS_JSON = typer.Option(False, "--json", help="Print the result as JSON (no progress bar).")


def task_files(train_help: str = _TRAIN_HELP, *, test: bool = True,
               pair: bool = True) -> Callable[[Callable], Callable]:
    """The input-file options of a command that trains on task rows (and, with `test`, scores on another file's):
    `--train` and its columns and `--where`, then `--test` with its own, which default to the training file's.
    Declared once here and passed on as keywords named as the API's (`files`), so every such command spells and
    explains them alike; `pair`: the files may hold a second text (NLI)."""
    def option(name: str, annotation: Any, default: Any, *decls: str, help: str) -> inspect.Parameter:
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                                 default=typer.Option(default, *decls, help=help))

    train = [option("train", Path, ..., "--train", help=train_help),
             option("text_column", str, "text", "--text-column", help="Text column of --train."),
             option("label_column", str, "label", "--label-column", help="Label column of --train."),
             *([option("pair_column", Optional[str], None, "--pair-column",
                       help="Second text of a pair in --train (NLI hypothesis).")] if pair else []),
             inspect.Parameter("where", inspect.Parameter.KEYWORD_ONLY, annotation=list[str], default=WHERE)]
    scored = [option("test", Path, ..., "--test", help="Target-language test rows with the same labels."),
              option("test_text_column", Optional[str], None, "--test-text-column",
                     help="Text column of --test (default: --text-column)."),
              option("test_label_column", Optional[str], None, "--test-label-column",
                     help="Label column of --test (default: --label-column)."),
              *([option("test_pair_column", Optional[str], None, "--test-pair-column",
                        help="Pair column of --test (default: --pair-column).")] if pair else []),
              option("test_where", list[str], [], "--test-where", help="Row filter of --test, as --where.")]
    return inject_options(train + (scored if test else []), lambda values: values, "files")


def _print_history(history: dict, steps: int, resumed_from: int) -> None:
    resumed = f", resumed from step {resumed_from}" if resumed_from else ""
    console.print(f"{steps} optimizer steps{resumed}; best epoch {history['best_epoch']} "
                  f"(val loss {history['best_val_loss']:.4f}){', stopped early' if history['stopped_early'] else ''}")
    for e in history["epochs"]:
        train = "" if e["train_loss"] is None else f"train loss {e['train_loss']:.4f}  "
        console.print(f"  epoch {e['epoch']}: {train}val loss {e['val_loss']:.4f}  val acc {e['val_accuracy']:.3f}")


@user_errors
@training_options
@task_files(test=False)
def tune(
    out: Path = typer.Option(..., "--out", "-o", help="Directory for the tuned model (a Hugging Face model dir): new, "
                                                    "empty, or this run's own to resume."),
    model: Optional[str] = model_flag(),
    as_json: bool = _AS_JSON,
    *,
    files: dict[str, Any],
    options: dict,
) -> None:
    """Step 1: fine-tune the encoder on English task data; `encode --model OUT` then uses the tuned model."""
    from embedstore.api import tune as run

    result = run(**files, out=out, model=model_option(model), progress=not as_json, **options)
    if as_json:
        print_json(result.to_dict())
        return
    _print_history(result.history, result.steps, result.resumed_from_step)
    console.print(f"tuned model: {result.out} (fingerprint {result.fingerprint}, base {result.base_fingerprint}); "
                  f"encode with: embedstore encode FILE --model {result.out}", soft_wrap=True)


@user_errors
@training_options
@task_files()
def finetune(
    aligner: Path = typer.Option(..., "--aligner", help="A saved aligner directory (from `train-aligner`)."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for results.json, weights and checkpoints: new, "
                                                    "empty, or this run's own to resume."),
    model: Optional[str] = model_flag(),
    train_aligner: bool = typer.Option(False, "--train-aligner", help="Train the aligner too (frozen by default)."),
    freeze_lm: bool = typer.Option(False, "--freeze-lm", help="Keep the LM fixed; train the head (and aligner)."),
    aligner_at_test: bool = typer.Option(False, "--aligner-at-test",
                                         help="Pass test texts through the aligner too (one graph for every "
                                              "language; suits aligners trained with the identity term)."),
    pairs: Optional[Path] = typer.Option(None, "--pairs", help="Translation pairs for the joint objective "
                                         "(with --align-weight)."),
    pairs_source_column: str = typer.Option("en", help="English column of --pairs."),
    pairs_target_column: str = typer.Option("ko", help="Target-language column of --pairs."),
    align_weight: float = typer.Option(0.0, "--align-weight", help="λ: task loss + λ x pair-alignment InfoNCE on "
                                       "the LM's vectors (0: the task loss alone)."),
    as_json: bool = _AS_JSON,
    *,
    files: dict[str, Any],
    options: dict,
) -> None:
    """Step 3 end to end: train LM -> aligner -> head on English text, score on target-language text."""
    from embedstore.api import finetune as run

    result = run(**files, aligner=aligner, out=out, model=model_option(model), train_aligner=train_aligner,
                 freeze_lm=freeze_lm, aligner_at_test=aligner_at_test, pairs=pairs,
                 pairs_source_column=pairs_source_column, pairs_target_column=pairs_target_column,
                 align_weight=align_weight, progress=not as_json, **options)
    if as_json:
        print_json(result.to_dict())
        return
    _print_history(result.history, result.steps, result.resumed_from_step)
    m = result.metrics
    console.print(f"{result.method} on {files['test']} ({m['n']:,} rows): accuracy {m['accuracy']:.4f}, "
                  f"macro-F1 {m['macro_f1']:.4f}; results in {result.out / 'results.json'}", soft_wrap=True)
