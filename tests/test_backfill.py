"""LangAlign cells' validation score, the arm chosen by it, and the backfill that adds what older records lack
only where a re-run reproduces them."""
import json

import numpy as np
import pytest

from embedstore.study import predictions
from embedstore.study.cells import expand, load_config
from embedstore.study.experiments import VALIDATION_SPLIT, task_for, validation_score
from embedstore.study.predictions import PredictionReader, RowPredictions
from embedstore.study.run import run_study
from embedstore.study.selection import select_by_validation
from embedstore.study.sweep import read_results
from test_experiments import write_config


class _Constant:
    def predict(self, x):
        return np.array(["calc"] * len(x))


def test_a_head_answering_one_class_on_both_sides_transfers_nothing():
    english = np.zeros((5, 2))
    score = validation_score(_Constant(), (english, english))
    assert score["agreement"] == 1.0 and score["kappa"] == 0.0 and score["rows"] == 5
    assert validation_score(_Constant(), None) is None


def _record(aligner, seed, kappa):
    return {"cell": {"aligner": aligner, "seed": seed}, "metrics": {"validation": {"kappa": kappa}}}


def test_each_seed_takes_the_arm_with_the_best_validation_score_among_arms_scored_at_every_seed():
    arms = {"fc 1k": [_record("fc", 0, 0.7), _record("fc", 1, 0.2), _record("fc", 2, 0.5)],
            "procrustes 1k": [_record("procrustes", s, 0.5) for s in range(3)],
            "resmlp 1k": [_record("resmlp", 0, 0.9)]}  # scored at one seed only: never a candidate
    chosen = select_by_validation(arms, [0, 1, 2])
    assert chosen.chosen == {0: "fc 1k", 1: "procrustes 1k", 2: "fc 1k"}  # a tie goes to the arm listed first
    assert [r["cell"]["aligner"] for r in chosen.records] == ["fc", "procrustes", "fc"]
    assert chosen.candidates == ("fc 1k", "procrustes 1k")
    assert chosen.left_out == ("resmlp 1k: validation scores at 1 of the 3 seeds, left out",)
    assert "fc 1k × 2, procrustes 1k × 1" in chosen.describe()
    older = {"fc 1k": [{"cell": {"seed": 0}, "metrics": {}}]}  # written before the scores were kept
    assert select_by_validation(older, [0]) is None


def _strip(config, keep_rows: bool = True, flip: str | None = None) -> dict:
    """Rewrite the results as an older version wrote them: no refits, no validation score; `flip` (a cell id):
    that cell's kept predictions doctored at one row, so its re-run cannot reproduce it. Returns the originals."""
    originals = {r["cell_id"]: r for r in read_results(config.results)}
    reader = PredictionReader(config.results)
    lines = []
    for cell_id, record in originals.items():
        old = json.loads(json.dumps(record))
        for name in ("head_regularisation", "validation"):
            old["metrics"].pop(name, None)
        rows = reader(record)
        payload = {**rows.to_payload(), "at_C": {}}
        if cell_id == flip:
            payload["predicted"][0] = (payload["predicted"][0] + 1) % len(payload["labels"])
        old["predictions"] = predictions.write(config.results, cell_id, record["context"], payload)
        if not keep_rows:
            del old["predictions"]
        lines.append(json.dumps(old) + "\n")
    config.results.write_text("".join(lines))
    return originals


def test_langalign_cells_record_validation_and_a_backfill_restores_it_only_where_reproduced(tiny_model_dir, tmp_path):
    config = load_config(write_config(tmp_path, tiny_model_dir, ["english", "langalign"], aligners=("procrustes",)))
    assert not run_study(config, workers=1, progress=False).summary.errors
    records = read_results(config.results)
    training_rows = len(task_for(expand(config)[0], config).rows("en_train").texts)
    for r in records:
        score = r["metrics"].get("validation")
        if r["cell"]["method"] != "langalign":
            assert score is None
        elif r["cell"]["task_size"] == 40:  # the rows of the training folds this seed did not draw
            assert score["rows"] == training_rows - 40 and score["split"] == VALIDATION_SPLIT
            assert -1 <= score["kappa"] <= 1 and 0 <= score["agreement"] <= 1

    langalign = next(r for r in records if r["cell"]["method"] == "langalign" and r["cell"]["task_size"] == 40)
    originals = _strip(config, flip=langalign["cell_id"])
    done = run_study(config, workers=1, progress=False, backfill=True)
    assert not done.summary.to_run and not done.backfilled.interrupted
    assert [cell.id for cell, _ in done.backfilled.not_reproduced] == [langalign["cell_id"]]
    assert "predicts 1 of 56 test rows otherwise" in done.backfilled.not_reproduced[0][1]
    assert len(done.backfilled.updated) == len(originals) - 1
    reader = PredictionReader(config.results)
    for r in read_results(config.results):
        original = originals[r["cell_id"]]
        if r["cell_id"] == langalign["cell_id"]:  # left as it was: no fields from a fit it does not describe
            assert "head_regularisation" not in r["metrics"] and "backfilled" not in r["provenance"]
            continue
        assert r["metrics"] == original["metrics"]  # the same figures, refits and validation score as a fresh run
        assert r["provenance"]["backfilled"]["fields"] == (
            ["head_regularisation", "validation"] if r["cell"]["method"] == "langalign" else ["head_regularisation"])
        kept = reader(r).at("C/10")
        assert kept.correct.mean() == pytest.approx(r["metrics"]["head_regularisation"]["C/10"]["accuracy"])
    again = run_study(config, workers=1, progress=False, backfill=True).backfilled
    assert not again.updated and len(again.not_reproduced) == 1  # the rest is up to date; a re-run goes on


def test_a_record_without_row_predictions_is_checked_by_its_accuracy_and_confusion(tiny_model_dir, tmp_path):
    config = load_config(write_config(tmp_path, tiny_model_dir, ["english"], aligners=("procrustes",)))
    assert not run_study(config, workers=1, progress=False).summary.errors
    originals = _strip(config, keep_rows=False)
    done = run_study(config, workers=1, progress=False, backfill=True).backfilled
    assert len(done.updated) == len(originals) and not done.not_reproduced
    for r in read_results(config.results):
        assert r["metrics"]["head_regularisation"] == originals[r["cell_id"]]["metrics"]["head_regularisation"]
        assert isinstance(PredictionReader(config.results)(r), RowPredictions)
