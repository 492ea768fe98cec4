"""The training loop of text training, shared by `tune`, `finetune` and `adapt`.

Why a second loop next to `estimators/training.py`: that loop trains small modules on in-memory vectors in
seconds, so it never needs to stop midway. Here every step runs the transformer, an epoch can take hours on a
GPU, and a run must survive being killed. So this loop adds gradient accumulation, autocast (CUDA only), and
checkpoints that a rerun of the same command resumes from, landing on the same final weights as an
uninterrupted run (bit for bit on CPU).

What a step minimises is the job's `Objective` (objectives.py): cross-entropy on task labels for `tune`,
`finetune` and LoRA, contrastive losses for SimCSE and pair alignment, a weighted sum for the joint finetune.
The loop only needs to know how many examples there are, the summed loss of a batch of them, and a validation
score.

Checkpoints are taken every `checkpoint_every` optimizer steps and at the end of every epoch (after
validation). Batches are a seeded permutation per epoch, recomputed on resume, so a resumed run skips exactly
the batches it has already trained on.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from torch import nn

from embedstore.base.errors import ConfigError
from embedstore.base.history import History
from embedstore.base.progress import make_progress
from embedstore.base.stopping import patience_step
from embedstore.estimators.training import adamw
from embedstore.text_training.checkpoints import Checkpoints
from embedstore.text_training.objectives import Objective
from embedstore.text_training.options import TrainOptions

#: Options that change how a run is computed but not what it computes, so a resume may change them.
_RESUMABLE_CHANGES = ("device", "checkpoint_every")


@dataclass
class Job:
    """Everything one text training run needs; `identity` decides whether a checkpoint belongs to it."""

    graph: nn.Module
    objective: Objective
    options: TrainOptions
    device: torch.device
    amp: torch.dtype | None
    checkpoints: Checkpoints
    identity: dict[str, Any]
    progress: bool
    description: str


@dataclass
class Outcome:
    history: History
    steps: int
    resumed_from_step: int
    seconds: float  # over all segments of an interrupted run


def differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Which result-affecting settings (options, data and model hashes) differ between two run identities."""
    return [k for k in sorted(set(saved) | set(current))
            if k not in _RESUMABLE_CHANGES and saved.get(k) != current.get(k)]


def _check_identity(saved: dict[str, Any], current: dict[str, Any], where: Path) -> None:
    differ = differences(saved, current)
    if differ:
        raise ConfigError(f"{where} holds an unfinished run with different {', '.join(differ)}; rerun with the "
                          f"same options to resume, or delete {where} (or pass another out directory) to start over")


def _param_groups(graph: nn.Module, options: TrainOptions) -> tuple[list[dict[str, Any]], list[str]]:
    """AdamW groups (LM/aligner at `lr`, head at `head_lr`; no decay on biases and norms, as is standard for
    transformers) and the parameter names in the optimizer's index order, which checkpoints key state by."""
    groups, names = [], []
    for prefix, lr in (("encoder.", options.lr), ("aligner.", options.lr), ("head.", options.head_lr)):
        params = [(n, p) for n, p in graph.named_parameters() if p.requires_grad and n.startswith(prefix)]
        for decay in (True, False):
            chosen = [(n, p) for n, p in params if (p.ndim >= 2) == decay]
            if chosen:
                groups.append({"params": [p for _, p in chosen], "lr": lr,
                               "weight_decay": options.weight_decay if decay else 0.0})
                names.extend(n for n, _ in chosen)
    return groups, names


def _progress(enabled: bool, description: str, total: int, completed: int) -> tuple[Progress, TaskID]:
    bar = make_progress(TextColumn(f"[bold]{description}[/bold] epoch {{task.fields[epoch]}}"), BarColumn(),
                        MofNCompleteColumn(), TextColumn("steps  loss {task.fields[loss]:.4f}"), TimeElapsedColumn(),
                        TimeRemainingColumn(), enabled=enabled, stderr=True)
    task = bar.add_task(description, total=total, completed=completed, loss=float("nan"), epoch=1)
    return bar, task


def _fresh_state(identity: dict[str, Any]) -> dict[str, Any]:
    return {"identity": identity, "step": 0, "epoch": 0, "epoch_loss_sum": 0.0, "epoch_rows": 0,
            "epoch_seconds": 0.0, "since_best": 0, "stopped_early": False, "seconds": 0.0,
            "best": {"val_loss": None, "epoch": 0, "step": 0, "file": None},
            "history": {"epochs": [], "step_losses": []}, "scaler": {}}


