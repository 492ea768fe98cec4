"""Training on text: `tune` (step 1, task-tune the LM) and `finetune` (step 3 end to end, LM → aligner → head).

Both resume: rerun the same command after an interruption and it continues from the latest checkpoint.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from embedstore.encoding.models import DEFAULT_MODEL
from embedstore.estimators.heads import HEADS
from embedstore.text_training.options import PRECISIONS, TrainOptions

from .common import console, print_json, user_errors

_D = TrainOptions()  # the library's defaults: the CLI shows them, it does not restate them

_TRAIN_HELP = "English task data: TSV (no quoting), CSV or JSONL with a text and a label column."
_MODEL = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Model name or local model directory.")
_EPOCHS = typer.Option(_D.epochs, help="Maximum epochs (early stopping may end sooner).")
_BATCH_SIZE = typer.Option(_D.batch_size, help="Rows per forward pass.")
_GRAD_ACCUM = typer.Option(_D.grad_accum, help="Forward passes per optimizer step (effective batch = batch size x this).")
_PATIENCE = typer.Option(_D.patience, help="Epochs without a lower validation loss before stopping.")
_MAX_LENGTH = typer.Option(_D.max_length, help="Tokens per text (longer texts are truncated).")
_SIZE = typer.Option(str(_D.size), help="English rows to train on: a number, 1k-style, or all (seeded sample).")
_SEED = typer.Option(_D.seed, help="Seed of the split, the sample, the head's init and dropout.")
_CHECKPOINT_EVERY = typer.Option(_D.checkpoint_every, help="Checkpoint every N optimizer steps (0: at epoch ends only).")
_DEVICE = typer.Option(_D.device, help="auto (CUDA when present), cpu, cuda, cuda:N.")
_PRECISION = typer.Option(_D.precision, help=f"{', '.join(PRECISIONS)} (autocast on CUDA only; CPU is fp32).")
_AS_JSON = typer.Option(False, "--json", help="Print the result as JSON (no progress bar).")


def _options(epochs: int, batch_size: int, lr: float, head_lr: float, grad_accum: int, checkpoint_every: int,
             max_length: int, seed: int, device: str, precision: str, size: str, head: str,
             patience: int) -> TrainOptions:
    return TrainOptions(epochs=epochs, batch_size=batch_size, lr=lr, head_lr=head_lr, grad_accum=grad_accum,
                        checkpoint_every=checkpoint_every, max_length=max_length, seed=seed, device=device,
                        precision=precision, size=size, head=head, patience=patience)


def _print_history(history: dict, steps: int, resumed_from: int) -> None:
    resumed = f", resumed from step {resumed_from}" if resumed_from else ""
    console.print(f"{steps} optimizer steps{resumed}; best epoch {history['best_epoch']} "
                  f"(val loss {history['best_val_loss']:.4f}){', stopped early' if history['stopped_early'] else ''}")
    for e in history["epochs"]:
        train = "" if e["train_loss"] is None else f"train loss {e['train_loss']:.4f}  "
        console.print(f"  epoch {e['epoch']}: {train}val loss {e['val_loss']:.4f}  val acc {e['val_accuracy']:.3f}")


@user_errors
def tune(
    train: Path = typer.Option(..., "--train", help=_TRAIN_HELP),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for the tuned model (a Hugging Face model dir): new, "
                                                    "empty, or this run's own to resume."),
    text_column: str = typer.Option("text", help="Column holding the text."),
    label_column: str = typer.Option("label", help="Column holding the class label."),
    pair_column: Optional[str] = typer.Option(None, help="Second text of a pair (NLI hypothesis)."),
    model: str = _MODEL,
    epochs: int = _EPOCHS,
    batch_size: int = _BATCH_SIZE,
    grad_accum: int = _GRAD_ACCUM,
    lr: float = typer.Option(_D.lr, help="Learning rate of the LM."),
    head_lr: float = typer.Option(_D.head_lr, help="Learning rate of the classification head."),
    head: str = typer.Option(_D.head, help=f"Classification head: {', '.join(HEADS)}."),
    patience: int = _PATIENCE,
    max_length: int = _MAX_LENGTH,
    size: str = _SIZE,
    seed: int = _SEED,
    checkpoint_every: int = _CHECKPOINT_EVERY,
    device: str = _DEVICE,
    precision: str = _PRECISION,
    as_json: bool = _AS_JSON,
) -> None:
    """Step 1: fine-tune the encoder on English task data; `encode --model OUT` then uses the tuned model."""
    from embedstore.text_training.data import TaskFile
    from embedstore.text_training.tune import tune as run_tune

    options = _options(epochs, batch_size, lr, head_lr, grad_accum, checkpoint_every, max_length, seed, device,
                       precision, size, head, patience)
    result = run_tune(TaskFile(train, text_column, label_column, pair_column), out, model=model, options=options,
                      progress=not as_json)
    if as_json:
        print_json(result.to_dict())
        return
    _print_history(result.history, result.steps, result.resumed_from_step)
    console.print(f"tuned model: {result.out} (fingerprint {result.fingerprint}, base {result.base_fingerprint}); "
                  f"encode with: embedstore encode FILE --model {result.out}", soft_wrap=True)


@user_errors
def finetune(
    train: Path = typer.Option(..., "--train", help=_TRAIN_HELP),
    test: Path = typer.Option(..., "--test", help="Target-language test data with the same labels."),
    aligner: Path = typer.Option(..., "--aligner", help="A saved aligner directory (from `train-aligner`)."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for results.json, weights and checkpoints: new, "
                                                    "empty, or this run's own to resume."),
    text_column: str = typer.Option("text", help="Text column of the training file."),
    label_column: str = typer.Option("label", help="Label column of the training file."),
    pair_column: Optional[str] = typer.Option(None, help="Second text of a pair in the training file."),
    test_text_column: Optional[str] = typer.Option(None, help="Text column of the test file (default: --text-column)."),
    test_label_column: Optional[str] = typer.Option(None, help="Label column of the test file "
                                                                "(default: --label-column)."),
    test_pair_column: Optional[str] = typer.Option(None, help="Pair column of the test file (default: --pair-column)."),
    model: str = _MODEL,
    train_aligner: bool = typer.Option(False, "--train-aligner", help="Train the aligner too (frozen by default)."),
    freeze_lm: bool = typer.Option(False, "--freeze-lm", help="Keep the LM fixed; train the head (and aligner)."),
    aligner_at_test: bool = typer.Option(False, "--aligner-at-test",
                                         help="Pass test texts through the aligner too (one graph for every "
                                              "language; suits aligners trained with the identity term)."),
    epochs: int = _EPOCHS,
    batch_size: int = _BATCH_SIZE,
    grad_accum: int = _GRAD_ACCUM,
    lr: float = typer.Option(_D.lr, help="Learning rate of the LM and the aligner."),
    head_lr: float = typer.Option(_D.head_lr, help="Learning rate of the task head."),
    head: str = typer.Option(_D.head, help=f"Task head: {', '.join(HEADS)}."),
    patience: int = _PATIENCE,
    max_length: int = _MAX_LENGTH,
    size: str = _SIZE,
    seed: int = _SEED,
    checkpoint_every: int = _CHECKPOINT_EVERY,
    device: str = _DEVICE,
    precision: str = _PRECISION,
    as_json: bool = _AS_JSON,
) -> None:
    """Step 3 end to end: train LM -> aligner -> head on English text, score on target-language text."""
    from embedstore.text_training.data import TaskFile
    from embedstore.text_training.finetune import finetune as run_finetune

    options = _options(epochs, batch_size, lr, head_lr, grad_accum, checkpoint_every, max_length, seed, device,
                       precision, size, head, patience)
    test_file = TaskFile(test, test_text_column or text_column, test_label_column or label_column,
                         test_pair_column or pair_column)
    result = run_finetune(TaskFile(train, text_column, label_column, pair_column), test_file, aligner, out,
                          model=model, train_aligner=train_aligner, freeze_lm=freeze_lm,
                          aligner_at_test=aligner_at_test, options=options, progress=not as_json)
    if as_json:
        print_json(result.to_dict())
        return
    _print_history(result.history, result.steps, result.resumed_from_step)
    m = result.metrics
    console.print(f"{result.method} on {test} ({m['n']:,} rows): accuracy {m['accuracy']:.4f}, "
                  f"macro-F1 {m['macro_f1']:.4f}; results in {result.out / 'results.json'}", soft_wrap=True)
