"""The one verdict rule: is method A better than method B, on these records, beyond the noise?

Every claim the package or its docs make ("LangAlign beats English-only", "resmlp beats FC at 500 pairs") goes
through `compare`, which returns the paired difference of the two methods over the same draws with a 95 %
interval, and one of three verdicts: "A clearly better" or "B clearly better" when the interval excludes 0,
"within noise" otherwise. It refuses (with the reason) a comparison that cannot be read: arms at different
budgets, arms scored on different test rows or trained on different draws, or an arm whose head is degenerate.

Why this estimator. A claim is about two methods on the population the test rows stand for, trained on draws
like the seeds' draws, so two kinds of noise count: the training draw (the seed: which task rows and pairs, the
initialisation) and the test sample (which rows happen to be in the test set). A t-interval over seeds counts
the first only; every seed is scored on the same test rows, so a deterministic cell (all rows used, a closed-form
fit) gets ±0.000, as if another test set could not have given another answer. Here each of `REPLICATES`
bootstrap replicates

- draws the test rows with replacement, once for all seeds scored on the same rows (drawing per seed would treat
  one test set as several independent ones and shrink the interval by up to √seeds),
- draws the seeds with replacement, their spread widened by √(S/(S−1)) about the replicate's mean (a bootstrap
  over S values underestimates their variance by the factor (S−1)/S, which matters at 3 seeds),
- and averages the per-row, per-seed difference of A and B (paired: rows both find hard cancel out, which is
  what makes small differences decidable on a few thousand rows).

The 2.5th and 97.5th percentiles of the replicates are the interval. The generator is seeded, so the same
records give the same figures every time (the docs' `--check` relies on it). One seed and deterministic cells
reduce it to a paired bootstrap over test rows; it is never ±0 unless the two arms predict every row alike.

A claim is also re-decided with every head refitted at C one decade either side of its own (`across_C`: each
cell keeps those refits' per-row predictions); a claim whose verdict changes there rests on the choice of C,
not only on the method (`c_sensitivity` says where).

Records written before per-row predictions were kept get an `APPROXIMATE` interval instead: the seeds' t-interval
combined with the test-set noise of the two accuracies as if their errors were independent (two methods' errors
on the same rows are usually positively correlated, which makes this wider than the paired interval, not
narrower); other metrics get the seeds' interval alone (`SEEDS_ONLY`), and with one seed none at all (refused).
"""
from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

from embedstore.study.predictions import RowPredictions

CLEARLY_A = "A clearly better"
CLEARLY_B = "B clearly better"
WITHIN_NOISE = "within noise"
REFUSED = "refused"

PAIRED = "paired bootstrap over test rows and seeds"
APPROXIMATE = "approximate (no per-row predictions: seeds' interval plus unpaired test-set noise)"
SEEDS_ONLY = "seeds only (no per-row predictions: test-set noise not counted)"

REPLICATES = 4000
_RNG_SEED = 26
_Z95 = 1.959963984540054
C_NEIGHBOURS = ("C/10", "C*10")
"""The refits of a cell's head kept beside the one it used (`study.experiments.regularisation_neighbours`)."""
DEGENERATE_SHARE = 0.95
"""A head that predicts one class for at least this share of the test rows is degenerate."""

RowSource = Callable[[dict[str, Any]], RowPredictions | None]
"""A record → its per-row predictions, or None (`study.predictions.PredictionReader` is one)."""


