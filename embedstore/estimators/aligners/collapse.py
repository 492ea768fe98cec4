"""The collapse check every trained aligner runs on its held-out rows, and what it found."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from embedstore.base.retrieval import nn_p_at_1

#: Output variance below this fraction of the target's means the map squeezes everything toward one point.
MIN_VARIANCE_RATIO = 0.05
#: Retrieval P@1 below this fraction of the identity map's means alignment destroyed what identity preserved.
MIN_P1_RATIO = 0.5


class CollapseWarning(UserWarning):
    """An aligner's outputs look collapsed (low spread or retrieval far below identity); its transfer is suspect."""


@dataclass(frozen=True)
class CollapseCheck:
    """The numbers behind a collapse verdict, kept so a fitted aligner can report them, not just a flag."""

    p1: float
    identity_p1: float
    variance_ratio: float
    collapsed: bool
    reason: str


def detect_collapse(aligned: np.ndarray, source: np.ndarray, target: np.ndarray,
                    raw_target: np.ndarray | None = None) -> CollapseCheck:
    """Judge aligned held-out rows against their targets.

    Mean cosine and MSE can look fine for a map that sends everything near the target mean (an undertrained FC
    aligner did exactly that), so this looks at what such a map destroys: spread and pairwise retrieval. P@1 is
    the nearest-neighbour P@1 of `base.retrieval` on every row, the figure `analysis.retrieval_report` prints.
    `raw_target`: the target vectors before the aligner, when `target` went through it too (an aligner applied to
    target text at test time: A(en) is judged against A(tr), and the identity map still against raw tr).
    """
    return judge_collapse(nn_p_at_1(aligned, target),
                          nn_p_at_1(source, target if raw_target is None else raw_target), aligned, target)


def judge_collapse(p1: float, identity_p1: float, aligned: np.ndarray, target: np.ndarray) -> CollapseCheck:
    """`detect_collapse`'s verdict from P@1s already measured: a caller that ran the full retrieval of these rows
    (`analysis.evaluate_alignment`) has both figures, the same numbers `nn_p_at_1` gives, and need not search the
    rows again."""
    target_var = float(target.var(axis=0).sum())
    ratio = float(aligned.var(axis=0).sum()) / target_var if target_var > 0 else float("inf")
    reasons = []
    if ratio < MIN_VARIANCE_RATIO:
        reasons.append(f"output variance is {ratio:.1%} of the target's (< {MIN_VARIANCE_RATIO:.0%})")
    if p1 < MIN_P1_RATIO * identity_p1:
        reasons.append(f"retrieval P@1 {p1:.3f} is far below the identity map's {identity_p1:.3f}")
    return CollapseCheck(p1, identity_p1, ratio, bool(reasons), "; ".join(reasons))
