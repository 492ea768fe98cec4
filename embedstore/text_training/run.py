"""The path `tune`, `finetune` and `adapt` share: one resumable run in an output directory.

A run is known by its identity (command, model and data hashes, options). Its result file, written last, means
"finished": a rerun with the same identity returns it, one with another identity is refused rather than
overwriting it. Until then the checkpoints hold the run, and a rerun resumes from them. Once the result is
written the checkpoints are deleted. The run owns `out` (`rundir`): it refuses a directory holding anything
that is not its own run.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from embedstore.base.errors import ConfigError
from embedstore.base.history import read_history
from embedstore.base.progress import step_lines
from embedstore.base.provenance import stamp
from embedstore.encoding.models import ModelSpec, load_model, resolve_device
from embedstore.text_training.checkpoints import Checkpoints
from embedstore.data.tasks import Source
from embedstore.text_training.data import Split, TrainingRows, tokenize_splits
from embedstore.base.atomic import write_json
from embedstore.text_training.files import file_hash, read_json_object, run_lock
from embedstore.text_training.loop import Job, Outcome, differences, train
from embedstore.text_training.model import TextClassifier, head_module
from embedstore.text_training.objectives import Classification, Contrastive, Objective
from embedstore.text_training.options import TrainOptions
from embedstore.estimators.training import precision_name
from embedstore.text_training.precision import amp_dtype
from embedstore.text_training.rundir import check_run_dir, claim_run_dir


@dataclass
class Trained:
    """A trained graph and what was needed to train it, for the command to compute its outputs from."""

    graph: nn.Module
    tokenizer: Any
    device: torch.device
    amp: torch.dtype | None
    outcome: Outcome

    def runtime(self) -> dict[str, Any]:
        """Where and how long it ran: provenance that does not change what was computed."""
        return {"wall_time_s": self.outcome.seconds, **stamp(libraries=True), "device": str(self.device),
                "precision": precision_name(self.amp)}


def identity(command: str, spec: ModelSpec, train_file: Source, options: TrainOptions,
             **extra: Any) -> dict[str, Any]:
    """What decides a run's result: a checkpoint or a result with another identity belongs to another run."""
    return {"command": command, "base_fingerprint": spec.fingerprint, "train_hash": file_hash(train_file.file),
            "columns": train_file.columns, "prefix": spec.prefix, **extra, **options.to_record()}


def data_record(train_file: Source, ident: dict[str, Any], rows: TrainingRows,
                **test: dict[str, Any]) -> dict[str, Any]:
    """Provenance of the rows a run trained (and, for finetune, was scored) on."""
    return {"train": train_file.record(len(rows.train.texts)), "val_rows": len(rows.val.texts),
            **test, "classes": rows.classes.tolist()}


@dataclass
class Built:
    """What a run trains: the graph (its trainable parameters are what checkpoints hold) and its objective."""

    graph: nn.Module
    objective: Objective


#: Builds a run's graph and objective from the freshly loaded base encoder and its tokenizer, on `device`.
Builder = Callable[[nn.Module, Any, torch.device], Built]


def run_once(out: Path, result_file: str, ident: dict[str, Any], spec: ModelSpec, options: TrainOptions,
             build: Builder, finish: Callable[[Trained], dict[str, Any]], *, description: str,
             progress: bool) -> dict[str, Any]:
    """Train what `build` makes in `out` unless a finished run with this identity is there, and return the
    run's record: what `finish` makes of the trained graph, plus identity, history and steps."""
    device = resolve_device(options.device)
    amp = amp_dtype(options.precision, device)
    ident = {**ident, "precision": precision_name(amp)}  # what it runs in: "auto" resolved, as results differ by it
    checkpoints = Checkpoints(out)
    check_run_dir(out, ident)  # before the lock, which writes into `out`
    with run_lock(out):
        claim_run_dir(out, ident)
        done = _finished(out / result_file, ident, out)
        if done is not None:  # a kill may have landed between the result and the clean-up
            checkpoints.remove()
            return done
        encoder, tokenizer = _load_encoder(spec, device)
        built = build(encoder, tokenizer, device)
        outcome = train(Job(built.graph, built.objective, options, device, amp, checkpoints, ident, progress,
                            description))
        # after the bar reaches 100 %, scoring the test rows can take minutes on a CPU: say so as it starts
        step_lines(enabled=progress)(f"{description}: training finished; scoring and saving the result")
        record = {**finish(Trained(built.graph, tokenizer, device, amp, outcome)), "identity": ident,
                  "history": outcome.history.to_dict(), "steps": outcome.steps,
                  "resumed_from_step": outcome.resumed_from_step}
        write_json(out / result_file, record)  # written last: its presence means "finished"
        checkpoints.remove()
    return record


def train_once(out: Path, result_file: str, ident: dict[str, Any], spec: ModelSpec, options: TrainOptions,
               rows: TrainingRows, finish: Callable[[Trained], dict[str, Any]], *, description: str,
               progress: bool, aligner: nn.Module | None = None, train_encoder: bool = True,
               train_aligner: bool = False, test: Split | None = None,
               wrap_encoder: Callable[[nn.Module], nn.Module] | None = None,
               joint: Callable[[Any, torch.device], Contrastive] | None = None,
               joint_weight: float = 0.0) -> dict[str, Any]:
    """Train LM → (aligner) → head on task labels (`run_once`). `wrap_encoder` replaces the LM inside the graph
    once it is built (LoRA: only the adapters then train); `joint` builds the alignment term that the task loss
    is joined with, at weight `joint_weight`."""
    def build(encoder: nn.Module, tokenizer: Any, device: torch.device) -> Built:
        tokenize_splits(tokenizer, spec.prefix, options.max_length, rows.train, rows.val,
                        *([test] if test is not None else []))
        head = head_module(options.head, spec.hidden_size, len(rows.classes), options.seed)
        graph = TextClassifier(encoder, head, len(rows.classes), aligner, train_encoder=train_encoder,
                               train_aligner=train_aligner)
        if wrap_encoder is not None:
            graph.encoder = wrap_encoder(graph.encoder)
        term = joint(tokenizer, device) if joint is not None else None
        return Built(graph, Classification(tokenizer, rows.train, rows.val, options.batch_size, joint=term,
                                           joint_weight=joint_weight, seed=options.seed))

    return run_once(out, result_file, ident, spec, options, build, finish, description=description,
                    progress=progress)


def _load_encoder(spec: ModelSpec, device: torch.device) -> tuple[nn.Module, Any]:
    model, tokenizer = load_model(spec, str(device))
    if tokenizer.pad_token_id is None:
        raise ConfigError(f"model: {spec.path} has a tokenizer without a padding token; "
                          "expected an encoder like XLM-R or e5")
    return model, tokenizer


def _finished(path: Path, ident: dict[str, Any], out: Path) -> dict[str, Any] | None:
    """The saved result of a finished run with this identity; a finished run with another identity in the
    same directory is refused rather than overwritten."""
    if not path.is_file():
        return None
    saved = read_json_object(path, "a run's result record")
    differ = differences(saved.get("identity") or {}, ident)
    if differ:
        raise ConfigError(f"out: {out} already holds a finished run with different {', '.join(differ)}; "
                          "pass another out directory")
    return {**saved, "history": read_history(saved.get("history"), f"{path}: history")}  # older shapes too