@dataclass(frozen=True)
class Comparison:
    """The paired comparison of arm A with arm B: figures, verdict, and why it was refused if it was."""

    a: str
    b: str
    metric: str
    verdict: str
    mean_a: float = math.nan
    mean_b: float = math.nan
    diff: float = math.nan
    low: float = math.nan
    high: float = math.nan
    n_test_rows: int = 0
    interval: str = ""
    refused: str | None = None
    notes: tuple[str, ...] = field(default=())
    #: The two arms predicted the same class for every test row at every seed: no difference to put an interval
    #: on (a bootstrap of identical rows gives [+0.000, +0.000], which reads like a measured certainty).
    identical: bool = False
    #: The seeds both arms have, which the figures pair over: arms run at different seed counts (a study extended
    #: to more seeds for some methods only) are compared on these alone.
    seeds: tuple[int, ...] = ()

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    @property
    def winner(self) -> str | None:
        """The label of the clearly better arm, or None (within noise, or refused)."""
        return {CLEARLY_A: self.a, CLEARLY_B: self.b}.get(self.verdict)

    @property
    def statement(self) -> str:
        """The verdict with the arms' names: "resmlp clearly better", "within noise", "refused: ..."."""
        if self.refused:
            return f"refused: {self.refused}"
        return f"{self.winner} clearly better" if self.winner else WITHIN_NOISE

    @property
    def seed_list(self) -> str:
        """The paired seeds (`seed_list`), e.g. "0-9"."""
        return seed_list(self.seeds)

    def describe(self, decimals: int = 3) -> str:
        """e.g. "0.583 vs 0.476, Δ +0.107 [+0.071, +0.142] (3 seeds × 2,862 test rows)"; intervals that are not
        the paired bootstrap's are marked (approximate) or (seeds only)."""
        if self.refused:
            return f"refused: {self.refused}"
        d = decimals
        mark = {PAIRED: "", APPROXIMATE: "; approximate", SEEDS_ONLY: "; seeds only"}[self.interval]
        seeds = f"{self.n_seeds} seed{'s' if self.n_seeds != 1 else ''}"
        rows = f" × {self.n_test_rows:,} test rows" if self.n_test_rows else ""
        if self.identical:
            return f"{self.mean_a:.{d}f} vs {self.mean_b:.{d}f}, the same prediction on every test row ({seeds}{rows})"
        return (f"{self.mean_a:.{d}f} vs {self.mean_b:.{d}f}, Δ {self.diff:+.{d}f} [{self.low:+.{d}f}, "
                f"{self.high:+.{d}f}] ({seeds}{rows}{mark})")


def seed_list(seeds: Sequence[int]) -> str:
    """Seeds as a reader checks them against a config's `seeds`: "0-9", "0, 1, 3-5, 9", "3" (a run of three or
    more as a range)."""
    runs: list[list[int]] = []
    for seed in sorted(seeds):
        if runs and seed == runs[-1][-1] + 1:
            runs[-1].append(seed)
        else:
            runs.append([seed])
    return ", ".join(f"{run[0]}-{run[-1]}" if len(run) > 2 else ", ".join(map(str, run)) for run in runs)


def compare(
    a: Sequence[dict[str, Any]],
    b: Sequence[dict[str, Any]],
    *,
    rows: RowSource | None = None,
    metric: str = "accuracy",
    labels: tuple[str, str] = ("A", "B"),
    allow_mismatched_budgets: bool = False,
) -> Comparison:
    """Compare arm `a` with arm `b`: each a method's "ok" cell records, one per seed, paired by seed.

    `rows` loads a record's per-row predictions (without it, or for records that lack them, the interval is
    approximate). Refused, with the reason: no seed in common, a degenerate head in either arm, different test
    rows or training draws at a seed, or different budgets (task rows; pairs, where both arms use pairs) unless
    `allow_mismatched_budgets`, which then computes the figures and names the mismatch in `notes`. Seeds only
    one arm has are left out and named in `notes`; so is unpaired text that one arm fits on and the other not.
    """
    by_seed = [_by_seed(records, label) for records, label in zip((a, b), labels)]
    seeds = sorted(set(by_seed[0]) & set(by_seed[1]))
    notes: list[str] = []
    for mine, other, label in ((by_seed[0], by_seed[1], labels[0]), (by_seed[1], by_seed[0], labels[1])):
        if set(mine) - set(other):
            notes.append(f"seeds {sorted(set(mine) - set(other))} only in {label}: left out")

    def refuse(reason: str) -> Comparison:
        return Comparison(labels[0], labels[1], metric, REFUSED, refused=reason, notes=tuple(notes),
                          seeds=tuple(seeds))

    if not seeds:
        return refuse("no seed in common")
    pairs = [(by_seed[0][s], by_seed[1][s]) for s in seeds]
    for seed, pair in zip(seeds, pairs):
        for record, label in zip(pair, labels):
            reason = degenerate(record)
            if reason:
                return refuse(f"degenerate head: {label} at seed {seed} {reason}")
            if metric not in record.get("metrics", {}):
                return refuse(f"{label} at seed {seed} has no {metric!r}")
        reason = _draws_differ(*pair, labels)
        if reason:
            return refuse(f"mismatched draws at seed {seed}: {reason}")
    mismatch = _budget_mismatch(pairs[0], labels)
    if mismatch:
        if not allow_mismatched_budgets:
            return refuse(f"mismatched budgets: {mismatch}")
        notes.append(f"mismatched budgets: {mismatch}")
    notes += _unpaired_text(pairs[0], labels)
    if any(_draw(ra, "pairs") and _draw(rb, "pairs") and _draw(ra, "pairs") != _draw(rb, "pairs") for ra, rb in pairs):
        notes.append(f"{labels[0]} and {labels[1]} drew different translation pairs at the same seed")
    if not any(_draw(r, "train") for pair in pairs for r in pair):
        notes.append("training draws not recorded (older records): the same seed is taken to draw the same rows")

    scores = np.array([[float(r["metrics"][metric]) for r in pair] for pair in pairs])
    mean_a, mean_b = (float(x) for x in scores.mean(axis=0))
    loaded = [(rows(ra), rows(rb)) for ra, rb in pairs] if rows is not None else []
    if loaded and all(x is not None and y is not None for x, y in loaded):
        reason = _rows_differ(loaded, labels)
        if reason:
            return refuse(reason)
        interval, n_rows = PAIRED, len(loaded[0][0].truth)
        identical = all(np.array_equal(np.array(x.labels)[x.predicted], np.array(y.labels)[y.predicted])
                        for x, y in loaded)
        low, high = (0.0, 0.0) if identical else _paired_interval(loaded, metric)  # nothing to resample
    else:
        n_rows = _n_test(pairs)
        if not n_rows:
            return refuse(f"{labels[0]} and {labels[1]} were scored on different numbers of test rows"
                          if n_rows is None else "the records do not say how many test rows they were scored on")
        found = _approximate_interval(scores, metric, n_rows)
        if found is None:
            return refuse(f"one seed and no per-row predictions: no interval for {metric}")
        low, high, interval = found
        identical = False
    diff = mean_a - mean_b
    verdict = CLEARLY_A if low > 0 else CLEARLY_B if high < 0 else WITHIN_NOISE
    return Comparison(labels[0], labels[1], metric, verdict, mean_a, mean_b, diff, low, high, n_rows, interval,
                      notes=tuple(notes), identical=identical, seeds=tuple(seeds))


