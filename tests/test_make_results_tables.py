"""The results page's frontier and adaptation tables (docs/results_frontier.py, docs/results_adapt.py): a mean
over seeds never reads "± 0.000" — seeds that agree are said to, and a P@1 measured on the same held-out pairs at
every seed gets those pairs' sampling interval, as the sweep report's tables do."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from embedstore.base.stats import wilson

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.fixture(scope="module")
def docs_modules():
    sys.path.insert(0, str(DOCS))
    try:
        import results_adapt
        import results_frontier
        yield results_frontier, results_adapt
    finally:
        sys.path.remove(str(DOCS))


def test_seeds_that_agree_are_said_to_never_shown_as_plus_minus_zero(docs_modules):
    for module in docs_modules:
        assert module._fmt([0.451, 0.451, 0.451]) == "0.451 (same at every seed)"
        assert module._fmt([0.5, 0.6, 0.7]) == "0.600 ± 0.248"  # the seeds' t-interval, as before


def test_a_p_at_1_on_the_same_pairs_at_every_seed_counts_the_pairs_sampling(docs_modules):
    frontier, adapt = docs_modules
    low, high = wilson(0.9, 1000)
    expected = f"0.900 ± {(high - low) / 2:.3f}"
    assert frontier._fmt([0.9, 0.9, 0.9], [1000, 1000, 1000]) == expected
    assert adapt._fmt([0.9, 0.9, 0.9], 1000) == expected
    assert frontier._fmt([0.9, 0.9], [1000, None]) == "0.900"  # a record without its pair count: descriptive only
    assert "± 0.000" not in frontier._fmt([0.91, 0.9101, 0.91], [3000] * 3)
