"""The verdict rule of the timing benchmarks: a target is judged on ratios measured in the same round, never on raw
repeats. The one home of that rule (`benchmarks/encode.py` and `benchmarks/store.py` use it).

Why: every target of those benchmarks is a ratio of two timings of one run (a path against the bare pass, the
store against its anchor). On the quiet machine of 2026-12-06 the whole machine drifted between rounds (every
path's raw repeats spread 10-22 % with 0.01 cores taken by others and nothing stolen) while, within each round,
auto against the faster bare pass measured 1.062x, 1.057x and 1.101x: a drift shared by everything in a round
cancels in that round's ratio. So a target's figure is the median of its per-round ratios, and the spread that
can make it "noisy" is the spread of those ratios, not of the raw seconds (still printed, as what the machine
did).

A spread above `NOISY_SPREAD` withholds the verdict only when the rounds disagree about it: if every round's
ratio falls on the same side of the target, no choice of round could have changed PASS into FAIL, so the spread
decides nothing.
"""
from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

NOISY_SPREAD = 0.10
"""Largest spread ((max - min) / median) of a target's per-round ratios that still gives a verdict when the rounds
disagree about it."""


def spread(values: Sequence[float]) -> float | None:
    """(max - min) / median of `values`; None for fewer than two (nothing to compare)."""
    if len(values) < 2:
        return None
    return (max(values) - min(values)) / statistics.median(values)


def paired_ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Round r's numerator over round r's denominator, for each round: both measured in the same round."""
    if len(numerators) != len(denominators):
        raise ValueError(f"paired ratios need one value of each side per round; got {len(numerators)} and "
                         f"{len(denominators)}")
    return [n / d for n, d in zip(numerators, denominators)]


def miss(value: float, target: float, at_least: bool = True) -> float:
    """How far `value` misses `target`, as a fraction of the target (0 when it meets it): a FAIL's "by how much",
    so a reader sees whether a target was missed by 2 % or by half without redoing the arithmetic."""
    short = (target - value) if at_least else (value - target)
    return max(short, 0.0) / target


def missed_by(value: float, target: float, at_least: bool = True) -> str | None:
    """The miss in words ("3.6% short" of a floor, "22.8% over" a ceiling); None when `value` meets `target`."""
    missed = miss(value, target, at_least)
    return f"{100 * missed:.1f}% {'short' if at_least else 'over'}" if missed else None


def outcome(value: float, target: float, at_least: bool = True) -> str:
    """"PASS", or "FAIL" with the miss ("FAIL, 3.6% short")."""
    missed = missed_by(value, target, at_least)
    return "PASS" if missed is None else f"FAIL, {missed}"


@dataclass(frozen=True)
class RatioVerdict:
    """A ratio target judged over its rounds: `passed` is the median's verdict; `noisy` says it is withheld."""

    ratios: tuple[float, ...]
    target: float
    at_least: bool
    median: float
    spread: float | None
    every_round_agrees: bool
    noisy: bool
    passed: bool

    def outcome(self) -> str:
        """The median's verdict as `outcome` words it (the noisy case is the caller's: it knows why)."""
        return outcome(self.median, self.target, self.at_least)

    def rounds_text(self, fmt: str = "{:.3f}") -> str:
        """The per-round ratios and their spread, for a report line."""
        shown = ", ".join(fmt.format(r) for r in self.ratios)
        return f"rounds {shown}" + ("" if self.spread is None else f", spread {100 * self.spread:.0f}%")


def judge_ratio(ratios: Sequence[float], target: float, at_least: bool = True,
                noisy_spread: float = NOISY_SPREAD) -> RatioVerdict:
    """The verdict of `ratios` (one per round) against `target` (`at_least`: the ratio must reach it; otherwise it
    must not exceed it): PASS or FAIL by their median; noisy when they spread by more than `noisy_spread` and the
    rounds do not all fall on the same side of the target."""
    if not ratios:
        raise ValueError("a ratio target needs at least one round")
    ok = [r >= target if at_least else r <= target for r in ratios]
    median = statistics.median(ratios)
    s = spread(ratios)
    agrees = all(ok) or not any(ok)
    return RatioVerdict(ratios=tuple(ratios), target=target, at_least=at_least, median=median, spread=s,
                        every_round_agrees=agrees, noisy=s is not None and s > noisy_spread and not agrees,
                        passed=miss(median, target, at_least) == 0)
