"""One early-stopping rule for the vector and the text trainers (issue 30.7: two loops had two rules)."""
from __future__ import annotations

from embedstore.base.stopping import patience_step


def test_the_lowest_loss_is_kept_and_patience_counts_epochs_without_a_real_improvement():
    assert patience_step(1.0, None, 5) == (True, 0)
    assert patience_step(0.9, 1.0, 3) == (True, 0)
    assert patience_step(0.99995, 1.0, 3, min_delta=1e-4) == (True, 4)  # the lowest yet, kept; no real improvement
    assert patience_step(1.1, 1.0, 3) == (False, 4)
    assert patience_step(float("nan"), 1.0, 0) == (False, 1)

