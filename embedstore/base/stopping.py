"""The one early-stopping rule of every training loop: the vector trainers (`estimators.training`) and the text
trainers (`text_training.loop`) keep the state of the lowest validation loss and stop after `patience` epochs
without an improvement, so an aligner, a head and a fine-tuned encoder stop by the same rule."""
from __future__ import annotations


def patience_step(val_loss: float, best: float | None, since_best: int, min_delta: float = 0.0) -> tuple[bool, int]:
    """(whether `val_loss` is the lowest yet, so its state is the one to keep; epochs since an improvement on `best`
    of at least `min_delta`, scikit-learn's `tol`, which stops a run when it reaches the patience). `best` None: the
    first epoch."""
    if best is None:
        return True, 0
    return val_loss < best, 0 if val_loss < best - min_delta else since_best + 1
