"""Choosing "the best LangAlign" the honest way: per seed, on a validation split of the training side.

A claim about "LangAlign" reads either the arm a study's config names before the run (`[claims]`) or the arm this
module chooses, never the arm that scored best on the test rows (that choice would ride on the same test noise
the verdict is meant to measure). Here each seed's arm is the one with the highest validation score among the
candidate arms (aligner × pair budget): the score every LangAlign cell records (`experiments.validation_score`:
Cohen's kappa between its head's decisions on held-out translated pairs' English and target sides). Choosing per
seed is what a user does with their one draw of data, so the verdict on the chosen arm
(`verdicts.compare(selected.records, ...)`) counts the choice's own variability too: a different seed may choose
differently.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

SCORE = "kappa"
"""The validation figure an arm is chosen by (`metrics.validation.kappa`)."""


@dataclass(frozen=True)
class Selection:
    """Per seed, the candidate arm with the highest validation score: its records (one per seed, for
    `verdicts.compare`), which arm each seed chose, and the candidates left out of the choice."""

    records: tuple[dict[str, Any], ...]
    chosen: dict[int, str]
    candidates: tuple[str, ...]
    left_out: tuple[str, ...] = field(default=())

    def describe(self) -> str:
        """e.g. "chosen per seed among fc 500, fc 1k, procrustes 1k: fc 1k × 7, procrustes 1k × 3"."""
        counts = Counter(self.chosen.values())
        chosen = ", ".join(f"{arm} × {n}" for arm, n in sorted(counts.items(), key=lambda x: (-x[1], x[0])))
        out = f"chosen per seed by validation {SCORE} among {', '.join(self.candidates)}: {chosen}"
        return out + (f" ({'; '.join(self.left_out)})" if self.left_out else "")


def validation(record: dict[str, Any]) -> float | None:
    """A record's validation score, or None (a record written before it was kept, or a task without held-out
    translated pairs)."""
    found = record.get("metrics", {}).get("validation")
    return None if not found else found.get(SCORE)


def select_by_validation(arms: dict[str, Sequence[dict[str, Any]]], seeds: Sequence[int]) -> Selection | None:
    """For each of `seeds`, the record of the arm (label → its records, one per seed) with the highest
    validation score; ties go to the arm listed first. Candidates are the arms with a score at every one of
    `seeds` (the others are named in `left_out`, so the choice is always among the same arms); None when no arm
    has one at all."""
    scored = {label: {r["cell"]["seed"]: r for r in records if validation(r) is not None}
              for label, records in arms.items()}
    candidates = [label for label, by_seed in scored.items() if seeds and all(s in by_seed for s in seeds)]
    left_out = tuple(f"{label}: validation scores at {len(scored[label])} of the {len(seeds)} seeds, left out"
                     for label in arms if label not in candidates)
    if not candidates:
        return None
    chosen = {seed: max(candidates, key=lambda label: (validation(scored[label][seed]), -candidates.index(label)))
              for seed in seeds}
    return Selection(tuple(scored[chosen[seed]][seed] for seed in seeds), chosen, tuple(candidates), left_out)