def across_C(
    a: Sequence[dict[str, Any]],
    b: Sequence[dict[str, Any]],
    *,
    rows: RowSource,
    metric: str = "accuracy",
    labels: tuple[str, str] = ("A", "B"),
    allow_mismatched_budgets: bool = False,
) -> dict[str, Comparison]:
    """`compare` of the same two arms with every head refitted at C/10 and at C×10 (same rows, same draws).

    Each is decided only on the refits' per-row predictions, so its interval is the paired one, like the claim's
    at the chosen C: an approximate (wider) interval there would turn "clearly" into "within noise" by
    arithmetic alone. Refused, with the reason, where a record kept no refit at that C (a head without a C,
    or a record older than the refits' predictions) or the refit's head is degenerate."""
    without = next((label for arm, label in zip((a, b), labels) for r in arm if not takes_C(r)), None)
    if without:
        return {name: Comparison(labels[0], labels[1], metric, REFUSED,
                                 refused=f"{NO_C}: {without}'s head has none (a torch or scikit-learn head, or one "
                                         "trained with the encoder)") for name in C_NEIGHBOURS}
    out = {}
    for name in C_NEIGHBOURS:
        moved = [[_at_C(r, name) for r in arm] for arm in (a, b)]
        def reader(record: dict[str, Any], name: str = name) -> RowPredictions | None:
            found = rows(record)
            return found.at(name) if found is not None else None

        missing = next((label for arm, label in zip(moved, labels) for r in arm
                        if r is None or reader(r) is None), None)
        if missing:
            out[name] = Comparison(labels[0], labels[1], metric, REFUSED,
                                   refused=f"{missing} kept no per-row predictions of its head at {name}")
            continue
        out[name] = compare(*moved, rows=reader, metric=metric, labels=labels,
                            allow_mismatched_budgets=allow_mismatched_budgets)
    return out


NO_C = "no C applies"
"""How `across_C` refuses a comparison whose heads were fitted at no C: nothing to re-decide, unlike a record
that merely kept no refits (an older record), which is "not checked"."""


def takes_C(record: dict[str, Any]) -> bool:
    """Whether the record's head was fitted at a C of its own, as `study.experiments.regularisation_neighbours`
    refits it (the head's parameters name one): the logistic head on cached vectors; not the torch heads, a
    scikit-learn classifier's own parameters, or a head trained with the encoder (langalign-e2e, lora-ta). Read
    from the cell's head kind and method, which every record names (older records say nothing of their C)."""
    from embedstore.base.errors import EmbedstoreError
    from embedstore.estimators.heads import head_class
    from embedstore.study.methods import TEXT_HEAD_METHODS

    cell = record.get("cell", {})
    if cell.get("method") in TEXT_HEAD_METHODS:
        return False
    try:
        return "C" in head_class(cell.get("head", "logistic"))._get_param_names()
    except EmbedstoreError:  # a kind this version does not know: it may have had a C ("not checked")
        return True


