"""A cell's context: what shapes its result but is not part of the cell.

The cell names a model, a task, a recipe; what those names stand for can change under them: the weights in a
model directory, the task's data files, what a recipe name means in a new release, the `[e2e]` training
options. The context id hashes all of it, so a re-run after such a change runs the affected cells again
instead of keeping stale results. The sweep engine only compares ids; this module decides what goes in.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from embedstore.estimators.aligners import is_trained
from embedstore.estimators.heads import head_class
from embedstore.estimators.training import autocast_dtype, precision_name, resolve_recipe
from embedstore.study.cells import Cell, SweepConfig
from embedstore.study.methods import TABLE


def context_id(config: SweepConfig, cell: Cell, fingerprint: str) -> str:
    """A hash of the model (name and weights' fingerprint), the task's table, the encoding options that differ
    from the defaults, the cell's `[heads.<kind>]` parameters where its head is fitted on vectors, and, for end-to-end
    cells, the `[e2e]` training options; for trained aligners (FC, AE),
    the recipe's settings; and the arithmetic each part the cell trains in torch runs in (`training_precisions`)."""
    payload: dict[str, Any] = {"model": config.model, "fingerprint": fingerprint, "task": config.tasks.get(cell.task)}
    if config.encoding_changes:  # vectors of another key: earlier results do not hold
        payload["encoding"] = config.encoding_changes
    table = TABLE[cell.method].options  # `[e2e]` or `[adapt]`: its options shape the method's result
    if table is not None and getattr(config, table):
        payload[table] = getattr(config, table)
    # the head's own settings; absent when defaults, so old ids hold; and absent for a head trained with the encoder
    # (langalign-e2e, lora-ta: `[e2e]` sets it), which a changed [heads.<kind>] table must not send to re-train
    if config.head_params.get(cell.head) and not TABLE[cell.method].text_head:
        payload["head_params"] = config.head_params[cell.head]
    if cell.aligner is not None and is_trained(cell.aligner):
        payload["aligner_recipe"] = asdict(resolve_recipe(cell.recipe, "aligner"))
    if precisions := training_precisions(config, cell):
        payload["precision"] = precisions
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def training_precisions(config: SweepConfig, cell: Cell) -> dict[str, str]:
    """What each part of the cell that torch trains computes in (fp32, or bf16/fp16 where the config asks), as
    this machine resolves it: part of the cell's identity and of its record, since fits in fp32 and in bf16 differ
    and a result must not depend on which CPU it ran on. Empty for a cell that trains nothing in torch."""
    from embedstore.encoding.models import resolve_device
    from embedstore.text_training.options import TrainOptions
    from embedstore.text_training.precision import amp_dtype

    cpu = "cpu"  # aligners and heads train where a sweep's cells run: on the CPU
    out: dict[str, str] = {}
    if cell.aligner is not None and is_trained(cell.aligner):
        out["aligner"] = precision_name(autocast_dtype(resolve_recipe(cell.recipe, "aligner").precision, cpu))
    if head_class(cell.head).uses_recipe:
        out["head"] = precision_name(autocast_dtype(resolve_recipe(cell.recipe, "head").precision, cpu))
    table = TABLE[cell.method].options  # `[e2e]` or `[adapt]`: the method trains on text
    if table is not None:
        text, defaults = getattr(config, table), TrainOptions()
        device = resolve_device(text.get("device", defaults.device))
        out["text"] = precision_name(amp_dtype(text.get("precision", defaults.precision), device))
    return out


@dataclass(frozen=True)
class StudyContext:
    """The sweep engine's context function for one study: the fingerprint of the model as the driver resolved it
    (once, for the encode, the context ids and every cell: `run.run_study`), not one per cell."""

    config: SweepConfig
    fingerprint: str

    def __call__(self, cell: Cell) -> str:
        return context_id(self.config, cell, self.fingerprint)
