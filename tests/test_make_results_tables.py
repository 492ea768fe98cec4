"""The results page's frontier and adaptation tables (docs/results_frontier.py, docs/results_adapt.py): a mean
over seeds never reads "± 0.000" — an accuracy counts its test rows' sampling, and a P@1 measured on the same held-out pairs at
every seed gets those pairs' sampling interval, as the sweep report's tables do."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from embedstore.base.stats import wilson
from embedstore.study.report_data import accuracy_stat, group_tables, summarise
from embedstore.study.report_markdown import format_stat

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


def test_an_accuracy_the_seeds_agree_on_gets_its_test_rows_interval_never_plus_minus_zero():
    low, high = wilson(0.451, 1000)
    agree = [{"metrics": {"accuracy": 0.451, "n": 1000}} for _ in range(3)]
    assert format_stat(accuracy_stat(agree)) == f"0.451 ± {(high - low) / 2:.3f}"
    # seeds that differ: their t-interval widened by the test rows' sampling, wider than either alone
    spread = [{"metrics": {"accuracy": a, "n": 1000}} for a in (0.5, 0.6, 0.7)]
    assert accuracy_stat(spread).ci95 > max(summarise([0.5, 0.6, 0.7]).ci95, (high - low) / 2)
    # without the test rows' count there is no interval to give: the seeds' agreement is said in words
    assert format_stat(summarise([0.451] * 3)) == "0.451 (same at every seed)"


def test_the_report_table_gives_a_deterministic_accuracy_its_test_rows_interval():
    records = [{"cell": {"language": "ko", "task": "topic", "method": "english", "task_size": None, "seed": seed},
                "metrics": {"accuracy": 0.451, "n": 1000}} for seed in range(3)]
    tables, _ = group_tables(records, "accuracy")
    (stat,) = next(iter(next(iter(tables.values())).values())).values()
    low, high = wilson(0.451, 1000)
    assert stat.ci95 == pytest.approx((high - low) / 2) and stat.n == 3
    macro = [{**r, "metrics": {"accuracy": 0.451, "macro_f1": 0.3, "n": 1000}} for r in records]
    (f1,) = next(iter(group_tables(macro, "macro_f1")[0][("ko", "topic")].values())).values()
    assert format_stat(f1) == "0.300 (same at every seed)"  # not a proportion: no Wilson interval


def test_a_p_at_1_on_the_same_pairs_at_every_seed_counts_the_pairs_sampling(docs_modules):
    frontier, adapt = docs_modules
    low, high = wilson(0.9, 1000)
    expected = f"0.900 ± {(high - low) / 2:.3f}"
    assert frontier._fmt([0.9, 0.9, 0.9], [1000, 1000, 1000]) == expected
    assert format_stat(adapt.retrieval_after_align({"align": {"0": 0.9, "1": 0.9, "2": 0.9}, "rows": 1000})) == expected
    assert frontier._fmt([0.9, 0.9], [1000, None]) == "0.900"  # a record without its pair count: descriptive only
    assert "± 0.000" not in frontier._fmt([0.91, 0.9101, 0.91], [3000] * 3)


def test_retrieval_after_align_keeps_the_saved_figure_of_an_encoder_no_longer_on_disk(docs_modules, tmp_path,
                                                                                       monkeypatch):
    """A cleared cache (the adapted encoders live under the gitignored `<results>.adapt/`) must not stop the
    analyses: a seed whose encoder is gone keeps the P@1 measured on it; one whose encoder is there is measured."""
    import json

    import numpy as np

    import embedstore.encoding.encode

    _, adapt = docs_modules
    data, results, analyses = tmp_path / "rows.tsv", tmp_path / "r.jsonl", tmp_path / "r.analyses.json"
    data.write_text("en\tko\trole\na\tㄱ\ttest\nb\tㄴ\ttest\nc\tㄷ\ttrain\n", encoding="utf-8")
    (tmp_path / "here" / "model").mkdir(parents=True)
    results.write_text("".join(json.dumps(
        {"cell": {"method": "adapt-align", "seed": seed}, "cell_id": f"c{seed}", "status": "ok",
         "provenance": {"sizes": {"adapt": {"dir": str(tmp_path / where)}}}}) + "\n"
        for seed, where in ((0, "gone"), (1, "here"))), encoding="utf-8")
    analyses.write_text(json.dumps({"gradients": {"kept": True}, "retrieval": {"align": {"0": 0.937, "1": 0.1}}}),
                        encoding="utf-8")
    for name, value in (("STUDY", tmp_path), ("DATA", data), ("RESULTS", results), ("ANALYSES", analyses),
                        ("nn_p_at_1", lambda a, b: 0.5)):
        monkeypatch.setattr(adapt, name, value)
    monkeypatch.setattr(embedstore.encoding.encode, "embed", lambda texts, **_: np.ones((len(texts), 2)))
    adapt.analyses(retrieval_only=True)
    saved = json.loads(analyses.read_text(encoding="utf-8"))
    assert saved["retrieval"] == {"rows": 2, "base": 0.5, "align": {"0": 0.937, "1": 0.5}}
    assert saved["gradients"] == {"kept": True}