def c_sensitivity(claim: Comparison, around: dict[str, Comparison]) -> str | None:
    """Where a claim's verdict changes at a neighbouring C: "at C/10 within noise, Δ +0.004 [-0.010, +0.018]"
    (None: the same verdict at every C it could be decided at). A refusal there is not a change of verdict."""
    if claim.refused:
        return None
    changed = [f"at {name} {c.statement}, Δ {c.diff:+.3f} [{c.low:+.3f}, {c.high:+.3f}]"
               for name, c in around.items() if not c.refused and c.verdict != claim.verdict]
    return "; ".join(changed) or None


def c_check(claim: Comparison, around: dict[str, Comparison]) -> tuple[str, str | None]:
    """How a decided claim fared at C one decade either side (`across_C`), as the pages count it: "no C" (its heads
    were fitted at none), "unchecked" (no refit to decide on), "sensitive" with where it flips (`c_sensitivity`),
    or "alike"."""
    if any(c.refused.startswith(NO_C) for c in around.values() if c.refused):
        return "no C", None
    if all(c.refused for c in around.values()):
        return "unchecked", None
    flip = c_sensitivity(claim, around)
    return ("sensitive", flip) if flip else ("alike", None)


def _at_C(record: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The record as its head refitted at C `name` scored (metrics and degeneracy), or None if none was kept."""
    refit = record.get("metrics", {}).get("head_regularisation", {}).get(name)
    if not isinstance(refit, dict) or "degenerate" not in refit:
        return None
    metrics = {key: value for key, value in record["metrics"].items() if key != "confusion"}
    return {**record, "metrics": {**metrics, **{k: refit[k] for k in ("accuracy", "macro_f1", "degenerate")}}}


def select(records: Sequence[dict[str, Any]], **cell: Any) -> list[dict[str, Any]]:
    """The "ok" cell records whose cell has these values (e.g. method="langalign", aligner="fc"): an arm."""
    return [r for r in records if r.get("kind", "cell") == "cell" and r.get("status") == "ok"
            and all(r["cell"].get(key) == value for key, value in cell.items())]


def degenerate(record: dict[str, Any]) -> str | None:
    """Why a cell's head is degenerate ("predicts 'x' for 98% of test rows", "accuracy 0.33 is within noise of
    the majority class's 0.32"), or None. A degenerate head says nothing about the vectors it was fitted on, so
    its cells are left out of verdicts. Read from the record's `metrics.degenerate` when the cell recorded it,
    else worked out from its confusion matrix (the same function computed it at run time)."""
    metrics = record.get("metrics", {})
    if "degenerate" in metrics:
        return metrics["degenerate"]
    return degeneracy(metrics)


def degeneracy(metrics: dict[str, Any]) -> str | None:
    """`degenerate`'s test on one cell's classification metrics (`base.metrics.classification_metrics`)."""
    confusion = metrics.get("confusion")
    if not confusion:
        return None
    counts = np.asarray(confusion, dtype=np.int64)
    n = int(counts.sum())
    if n == 0:
        return None
    predicted, truth = counts.sum(axis=0), counts.sum(axis=1)
    top = int(predicted.argmax())
    share = predicted[top] / n
    label = str(metrics.get("labels", [str(i) for i in range(len(counts))])[top])  # numpy labels print as np.str_(...)
    if share >= DEGENERATE_SHARE:
        return f"predicts {label!r} for {share:.0%} of test rows"
    majority = truth.max() / n
    accuracy = np.trace(counts) / n
    noise = _Z95 * math.sqrt(majority * (1 - majority) / n)
    if accuracy <= majority + noise:
        return (f"has accuracy {accuracy:.3f}, within noise of always answering the majority class "
                f"({majority:.3f} ± {noise:.3f})")
    return None


def _by_seed(records: Sequence[dict[str, Any]], label: str) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for record in records:
        if record.get("status", "ok") != "ok":
            continue
        seed = record["cell"]["seed"]
        if seed in out:
            raise ValueError(f"arm {label} has two records for seed {seed} ({out[seed]['cell']} and "
                             f"{record['cell']}): an arm is one method's cells, one per seed")
        out[seed] = record
    return out


def _sizes(record: dict[str, Any]) -> dict[str, Any]:
    return record.get("provenance", {}).get("sizes", {})


def _draw(record: dict[str, Any], name: str) -> str | None:
    """A recorded draw digest: "test" (the test rows, in order), "train" (the training rows a seed picked) or
    "pairs" (the aligner's pairs)."""
    if name == "test" and record.get("predictions"):
        return record["predictions"]["test_ids"]
    return record.get("provenance", {}).get("draws", {}).get(name)


def _draws_differ(a: dict[str, Any], b: dict[str, Any], labels: tuple[str, str]) -> str | None:
    for name, what in (("test", "test rows"), ("train", "training rows")):
        da, db = _draw(a, name), _draw(b, name)
        if da and db and da != db:
            return f"{labels[0]} and {labels[1]} were given different {what}"
    return None


def _budget_mismatch(pair: tuple[dict[str, Any], dict[str, Any]], labels: tuple[str, str]) -> str | None:
    """Different task rows, or different pair counts where both arms use pairs. An arm without pairs against
    one with pairs is the question "do pairs help" and is allowed; its budget shows in the arms' names."""
    (sa, sb), (la, lb) = (_sizes(pair[0]), _sizes(pair[1])), labels
    if sa.get("n_train") != sb.get("n_train"):
        return f"{la} trains on {sa.get('n_train')} task rows, {lb} on {sb.get('n_train')}"
    pa, pb = sa.get("n_pairs") or 0, sb.get("n_pairs") or 0
    if pa and pb and pa != pb:
        return f"{la} has {pa:,} translation pairs, {lb} {pb:,}"
    return None


def _unpaired_text(pair: tuple[dict[str, Any], dict[str, Any]], labels: tuple[str, str]) -> list[str]:
    """Texts an aligner fitted on beyond its true pairs (self-learning's unpaired rows): named, as a budget."""
    extra = []
    for record, label in zip(pair, labels):
        sizes = _sizes(record)
        n = sizes.get("n_pairs") or 0
        unpaired = max(0, (sizes.get("n_source_texts") or n) - n) + max(0, (sizes.get("n_target_texts") or n) - n)
        if unpaired:
            extra.append(f"{label} also fits on {unpaired:,} unpaired texts")
    return extra


def _n_test(pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> int | None:
    """The test rows every record was scored on (0 when none says; None when they differ)."""
    counts = {r.get("metrics", {}).get("n") or _sizes(r).get("n_test") or 0 for pair in pairs for r in pair}
    return counts.pop() if len(counts) == 1 else None


def _rows_differ(loaded: list[tuple[RowPredictions, RowPredictions]], labels: tuple[str, str]) -> str | None:
    for ra, rb in loaded:
        if ra.test_ids != rb.test_ids or len(ra.truth) != len(rb.truth):
            return f"mismatched draws: {labels[0]} and {labels[1]} were scored on different test rows"
        if not np.array_equal(np.asarray(ra.labels)[ra.truth], np.asarray(rb.labels)[rb.truth]):
            return f"mismatched draws: {labels[0]} and {labels[1]} have different true labels for the same rows"
    return None


#: Paired intervals already computed in this process, by the content they were computed from. A results page and
#: its README headlines decide the same comparison many times (each table's verdicts, the claims, the closing note,
#: the C checks); the bootstrap is deterministic (a fixed seed), so the same rows give the same interval.
_INTERVALS: dict[bytes, tuple[float, float]] = {}


def _paired_interval(loaded: list[tuple[RowPredictions, RowPredictions]], metric: str) -> tuple[float, float]:
    """The percentile interval of the two-level paired bootstrap described in the module docstring."""
    key = _content_key(loaded, metric)
    if key not in _INTERVALS:
        _INTERVALS[key] = _bootstrap_interval(loaded, metric)
    return _INTERVALS[key]


def _content_key(loaded: list[tuple[RowPredictions, RowPredictions]], metric: str) -> bytes:
    digest = hashlib.blake2b(f"{metric}/{REPLICATES}/{_RNG_SEED}".encode(), digest_size=20)
    for ra, rb in loaded:
        for part in (ra.test_ids, "\x1f".join(ra.labels), "\x1f".join(rb.labels)):
            digest.update(part.encode() + b"\x1e")
        for array in (ra.truth, ra.predicted, rb.truth, rb.predicted):
            digest.update(len(array).to_bytes(8, "little") + np.ascontiguousarray(array, np.int32).tobytes())
    return digest.digest()


def _bootstrap_interval(loaded: list[tuple[RowPredictions, RowPredictions]], metric: str) -> tuple[float, float]:
    n_seeds = len(loaded)
    groups: dict[str, list[int]] = {}
    for s, (ra, _) in enumerate(loaded):
        groups.setdefault(ra.test_ids, []).append(s)
    sizes = tuple(len(loaded[seeds[0]][0].truth) for seeds in groups.values())
    *row_draws, seed_draw = _draws((*sizes, n_seeds), REPLICATES, _RNG_SEED)
    per_seed = np.empty((REPLICATES, n_seeds))
    for seeds, n, counts in zip(groups.values(), sizes, row_draws):
        weights = counts / n
        for s in seeds:
            per_seed[:, s] = _replicate_scores(*loaded[s], weights, metric)
    if n_seeds > 1:
        centre = per_seed.mean(axis=1, keepdims=True)
        per_seed = centre + (per_seed - centre) * math.sqrt(n_seeds / (n_seeds - 1))
    picks = seed_draw / n_seeds
    replicates = (picks * per_seed).sum(axis=1)
    low, high = np.quantile(replicates, [0.025, 0.975])
    return float(low), float(high)


@functools.lru_cache(maxsize=2)
def _draws(sizes: tuple[int, ...], replicates: int, seed: int) -> tuple[np.ndarray, ...]:
    """The bootstrap's draws, in order, for groups of these sizes: the generator starts from the fixed seed for every
    comparison, so comparisons of the same shape (one study's arms) draw the same rows, and are drawn once.
    `replicates` and `seed` are the module's (arguments so that the cache follows them)."""
    rng = np.random.default_rng(seed)
    draws = tuple(_draw_counts(rng, n) for n in sizes)
    for counts in draws:
        counts.flags.writeable = False
    return draws


def _draw_counts(rng: np.random.Generator, n: int) -> np.ndarray:
    """(REPLICATES, n): how often each of n items is drawn in each replicate's draw of n with replacement."""
    picks = rng.integers(0, n, size=(REPLICATES, n)) + (np.arange(REPLICATES) * n)[:, None]
    return np.bincount(picks.ravel(), minlength=REPLICATES * n).reshape(REPLICATES, n).astype(np.float64)


def _replicate_scores(a: RowPredictions, b: RowPredictions, weights: np.ndarray, metric: str) -> np.ndarray:
    """metric(A) − metric(B) under each replicate's row weights (rows × times drawn / rows)."""
    if metric == "accuracy":
        return weights @ (a.correct.astype(np.float64) - b.correct.astype(np.float64))
    if metric == "macro_f1":
        return np.array([_macro_f1(a, w) - _macro_f1(b, w) for w in weights])
    raise ValueError(f"no per-row interval for metric {metric!r}; per-row metrics: accuracy, macro_f1")


def _macro_f1(rows: RowPredictions, weights: np.ndarray) -> float:
    """Macro-F1 over the classes present in the (weighted) truth, as `base.metrics` averages it."""
    k = len(rows.labels)
    tp = np.bincount(rows.truth[rows.correct], weights[rows.correct], minlength=k)
    true = np.bincount(rows.truth, weights, minlength=k)
    predicted = np.bincount(rows.predicted, weights, minlength=k)
    present = np.bincount(rows.truth, minlength=k) > 0
    denominator = true + predicted
    f1 = np.divide(2 * tp, denominator, out=np.zeros(k), where=denominator > 0)
    return float(f1[present].mean())


def _approximate_interval(scores: np.ndarray, metric: str, n_rows: int) -> tuple[float, float, str] | None:
    """For records without per-row predictions (see the module docstring)."""
    diffs = scores[:, 0] - scores[:, 1]
    n_seeds = len(diffs)
    seed_half = 0.0
    if n_seeds > 1:
        t = float(scipy_stats.t.ppf(0.975, n_seeds - 1))
        seed_half = t * float(diffs.std(ddof=1)) / math.sqrt(n_seeds)
    centre = float(diffs.mean())
    if metric != "accuracy":
        if n_seeds == 1:
            return None
        return centre - seed_half, centre + seed_half, SEEDS_ONLY
    pa, pb = scores.mean(axis=0)
    test_half = _Z95 * math.sqrt((pa * (1 - pa) + pb * (1 - pb)) / n_rows)
    half = math.hypot(seed_half, test_half)
    return centre - half, centre + half, APPROXIMATE