def _optimizer_step(job: Job, group: list[np.ndarray], optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler, params: list[nn.Parameter]) -> float:
    """One optimizer step over `group` (grad_accum micro-batches); returns the group's mean loss.

    Each micro-batch's summed loss is divided by the rows of the whole group, so accumulation computes exactly
    the mean loss of one large batch (also for a short last group).
    """
    rows = sum(len(b) for b in group)
    group_loss = 0.0
    for b in group:
        loss = job.objective.batch_loss(job.graph, b, job.device, job.amp) / rows
        scaler.scale(loss).backward()  # fp16: scaled so small gradients do not underflow; else unchanged
        group_loss += loss.item()
    scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
    torch.nn.utils.clip_grad_norm_(params, job.options.max_grad_norm)
    scaler.step(optimizer)  # fp16: skipped when a gradient overflowed
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return group_loss


def train(job: Job) -> Outcome:
    """Train `job.graph` in place, resuming from the latest complete checkpoint, and leave the best
    validation epoch's weights in it."""
    opts, graph, device = job.options, job.graph, job.device
    started = time.perf_counter()
    graph.to(device)
    groups, param_names = _param_groups(graph, opts)
    optimizer = adamw(groups)
    scaler = torch.amp.GradScaler("cuda", enabled=job.amp == torch.float16)
    params = [p for g in groups for p in g["params"]]
    n = job.objective.rows
    per_epoch = math.ceil(math.ceil(n / opts.batch_size) / opts.grad_accum)  # optimizer steps
    total = per_epoch * opts.epochs
    ckpt = job.checkpoints
    ckpt.remove_partial()
    state = _fresh_state(job.identity)
    rng_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices):
        torch.manual_seed(opts.seed)
        latest = ckpt.latest()
        if latest is not None:
            _check_identity(ckpt.saved_identity(latest), job.identity, ckpt.root.parent)
            state = ckpt.restore(latest, graph, optimizer, param_names, device)
            if state["scaler"]:
                scaler.load_state_dict(state["scaler"])
        resumed_from, seconds_before, history = state["step"], state["seconds"], state["history"]

        def checkpoint() -> None:
            state["seconds"] = seconds_before + time.perf_counter() - started
            state["scaler"] = scaler.state_dict()
            ckpt.save(state["step"], graph, optimizer, param_names, device, state)

        if not history["epochs"]:  # the untrained model's validation score: the baseline "loss falls" is measured from
            val_loss, val_acc = job.objective.validate(job.graph, job.device, job.amp)
            history["epochs"].append({"epoch": 0, "step": 0, "train_loss": None, "val_loss": val_loss,
                                      "val_accuracy": val_acc})
        bar, task = _progress(job.progress, job.description, total, state["step"])
        with bar:
            for epoch in range(state["epoch"], opts.epochs):
                if state["stopped_early"]:
                    break
                graph.train()
                bar.update(task, epoch=epoch + 1)
                perm = np.random.default_rng([opts.seed, epoch]).permutation(n)
                batches = [perm[i:i + opts.batch_size] for i in range(0, n, opts.batch_size)]
                for g in range(state["step"] - epoch * per_epoch, per_epoch):
                    group = batches[g * opts.grad_accum:(g + 1) * opts.grad_accum]
                    step_started = time.perf_counter()
                    group_loss = _optimizer_step(job, group, optimizer, scaler, params)
                    rows = sum(len(b) for b in group)
                    state["step"] += 1
                    state["epoch_loss_sum"] += group_loss * rows
                    state["epoch_rows"] += rows
                    state["epoch_seconds"] += time.perf_counter() - step_started
                    history["step_losses"].append(group_loss)
                    bar.update(task, completed=state["step"], loss=state["epoch_loss_sum"] / state["epoch_rows"])
                    # the last step of an epoch is checkpointed after validation, below
                    if opts.checkpoint_every and state["step"] % opts.checkpoint_every == 0 and g < per_epoch - 1:
                        checkpoint()
                val_loss, val_acc = job.objective.validate(job.graph, job.device, job.amp)
                history["epochs"].append({"epoch": epoch + 1, "step": state["step"],
                                          "train_loss": state["epoch_loss_sum"] / state["epoch_rows"],
                                          "val_loss": val_loss, "val_accuracy": val_acc,
                                          "train_seconds": state["epoch_seconds"]})
                state.update(epoch=epoch + 1, epoch_loss_sum=0.0, epoch_rows=0, epoch_seconds=0.0)
                best = state["best"]
                best_yet, state["since_best"] = patience_step(val_loss, best["val_loss"], state["since_best"])
                if best_yet:
                    best.update(val_loss=val_loss, epoch=epoch + 1, step=state["step"],
                                file=ckpt.write_best(graph, state["step"]))
                state["stopped_early"] = state["since_best"] >= opts.patience
                checkpoint()
        ckpt.load_best(graph, state["best"]["file"])
    graph.eval()
    trained = History(epochs=history["epochs"], step_losses=history["step_losses"], best_epoch=state["best"]["epoch"],
                      best_val_loss=state["best"]["val_loss"], stopped_early=state["stopped_early"],
                      steps_per_epoch=per_epoch)
    return Outcome(history=trained, steps=state["step"], resumed_from_step=resumed_from,
                   seconds=seconds_before + time.perf_counter() - started)
