"""The one shape of a training history, for the vector trainers (aligners and heads, `estimators.training`) and
the text trainers (tune, finetune, adapt, lora-ta, `text_training.loop`).

Why one shape: a history is read by code that does not care which loop wrote it (fit reports, a sweep record's
training summary, an adapted encoder's before/after scores, the docs), and two shapes meant two sets of keys to
know (`seconds` in one, `steps_per_epoch` in the other). Each loop fills what it measures; a field it does not
measure keeps its empty default, so every history has every key. Older records, written in either loop's earlier
shape, read through `read_history`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from embedstore.base.errors import ConfigError


@dataclass
class History:
    """What happened during one training run (JSON-ready through `to_dict`).

    `epochs`: one entry per validated epoch, in order, each with `epoch` (1 after the first epoch; 0 the untrained
    model, where the loop measures it: the text loop does, as the baseline a falling loss is judged from),
    `train_loss` (None for epoch 0) and `val_loss`, then what the loop measures besides (the text loop: `step`,
    `val_accuracy`, `train_seconds`). `best_epoch`/`best_val_loss`: the epoch whose state was kept, by the one
    early-stopping rule (`stopping.patience_step`; None before any epoch). `stopped_early`: patience ended the run
    before its epoch cap. `steps_per_epoch`: optimizer steps per epoch (None in records written before it was kept).
    `step_losses`: the loss of every optimizer step, where the loop keeps them (the text loop).

    `seconds` (wall seconds of the training), `precision` (what the steps ran in, "auto" resolved), `recipe` (the
    settings trained with) and `fit_revision` (`estimators.training.FIT_REVISION`; None before it was kept): where
    the history is the run's only record of them (a saved aligner's or head's config). A text run's record keeps
    them once, elsewhere (its provenance's `wall_time_s` and `precision`, its identity's options), so its history
    leaves them None rather than holding a second copy.
    """

    epochs: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float | None = None
    stopped_early: bool = False
    seconds: float | None = None
    steps_per_epoch: int | None = None
    step_losses: list[float] = field(default_factory=list)
    precision: str | None = None
    recipe: dict[str, Any] | None = None
    fit_revision: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_FIELDS = tuple(f.name for f in fields(History))


def read_history(record: Any, where: str = "history") -> dict[str, Any]:
    """A history record in the one shape (`History.to_dict`), whichever loop and version wrote it: the vector
    loop's earlier records lack `steps_per_epoch` and `step_losses`, the text loop's `seconds`, `precision` and
    `recipe`; those read as their empty defaults. A key no version wrote is refused, naming it."""
    if not isinstance(record, dict):
        raise ConfigError(f"{where}: {str(record)[:40]}; expected a JSON object (a training history)")
    unknown = sorted(set(record) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"{where}: unknown field {unknown[0]!r}; expected some of {', '.join(_FIELDS)}")
    return History(**record).to_dict()
