"""The one verdict rule (embedstore.study.verdicts) and the per-row predictions it reads (study.predictions)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from embedstore.base.errors import InputError
from embedstore.study import predictions, verdicts
from embedstore.study.predictions import PredictionReader, RowPredictions
from embedstore.study.verdicts import (APPROXIMATE, CLEARLY_A, CLEARLY_B, PAIRED, REFUSED, SEEDS_ONLY, WITHIN_NOISE,
                                       compare, degeneracy)

LABELS = ["a", "b", "c"]


def make_rows(truth: np.ndarray, correct: np.ndarray, test_ids: str = "t0") -> RowPredictions:
    """Predictions that are right exactly where `correct` says (a wrong row predicts the next label)."""
    truth_labels = [LABELS[t] for t in truth]
    predicted = [LABELS[t] if ok else LABELS[(t + 1) % 3] for t, ok in zip(truth, correct)]
    return RowPredictions.of(truth_labels, predicted, test_ids)


def arm(rows_by_seed: list[RowPredictions], *, n_pairs: int = 0, n_train: int = 500, name: str = "x",
        with_rows: bool = True) -> list[dict[str, Any]]:
    """Records of one method over seeds 0, 1, ...; their metrics computed from the rows."""
    out = []
    for seed, rows in enumerate(rows_by_seed):
        record = {"cell": {"method": name, "seed": seed}, "cell_id": f"{name}{seed}", "context": "ctx",
                  "status": "ok", "metrics": {"accuracy": float(rows.correct.mean()), "n": len(rows.truth)},
                  "provenance": {"sizes": {"n_train": n_train, "n_pairs": n_pairs, "n_test": len(rows.truth)}}}
        if with_rows:
            record["_rows"] = rows  # the test's row source reads it; real records name a file
            record["predictions"] = {"file": f"{name}{seed}", "test_ids": rows.test_ids, "rows": len(rows.truth)}
        out.append(record)
    return out


def in_memory(record: dict[str, Any]) -> RowPredictions | None:
    return record.get("_rows")


def correct_at(n: int, accuracy: float, rng: np.random.Generator) -> np.ndarray:
    return rng.random(n) < accuracy


@pytest.fixture
def truth() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 3, 1000)


def test_deterministic_cells_get_the_interval_of_their_test_rows(truth):
    """The issue's case: all-rows cells are the same in every seed, +0.011 on 1,000 rows. A t-interval over seeds
    says ±0.000 and "clearly better"; the paired bootstrap over rows says within noise."""
    rng = np.random.default_rng(0)
    base = correct_at(1000, 0.5, rng)
    better = base.copy()
    flip = np.flatnonzero(~base)[:11]  # A is right on 11 more rows than B, the same on the rest
    better[flip] = True
    a = arm([make_rows(truth, better)] * 3, name="a")
    b = arm([make_rows(truth, base)] * 3, name="b")
    result = compare(a, b, rows=in_memory)
    assert result.interval == PAIRED and result.n_seeds == 3 and result.n_test_rows == 1000
    assert result.diff == pytest.approx(0.011)
    assert result.low < 0.011 < result.high and result.high - result.low > 0.005  # never ±0.000
    assert result.low > 0 or result.verdict == WITHIN_NOISE
    # 11 rows that only A gets right and none the other way: a sign test would call it; the bootstrap agrees
    assert result.verdict == CLEARLY_A


def test_a_small_difference_with_disagreement_both_ways_is_within_noise(truth):
    rng = np.random.default_rng(0)
    a_ok = correct_at(1000, 0.55, rng)
    b_ok = a_ok.copy()
    b_ok[np.flatnonzero(a_ok)[:30]] = False  # B misses 30 rows A gets, and gets 25 that A misses: Δ +0.005
    b_ok[np.flatnonzero(~a_ok)[:25]] = True
    result = compare(arm([make_rows(truth, a_ok)]), arm([make_rows(truth, b_ok)]), rows=in_memory,
                     labels=("share", "langalign"))
    assert result.verdict == WITHIN_NOISE and result.low < 0 < result.high
    assert result.statement == "within noise" and result.diff == pytest.approx(0.005)
    assert result.describe().startswith(f"{result.mean_a:.3f} vs {result.mean_b:.3f}, Δ +0.005 [")


def test_clear_differences_either_way_and_the_named_winner(truth):
    rng = np.random.default_rng(0)
    a = arm([make_rows(truth, correct_at(1000, 0.7, rng)) for _ in range(3)], name="a")
    b = arm([make_rows(truth, correct_at(1000, 0.5, rng)) for _ in range(3)], name="b")
    forward = compare(a, b, rows=in_memory, labels=("fc", "english"))
    backward = compare(b, a, rows=in_memory, labels=("english", "fc"))
    assert forward.verdict == CLEARLY_A and forward.winner == "fc" and forward.statement == "fc clearly better"
    assert backward.verdict == CLEARLY_B and backward.winner == "fc"
    assert backward.low == pytest.approx(-forward.high, abs=0.01)


def test_seeds_sharing_one_test_set_do_not_shrink_its_noise(truth):
    """Repeating one seed ten times is still one test sample: the interval must not narrow by √10."""
    rng = np.random.default_rng(0)
    a_ok, b_ok = correct_at(1000, 0.6, rng), correct_at(1000, 0.55, rng)
    one = compare(arm([make_rows(truth, a_ok)]), arm([make_rows(truth, b_ok)]), rows=in_memory)
    ten = compare(arm([make_rows(truth, a_ok)] * 10), arm([make_rows(truth, b_ok)] * 10), rows=in_memory)
    assert (ten.high - ten.low) == pytest.approx(one.high - one.low, rel=0.15)


def test_seed_to_seed_spread_widens_the_interval(truth):
    rng = np.random.default_rng(0)
    b_ok = correct_at(1000, 0.5, rng)
    steady = [make_rows(truth, correct_at(1000, 0.56, np.random.default_rng(7)))] * 3
    varying = [make_rows(truth, correct_at(1000, p, rng)) for p in (0.46, 0.56, 0.66)]
    narrow = compare(arm(steady), arm([make_rows(truth, b_ok)] * 3), rows=in_memory)
    wide = compare(arm(varying), arm([make_rows(truth, b_ok)] * 3), rows=in_memory)
    assert wide.high - wide.low > 1.5 * (narrow.high - narrow.low)


def test_the_same_records_give_the_same_figures(truth):
    rng = np.random.default_rng(0)
    a = arm([make_rows(truth, correct_at(1000, 0.6, rng)) for _ in range(3)])
    b = arm([make_rows(truth, correct_at(1000, 0.58, rng)) for _ in range(3)])
    assert compare(a, b, rows=in_memory) == compare(a, b, rows=in_memory)


def test_the_interval_covers_the_true_difference_about_95_percent_of_the_time(monkeypatch):
    """Coverage over fresh test samples of a known population: the interval counts test-set noise."""
    monkeypatch.setattr(verdicts, "REPLICATES", 600)
    rng = np.random.default_rng(3)
    covered, trials, n = 0, 120, 300
    for _ in range(trials):
        truth = rng.integers(0, 3, n)
        hard = rng.random(n) < 0.4  # rows both methods tend to miss: positively correlated errors
        a_ok = np.where(hard, rng.random(n) < 0.3, rng.random(n) < 0.9)  # population accuracy 0.66
        b_ok = np.where(hard, rng.random(n) < 0.3, rng.random(n) < 0.85)  # 0.63: true difference 0.03
        result = compare(arm([make_rows(truth, a_ok)]), arm([make_rows(truth, b_ok)]), rows=in_memory)
        covered += result.low <= 0.03 <= result.high
    assert 0.88 <= covered / trials <= 0.99


def test_macro_f1_has_a_paired_interval_too(truth):
    rng = np.random.default_rng(0)
    rows_a, rows_b = make_rows(truth, correct_at(1000, 0.7, rng)), make_rows(truth, correct_at(1000, 0.5, rng))
    a, b = arm([rows_a]), arm([rows_b])
    for record, rows in ((a[0], rows_a), (b[0], rows_b)):
        record["metrics"]["macro_f1"] = verdicts._macro_f1(rows, np.full(1000, 1 / 1000))
    result = compare(a, b, rows=in_memory, metric="macro_f1")
    assert result.interval == PAIRED and result.verdict == CLEARLY_A and result.low < result.diff < result.high


def test_refusals_name_their_reason(truth):
    rng = np.random.default_rng(0)
    rows = make_rows(truth, correct_at(1000, 0.6, rng))
    other_rows = make_rows(truth, correct_at(1000, 0.6, rng), test_ids="t1")
    share = arm([rows], n_pairs=500, name="share")
    langalign = arm([rows], n_pairs=1000, name="la")
    mismatched = compare(share, langalign, rows=in_memory, labels=("share", "LangAlign"))
    assert mismatched.verdict == REFUSED and mismatched.refused == (
        "mismatched budgets: share has 500 translation pairs, LangAlign 1,000")
    named = compare(share, langalign, rows=in_memory, allow_mismatched_budgets=True)
    assert named.verdict == WITHIN_NOISE and any("mismatched budgets" in n for n in named.notes)
    assert compare(arm([rows], n_train=500), arm([rows], n_train=2000), rows=in_memory).refused.startswith(
        "mismatched budgets: A trains on 500 task rows")
    assert compare(arm([rows], n_pairs=0), arm([rows], n_pairs=5000), rows=in_memory).verdict == WITHIN_NOISE
    draws = compare(arm([rows]), arm([other_rows]), rows=in_memory)
    assert draws.refused == "mismatched draws at seed 0: A and B were given different test rows"
    apart = arm([rows])
    later = arm([rows, rows])[1:]
    assert compare(apart, later, rows=in_memory).refused == "no seed in common"


def test_a_degenerate_head_is_refused(truth):
    rng = np.random.default_rng(0)
    collapsed = RowPredictions.of([LABELS[t] for t in truth], ["a"] * 990 + ["b"] * 10, "t0")
    a = arm([collapsed])
    a[0]["metrics"]["degenerate"] = "predicts 'a' for 99% of test rows"
    result = compare(a, arm([make_rows(truth, correct_at(1000, 0.6, rng))]), rows=in_memory, labels=("linear", "b"))
    assert result.verdict == REFUSED
    assert result.refused == "degenerate head: linear at seed 0 predicts 'a' for 99% of test rows"


def test_degeneracy_from_a_confusion_matrix():
    one_class = {"labels": ["x", "y"], "confusion": [[60, 0], [39, 1]]}
    assert degeneracy(one_class) == "predicts 'x' for 99% of test rows"
    majority_level = {"labels": ["x", "y"], "confusion": [[50, 10], [30, 10]]}  # 0.60 vs always-x 0.60
    assert degeneracy(majority_level).startswith("has accuracy 0.600, within noise of always answering")
    assert degeneracy({"labels": ["x", "y"], "confusion": [[55, 5], [5, 35]]}) is None
    assert degeneracy({"accuracy": 0.5}) is None
    numpy_labels = {"labels": list(np.array(["x", "y"])), "confusion": [[60, 0], [39, 1]]}  # a run's, before JSON
    assert degeneracy(numpy_labels) == "predicts 'x' for 99% of test rows"


def test_old_records_without_rows_get_a_labelled_approximate_interval(truth):
    """Deterministic cells without predictions: still not ±0, and marked as approximate."""
    rng = np.random.default_rng(0)
    a = arm([make_rows(truth, correct_at(1000, 0.541, rng))] * 3, with_rows=False)
    b = arm([make_rows(truth, correct_at(1000, 0.451, rng))] * 3, with_rows=False)
    result = compare(a, b, rows=in_memory)
    assert result.interval == APPROXIMATE and "approximate" in result.describe()
    expected_half = 1.96 * math.sqrt((result.mean_a * (1 - result.mean_a) + result.mean_b * (1 - result.mean_b)) / 1000)
    assert result.high - result.diff == pytest.approx(expected_half, rel=0.01)
    for record in a + b:
        record["metrics"]["macro_f1"] = record["metrics"]["accuracy"]
    seeds_only = compare(a, b, metric="macro_f1")
    assert seeds_only.interval == SEEDS_ONLY and seeds_only.low == seeds_only.high  # labelled: no test noise
    assert compare(a[:1], b[:1], metric="macro_f1").refused == (
        "one seed and no per-row predictions: no interval for macro_f1")


def test_predictions_round_trip_beside_the_results_file(tmp_path):
    results = tmp_path / "study.jsonl"
    rows = RowPredictions.of(["x", "y", "x"], ["x", "x", "x"], predictions.rows_digest(["one", "two", "three"]))
    entry = predictions.write(results, "cell1", "ctx1", rows.to_payload())
    assert entry == {"file": "cell1-ctx1.safetensors", "test_ids": rows.test_ids, "rows": 3}
    assert (tmp_path / "study.predictions" / "cell1-ctx1.safetensors").is_file()
    record = {"cell_id": "cell1", "context": "ctx1", "predictions": entry}
    loaded = PredictionReader(results)(record)
    assert loaded.labels == ("x", "y") and loaded.correct.tolist() == [True, False, True]
    assert PredictionReader(results)({"cell_id": "old"}) is None
    with pytest.raises(InputError, match="metadata 'cell_id' is 'cell1', expected 'cell2'"):
        PredictionReader(results)({**record, "cell_id": "cell2"})
    with pytest.raises(InputError, match="missing; record cell3 names it"):
        PredictionReader(results)({"cell_id": "cell3", "context": "c", "predictions": {**entry, "file": "no"}})


def with_refits(rows: RowPredictions, **at_C: np.ndarray) -> RowPredictions:
    """`rows` with the head's refits at other C ("C/10", "C*10") right exactly where each mask says."""
    truth = [rows.labels[t] for t in rows.truth]
    predicted = [rows.labels[p] for p in rows.predicted]
    refits = {name.replace("_", "/").replace("x", "*"): [t if ok else LABELS[(LABELS.index(t) + 1) % 3]
                                                          for t, ok in zip(truth, mask)]
              for name, mask in at_C.items()}
    return RowPredictions.of(truth, predicted, rows.test_ids, refits)


