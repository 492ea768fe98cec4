"""`docs/make_results.py --check`: the results page and the README's result sentences must be what the records
give, on a fixture of a few records, a page and a README block (the real check runs on main's docs/results)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from embedstore.study import predictions
from embedstore.study.predictions import RowPredictions

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.fixture(scope="module")
def make_results():
    sys.path.insert(0, str(DOCS))
    try:
        import make_results
        yield make_results
    finally:
        sys.path.remove(str(DOCS))


def write_study(results_dir: Path) -> None:
    """English-only and LangAlign FC at 5k pairs, 2 task sizes, 3 seeds, 400 test rows, per-row predictions kept."""
    rng = np.random.default_rng(0)
    truth = [("calc", "writer")[i % 2] for i in range(400)]
    records = []
    for method, accuracy in (("english", 0.55), ("langalign", 0.70)):
        for task_size in (500, 2000):
            for seed in range(3):
                right = rng.random(400) < accuracy
                predicted = [t if ok else ("writer" if t == "calc" else "calc") for t, ok in zip(truth, right)]
                rows = RowPredictions.of(truth, predicted, "test-rows")
                aligner, pairs = ("fc", 5000) if method == "langalign" else (None, None)
                cell = {"language": "ko", "task": "libreoffice-apps", "method": method, "task_size": task_size,
                        "pair_size": pairs, "aligner": aligner, "seed": seed, "recipe": "default", "head": "logistic"}
                cell_id = f"{method}{task_size}{seed}"
                confusion = [[sum(t == a and p == b for t, p in zip(truth, predicted)) for b in ("calc", "writer")]
                             for a in ("calc", "writer")]
                records.append({"cell": cell, "cell_id": cell_id, "context": "ctx", "status": "ok",
                                "metrics": {"accuracy": float(right.mean()), "n": 400, "labels": ["calc", "writer"],
                                            "confusion": confusion, "degenerate": None},
                                "predictions": predictions.write(results_dir / "shared-topic-ko.jsonl", cell_id, "ctx",
                                                                 rows.to_payload()),
                                "provenance": {"sizes": {"n_train": task_size, "n_test": 400,
                                                         **({"n_pairs": pairs} if pairs else {})}}})
    (results_dir / "shared-topic-ko.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_the_check_passes_on_generated_text_and_fails_on_a_doctored_figure(make_results, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    write_study(results)
    page_path, readme_path = tmp_path / "results.md", tmp_path / "README.md"
    page_path.write_text(make_results.page(results, tmp_path / "plots"), encoding="utf-8")
    block = make_results.BLOCK.format(name="studies")
    readme = f"# tool\n\nResults:\n{block}\n{make_results.END}\nMore text.\n"
    readme_path.write_text(make_results._with_blocks(readme, make_results.headlines(results)), encoding="utf-8")
    sentence = readme_path.read_text(encoding="utf-8").splitlines()[4]
    assert sentence.startswith("In short, with the default `logistic` head, LangAlign (fc, 5k pairs")
    assert "ko 0.695 vs 0.579, clearly better, Δ +0.116 [" in sentence and "†" not in sentence  # paired interval
    assert "LangAlign fc 5k clearly better" in page_path.read_text(encoding="utf-8")
    assert make_results.check(results, page_path, readme_path) == []

    doctored = sentence.replace("ko 0.695", "ko 0.696", 1)
    readme_path.write_text(readme_path.read_text(encoding="utf-8").replace(sentence, doctored), encoding="utf-8")
    problems = make_results.check(results, page_path, readme_path)
    assert len(problems) == 1 and problems[0].startswith(f"{readme_path}: differs from the records")
    assert "ko 0.696" in problems[0]

    page = page_path.read_text(encoding="utf-8")
    page_path.write_text(page.replace("LangAlign fc 5k clearly better", "within noise", 1), encoding="utf-8")
    assert [p.split(":")[0] for p in make_results.check(results, page_path, readme_path)] == [
        str(page_path), str(readme_path)]
    readme_path.write_text("# tool\n", encoding="utf-8")
    assert any("no generated block 'studies'" in p for p in make_results.check(results, page_path, readme_path))
