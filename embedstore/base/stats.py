"""Summary statistics over seeds.

Sweeps run each configuration with a handful of seeds (typically 3), so a normal-approximation interval would
be far too narrow; the t-distribution with n - 1 degrees of freedom gives the honest 95% interval.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from scipy import stats as _scipy_stats

#: The standard normal's 97.5th percentile: a 95 % interval of a mean over many test rows (hundreds and more).
Z95 = 1.959963984540054


def mean_ci(values: Iterable[float], confidence: float = 0.95) -> tuple[float, float, int]:
    """Mean, confidence-interval half-width (t-distribution) and count of `values`.

    The half-width is NaN for a single value: one seed says nothing about spread, and a 0 would claim
    certainty. Raises ValueError for no values, non-finite values or a confidence outside (0, 1).

    >>> m, h, n = mean_ci([0.5, 0.6, 0.7]); round(m, 4), round(h, 4), n
    (0.6, 0.2484, 3)
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    xs = np.asarray(list(values), dtype=np.float64)
    n = int(xs.size)
    if n == 0:
        raise ValueError("mean_ci needs at least one value")
    if not np.all(np.isfinite(xs)):
        raise ValueError(f"mean_ci needs finite values, got {xs.tolist()!r}")
    mean = float(xs.mean())
    if n == 1:
        return mean, math.nan, 1
    sem = float(xs.std(ddof=1)) / math.sqrt(n)
    t_crit = float(_scipy_stats.t.ppf((1.0 + confidence) / 2.0, n - 1))
    return mean, t_crit * sem, n


def wilson(p: float, n: int) -> tuple[float, float]:
    """The Wilson 95 % interval of a proportion `p` over `n` rows: the test set's own sampling noise (never empty,
    even at 0 or 1, where the normal approximation's is)."""
    centre = (p + Z95 * Z95 / (2 * n)) / (1 + Z95 * Z95 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95 * Z95 / (4 * n * n)) / (1 + Z95 * Z95 / n)
    return max(0.0, centre - half), min(1.0, centre + half)