def refit_arm(rows_by_seed: list[RowPredictions], name: str) -> list[dict[str, Any]]:
    """`arm`, with each record's `head_regularisation` as a sweep writes it (accuracy and degeneracy per refit)."""
    out = arm(rows_by_seed, name=name)
    for record, rows in zip(out, rows_by_seed):
        record["metrics"]["head_regularisation"] = {"C": 0.01, **{
            at: {"C": 0.01 * f, "accuracy": float(rows.at(at).correct.mean()), "macro_f1": 0.0, "degenerate": None}
            for at, f in (("C/10", 0.1), ("C*10", 10.0))}}
    return out


def test_a_claim_whose_verdict_changes_one_decade_of_C_away_is_marked(truth):
    """A beats B clearly at the chosen C and at C×10, but at C/10 (a stronger penalty) A's head loses its edge:
    the claim rests on the choice of C, and `c_sensitivity` says so, naming C/10 and the verdict there."""
    rng = np.random.default_rng(3)
    a_rows, b_rows = [], []
    for _ in range(5):
        b_ok = correct_at(1000, 0.5, rng)
        a_ok = b_ok | (rng.random(1000) < 0.2)  # about +0.10 at the chosen C
        a_rows.append(with_refits(make_rows(truth, a_ok), C_10=b_ok, Cx10=a_ok))  # at C/10 A predicts as B
        b_rows.append(with_refits(make_rows(truth, b_ok), C_10=b_ok, Cx10=b_ok))
    a, b = refit_arm(a_rows, "a"), refit_arm(b_rows, "b")
    claim = compare(a, b, rows=in_memory, labels=("a", "b"))
    around = verdicts.across_C(a, b, rows=in_memory, labels=("a", "b"))
    assert claim.verdict == CLEARLY_A and around["C*10"].verdict == CLEARLY_A
    assert around["C/10"].verdict == WITHIN_NOISE and around["C/10"].interval == PAIRED
    assert around["C/10"].diff == 0 and around["C/10"].low == around["C/10"].high == 0  # identical predictions
    flip = verdicts.c_sensitivity(claim, around)
    assert flip is not None and flip.startswith("at C/10 within noise, Δ +0.000") and "C*10" not in flip
    # the same arms with refits that agree with the chosen C: nothing to mark
    steady = [refit_arm([with_refits(r, C_10=r.correct, Cx10=r.correct) for r in rows], name)
              for rows, name in ((a_rows, "a"), (b_rows, "b"))]
    assert verdicts.c_sensitivity(claim, verdicts.across_C(*steady, rows=in_memory, labels=("a", "b"))) is None


def test_records_without_refits_are_not_checked_at_other_C_rather_than_approximated(truth):
    """An older record kept no refits' per-row predictions: its claim is refused at C/10 and C×10 (an approximate,
    wider interval there would flip "clearly" to "within noise" by arithmetic alone) and never marked."""
    rng = np.random.default_rng(4)
    a = arm([make_rows(truth, correct_at(1000, 0.7, rng)) for _ in range(3)], name="a")
    b = arm([make_rows(truth, correct_at(1000, 0.5, rng)) for _ in range(3)], name="b")
    claim = compare(a, b, rows=in_memory)
    around = verdicts.across_C(a, b, rows=in_memory)
    assert all(c.verdict == REFUSED and "kept no per-row predictions" in c.refused for c in around.values())
    assert verdicts.c_sensitivity(claim, around) is None


def test_refit_predictions_survive_the_file_round_trip(tmp_path):
    rows = RowPredictions.of(["x", "y", "x"], ["x", "x", "x"], "rows", {"C/10": ["y", "y", "x"], "C*10": ["x", "y", "x"]})
    entry = predictions.write(tmp_path / "r.jsonl", "cell", "ctx", rows.to_payload())
    loaded = PredictionReader(tmp_path / "r.jsonl")({"cell_id": "cell", "context": "ctx", "predictions": entry})
    assert loaded.at("C/10").correct.tolist() == [False, True, True]
    assert loaded.at("C*10").correct.tolist() == [True, True, True] and loaded.at("C/100") is None


def test_arms_that_predict_the_same_class_on_every_row_say_so_instead_of_a_zero_width_interval(truth):
    """The adaptation study's case: adapt-lora predicted what English-only predicted on all 3 x 1,000 rows, and the
    page printed "Δ +0.000 [+0.000, +0.000]", an interval that reads like certainty. Within noise, said as it is;
    one differing row gives an interval again."""
    rng = np.random.default_rng(0)
    rows = [make_rows(truth, correct_at(1000, 0.5, rng)) for _ in range(3)]
    same = compare(arm(rows, name="lora"), arm(rows, name="english"), rows=in_memory)
    assert same.verdict == WITHIN_NOISE and same.identical and same.diff == 0
    assert same.describe() == (f"{same.mean_a:.3f} vs {same.mean_b:.3f}, the same prediction on every test row "
                               "(3 seeds × 1,000 test rows)")
    assert "[+0.000" not in same.describe()
    changed = rows[2].correct.copy()
    changed[0] = not changed[0]
    one_off = compare(arm(rows[:2] + [make_rows(truth, changed)], name="lora"), arm(rows, name="english"),
                      rows=in_memory)
    assert not one_off.identical and "[" in one_off.describe()


def test_arms_at_different_seed_counts_are_paired_over_the_seeds_both_have_and_name_them(truth):
    """The adaptation study's case: adapt-align extended to 10 seeds, adapt-lora kept at 3. A comparison with
    English-only pairs over the seeds both arms ran, says which, and names the seeds it left out."""
    rng = np.random.default_rng(0)
    rows = [make_rows(truth, correct_at(1000, 0.5, rng)) for _ in range(10)]
    three = compare(arm(rows[:3], name="lora"), arm(rows, name="english"), rows=in_memory, labels=("lora", "english"))
    assert three.n_seeds == 3 and three.seeds == (0, 1, 2) and three.seed_list == "0-2"
    assert three.notes[0] == "seeds [3, 4, 5, 6, 7, 8, 9] only in english: left out"
    every = compare(arm(rows, name="align"), arm(rows, name="english"), rows=in_memory)
    assert every.seeds == tuple(range(10)) and every.seed_list == "0-9"
    some = [r for r in arm(rows, name="english") if r["cell"]["seed"] in (0, 1, 3, 4, 5, 9)]
    gaps = compare(arm(rows, name="align"), some, rows=in_memory)
    assert gaps.seed_list == "0, 1, 3-5, 9"
    assert compare(arm(rows[:1]), arm(rows), rows=in_memory).seed_list == "0"


@pytest.mark.parametrize("cell", [{"head": "linear"}, {"method": "langalign-e2e", "head": "logistic"}],
                         ids=["torch head", "head trained with the encoder"])
def test_heads_fitted_at_no_C_say_so_rather_than_not_checked(truth, cell):
    """A torch head or a head trained with the encoder has no C to move: its claims are refused at C/10 and C×10
    as "no C applies", which the pages count apart from older records that merely kept no refits."""
    rng = np.random.default_rng(5)
    a = arm([make_rows(truth, correct_at(1000, 0.7, rng)) for _ in range(3)], name="a")
    b = arm([make_rows(truth, correct_at(1000, 0.5, rng)) for _ in range(3)], name="b")
    for record in a:
        record["cell"].update(cell)
    around = verdicts.across_C(a, b, rows=in_memory, labels=("a", "b"))
    assert all(c.verdict == REFUSED and c.refused.startswith(f"{verdicts.NO_C}: a's head") for c in around.values())
    assert verdicts.takes_C(b[0]) and not verdicts.takes_C(a[0])
    assert verdicts.c_sensitivity(compare(a, b, rows=in_memory), around) is None
