"""Reports from hand-made results (embedstore.study.report) and the statistics behind them (embedstore.base.stats)."""
from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from embedstore.study.cells import Cell
from embedstore.base.errors import InputError
from embedstore.study.report import build_report
from embedstore.base.stats import mean_ci

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# t(0.975, df=2) = 4.303: half-width of 0.5, 0.6, 0.7 is 4.303 * 0.1 / sqrt(3)
CI_N3_SD01 = 4.302652729911275 * 0.1 / math.sqrt(3)


def record(cell: Cell, accuracy: float, status: str = "ok") -> dict[str, Any]:
    base = {"cell": asdict(cell), "cell_id": cell.id, "status": status}
    provenance = {"model_fingerprint": "fp-tiny", "store_key": "tiny/mean/L6", "embedstore_version": "0.1.0",
                  "sweep": "hand-made", "model": "tiny"}
    if status == "ok":
        return {**base, "metrics": {"accuracy": accuracy, "macro_f1": accuracy - 0.1}, "provenance": provenance}
    return {**base, "error": "RuntimeError: boom", "provenance": provenance}


def cells_over_seeds(
    method: str, task_size: int | None, values: list[float], *, aligner: str | None = None,
    pair_size: int | None = None, language: str = "ko", recipe: str = "default",
) -> list[dict[str, Any]]:
    """One ok record per value, seeds 0, 1, ..."""
    return [
        record(Cell(language, "topic", method, task_size, pair_size, aligner, seed, recipe), value)
        for seed, value in enumerate(values)
    ]


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def results(tmp_path: Path) -> Path:
    records = (
        cells_over_seeds("english", 1000, [0.5, 0.6, 0.7])
        + cells_over_seeds("english", None, [0.55])
        + cells_over_seeds("langalign", 1000, [0.8, 0.8, 0.8], aligner="fc", pair_size=5000)
        + cells_over_seeds("langalign", 1000, [0.70, 0.72, 0.74], aligner="fc", pair_size=None)
        + cells_over_seeds("langalign", None, [0.9, 0.9, 0.9], aligner="fc", pair_size=5000)
        + cells_over_seeds("ablation-omit", 1000, [0.4, 0.4, 0.4])
        + cells_over_seeds("ablation-share", 1000, [0.6, 0.6, 0.6], aligner="fc")
        + cells_over_seeds("english", 1000, [0.3, 0.4], language="ja")
        + [record(Cell("ko", "topic", "reverse", 1000, 5000, "fc", 0), 0.0, status="error")]
        + [{"kind": "cosine", "cell_id": "c1", "cell": {"language": "ko", "aligner": "fc", "pair_size": 5000},
            "en_tr": 0.8, "aligned_tr": 0.9, "aligned_en": 0.7, "shuffled": 0.2}]
    )
    return write_jsonl(tmp_path / "results.jsonl", records)


def test_mean_ci_known_values() -> None:
    mean, half, n = mean_ci([0.5, 0.6, 0.7])
    assert mean == pytest.approx(0.6)
    assert half == pytest.approx(4.303 * 0.1 / math.sqrt(3), abs=1e-4)
    assert half == pytest.approx(0.2484, abs=1e-4)
    assert n == 3
    mean, half, n = mean_ci([0.4, 0.6])  # t(0.975, df=1) = 12.706
    assert (mean, n) == (pytest.approx(0.5), 2)
    assert half == pytest.approx(12.706 * math.sqrt(0.02) / math.sqrt(2), abs=1e-3)


def test_mean_ci_single_value_and_bad_input() -> None:
    mean, half, n = mean_ci([0.7])
    assert mean == 0.7 and math.isnan(half) and n == 1
    with pytest.raises(ValueError, match="at least one value"):
        mean_ci([])
    with pytest.raises(ValueError, match="finite"):
        mean_ci([0.5, math.nan])
    with pytest.raises(ValueError, match="confidence"):
        mean_ci([0.5, 0.6], confidence=1.5)


def table_rows(markdown: str, heading: str) -> dict[str, list[str]]:
    """The rows of the (first) markdown table under `heading`, as label -> entries."""
    section = markdown.split(heading, 1)[1].split("\n## ", 1)[0]
    first = next(block for block in section.split("\n\n") if block.lstrip().startswith("| "))
    rows = [line for line in first.splitlines() if line.startswith("| ") and not line.startswith("| ---")]
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in row.strip("|").split("|")] for row in rows)}


def test_markdown_table_means_cis_bold_and_n(results: Path, tmp_path: Path) -> None:
    files = build_report(results, tmp_path / "report")
    assert files.table_md.read_text(encoding="utf-8") == files.markdown
    rows = table_rows(files.markdown, "## ko · topic")
    assert rows["method"] == ["1k", "all"]
    assert rows["english"] == ["0.600 ± 0.248", "0.550 (n=1)"]
    # best in both columns; seeds that agree have no spread, said in words (never "± 0.000")
    assert rows["langalign fc 5k"] == ["**0.800 (same at every seed)**", "**0.900 (same at every seed)**"]
    assert rows["langalign fc all"] == [f"0.720 ± {4.302652729911275 * 0.02 / math.sqrt(3):.3f}", "–"]
    assert rows["ablation-omit"] == ["0.400 (same at every seed)", "–"]
    assert rows["ablation-share fc"] == ["0.600 (same at every seed)", "–"]
    # paper order: baselines first, then langalign (5k before all pairs), then the ablations
    assert list(rows)[1:] == ["english", "langalign fc 5k", "langalign fc all", "ablation-omit", "ablation-share fc"]
    assert sum(entry.startswith("**") for row in list(rows.values())[1:] for entry in row) == 2
    assert "n = 3 seeds per entry unless marked" in files.markdown

    ja_rows = table_rows(files.markdown, "## ja · topic")
    assert ja_rows["english"] == [f"**0.350 ± {12.706204736174698 * math.sqrt(0.005) / math.sqrt(2):.3f}**"]
    assert "reverse" not in files.markdown.split("## ko · topic", 1)[1].split("## Cosine", 1)[0]  # failed: not shown


def test_header_has_provenance(results: Path, tmp_path: Path) -> None:
    header = build_report(results, tmp_path / "report").markdown.split("## ", 1)[0]
    assert "# Results: hand-made" in header
    assert "records: 22 cell records: 21 ok, 1 failed" in header
    assert "model fingerprint: fp-tiny" in header
    assert "store key: tiny/mean/L6" in header
    assert "embedstore version: 0.1.0" in header


def test_csv_long_format(results: Path, tmp_path: Path) -> None:
    files = build_report(results, tmp_path / "report")
    with files.table_csv.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["language", "task", "method", "aligner", "pair_size", "task_size", "recipe", "head",
                             "n_seeds", "mean", "ci95", "std"]
    assert len(rows) == 8  # ja english 1k; ko english 1k + all, langalign 5k (1k, all) + all pairs, 2 ablations
    by_key = {(r["language"], r["method"], r["aligner"], r["pair_size"], r["task_size"]): r for r in rows}
    english = by_key[("ko", "english", "", "", "1000")]
    assert english["n_seeds"] == "3"
    assert float(english["mean"]) == pytest.approx(0.6)
    assert float(english["ci95"]) == pytest.approx(CI_N3_SD01)
    assert float(english["std"]) == pytest.approx(0.1)
    single = by_key[("ko", "english", "", "", "all")]
    assert (single["n_seeds"], single["ci95"], single["std"]) == ("1", "", "")
    assert by_key[("ko", "langalign", "fc", "all", "1000")]["recipe"] == "default"
    assert ("ko", "ablation-share", "fc", "", "1000") in by_key


def test_plots_are_valid_pngs(results: Path, tmp_path: Path) -> None:
    files = build_report(results, tmp_path / "report")
    assert sorted(p.name for p in files.plots) == [
        "ablations_ko_topic.png", "cosine.png", "scores_ja_topic.png", "scores_ko_topic.png"
    ]
    for plot in files.plots:
        data = plot.read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 1000


def test_the_ablations_figure_keeps_the_reference_lines(results: Path, tmp_path: Path, monkeypatch) -> None:
    from embedstore.study import report as report_module

    drawn: dict[str, set[str]] = {}
    real = report_module.plot_scores

    def spy(table, path: Path, title, metric):
        drawn[path.name] = {r.method for r in table}
        return real(table, path, title, metric)

    monkeypatch.setattr(report_module, "plot_scores", spy)
    report_module.build_report(results, tmp_path / "report")
    assert "english" in drawn["ablations_ko_topic.png"]
    assert {"langalign", "ablation-omit", "ablation-share"} <= drawn["ablations_ko_topic.png"]


def test_cosine_table_from_results_and_separate_file(results: Path, tmp_path: Path) -> None:
    cosine_file = tmp_path / "cosine.json"
    cosine_file.write_text(json.dumps([
        {"language": "ja", "aligner": "procrustes", "pair_size": None, "en_tr": 0.8, "aligned_tr": 0.85,
         "aligned_en": 0.75, "shuffled": 0.1},
        {"language": "ja", "aligner": "procrustes", "pair_size": None, "en_tr": 0.8, "aligned_tr": 0.95,
         "aligned_en": 0.75, "shuffled": 0.3},
    ]))
    markdown = build_report(results, tmp_path / "report", cosine_path=cosine_file).markdown
    rows = table_rows(markdown, "## Cosine similarity")
    assert rows["group"] == ["n", "en_tr", "aligned_tr", "aligned_en", "shuffled"]
    assert rows["ko fc 5k"] == ["1", "0.800", "0.900", "0.700", "0.200"]
    # records without their pairs' spread over rows: the means are descriptive, with no interval (one over the
    # seeds alone would say nothing of other pairs: it read "± 0.000" where the seeds agreed)
    assert rows["ja procrustes all"] == ["2", "0.800", "0.900", "0.750", "0.200"]
    assert "a bare mean is descriptive" in markdown.split("## Cosine similarity", 1)[1]


def test_cosine_intervals_count_the_held_out_pairs_not_only_the_seeds(tmp_path: Path) -> None:
    """Three seeds of a closed-form aligner measured on the same held-out pairs agree to the last digit: the
    interval is then the pairs' own (normal over rows), close to a bootstrap of the rows, and never ± 0.000."""
    import numpy as np

    from embedstore.analysis.measures import cosine_report, row_cosines
    from embedstore.base.stats import Z95, wilson

    rng = np.random.default_rng(0)
    en = rng.normal(size=(400, 16))
    tr, aligned = en + rng.normal(scale=0.8, size=en.shape), en + rng.normal(scale=0.5, size=en.shape)
    cosine = cosine_report(en, tr, aligned, seed=0)
    records = [{"cell": asdict(Cell("ko", "topic", "langalign", 1000, 5000, "procrustes", seed)), "status": "ok",
                "cell_id": f"c{seed}", "metrics": {"accuracy": 0.7, "aligner": {"cosine": cosine, "p1_aligned": 0.5}},
                "provenance": {"sweep": "hand-made"}} for seed in range(3)]
    markdown = build_report(write_jsonl(tmp_path / "r.jsonl", records), tmp_path / "report").markdown
    entries = dict(zip(["n", "en_tr", "aligned_tr", "aligned_en", "shuffled"],
                       table_rows(markdown, "## Cosine similarity")["ko procrustes 5k"]))
    assert entries["n"] == "3" and "± 0.000" not in markdown.split("## Cosine similarity", 1)[1]
    per_row = row_cosines(aligned, tr)
    half = Z95 * per_row.std(ddof=1) / math.sqrt(len(per_row))
    assert entries["aligned_tr"] == f"{per_row.mean():.3f} ± {half:.3f}"
    draws = rng.integers(0, len(per_row), size=(4000, len(per_row)))
    low, high = np.percentile(per_row[draws].mean(axis=1), [2.5, 97.5])
    assert abs((high - low) / 2 - half) < 0.1 * half  # the normal interval is the rows' bootstrap one

    from embedstore.study.report_data import cosine_from_cells, cosine_groups

    p1 = cosine_groups(cosine_from_cells(records))["ko procrustes 5k"]["p1_aligned"]
    low, high = wilson(0.5, 400)
    assert p1.n == 3 and p1.ci95 == pytest.approx((high - low) / 2)  # P@1: a proportion of the same 400 pairs


def test_cosine_record_missing_a_field(results: Path, tmp_path: Path) -> None:
    bad = tmp_path / "cosine.jsonl"
    bad.write_text(json.dumps({"en_tr": 0.8, "aligned_tr": 0.9, "aligned_en": 0.7}) + "\n")
    with pytest.raises(InputError, match=r"cosine\.jsonl: cosine record 0: 'shuffled' is None"):
        build_report(results, tmp_path / "report", cosine_path=bad)


def test_other_metric_and_missing_metric(results: Path, tmp_path: Path) -> None:
    rows = table_rows(build_report(results, tmp_path / "r1", metric="macro_f1").markdown, "## ko · topic")
    assert rows["english"] == ["0.500 ± 0.248", "0.450 (n=1)"]
    with pytest.raises(InputError, match=r"no record has metric 'f1'; available: accuracy, macro_f1"):
        build_report(results, tmp_path / "r2", metric="f1")


def test_nothing_to_report(tmp_path: Path) -> None:
    failed = record(Cell("ko", "t", "english", 1000, None, None, 0), 0, "error")
    only_errors = write_jsonl(tmp_path / "r.jsonl", [failed])
    with pytest.raises(InputError, match="no finished"):
        build_report(only_errors, tmp_path / "report")


def test_mixed_recipes_are_labelled(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "r.jsonl", cells_over_seeds("english", 1000, [0.5, 0.6])
                       + cells_over_seeds("english", 1000, [0.7, 0.8], recipe="paper"))
    rows = table_rows(build_report(path, tmp_path / "report").markdown, "## ko · topic")
    assert set(rows) == {"method", "english recipe=default", "english recipe=paper"}
    assert rows["english recipe=paper"][0].startswith("**0.750 ± ")


def head_record(method: str, head: str, seed: int, accuracy: float, aligner: str = "procrustes",
                **metrics: Any) -> dict[str, Any]:
    """A record of a two-head study on 1,000 test rows (no per-row predictions: approximate intervals)."""
    aligner, pairs = (aligner, 1000) if method == "langalign" else (None, None)
    cell = {"language": "ko", "task": "t", "method": method, "task_size": 500, "pair_size": pairs,
            "aligner": aligner, "seed": seed, "recipe": "default", "head": head}
    return {"cell": cell, "cell_id": f"{method}{aligner}{head}{seed}", "context": "c", "status": "ok",
            "metrics": {"accuracy": accuracy, "n": 1000, "head": {"converged": head == "logistic"}, **metrics},
            "provenance": {"sizes": {"n_train": 500, "n_test": 1000}}}


def test_a_claim_whose_verdict_flips_with_the_head_is_head_sensitive(tmp_path):
    """LangAlign beats English-only under one head and not under the other: the report marks it."""
    rows = [head_record("english", h, s, 0.50 + 0.001 * s) for h in ("logistic", "mlp") for s in range(3)]
    rows += [head_record("langalign", "logistic", s, 0.60 + 0.001 * s) for s in range(3)]
    rows += [head_record("langalign", "mlp", s, 0.45 + 0.001 * s) for s in range(3)]
    files = build_report(write_jsonl(tmp_path / "r.jsonl", rows), tmp_path / "out")
    text = files.markdown
    # one scores figure per head family, the default head's first (two bars per method in one panel read badly)
    assert [p.name for p in files.plots] == ["scores_ko_t_head-logistic.png", "scores_ko_t_head-mlp.png"]
    line = next(x for x in text.splitlines() if x.startswith("| langalign procrustes 1k > english at 500"))
    assert "| langalign procrustes 1k clearly better (+0.100 [+0.0" in line
    assert "| english clearly better (-0.050 [-0.0" in line and "**head-sensitive**" in line
    assert "head `logistic`: 6/6 fits converged" in text and "**6 stopped at a cap**" in text
    assert "comparisons have approximate intervals" in text


def test_the_noise_note_judges_each_head_against_its_own_english_row(tmp_path):
    """The bug of issue 26: every row was compared with whichever head's English row came first (here the noisy
    `linear` one), so a clear gain under `logistic` was reported as noise. Each head is judged on its own."""
    rows = [head_record("english", "linear", s, a) for s, a in enumerate([0.20, 0.45, 0.66])]
    rows += [head_record("langalign", "linear", s, 0.40) for s in range(3)]
    rows += [head_record("english", "logistic", s, a) for s, a in enumerate([0.470, 0.476, 0.480])]
    rows += [head_record("langalign", "logistic", s, a, aligner="fc") for s, a in enumerate([0.58, 0.583, 0.59])]
    text = build_report(write_jsonl(tmp_path / "r.jsonl", rows), tmp_path / "out").markdown
    notes = [line for line in text.splitlines() if line.startswith("At 500 task rows")]
    assert notes == ["At 500 task rows under head `linear` no method is clearly apart from English-only (paired 95% "
                     "intervals): the differences in this column are within the noise."]


def test_degenerate_heads_are_counted_and_left_out_of_verdicts(tmp_path):
    collapsed = {"labels": ["x", "y"], "confusion": [[600, 0], [390, 10]]}  # 'x' for 99% of rows
    rows = [head_record("english", h, s, 0.50) for h in ("logistic", "linear") for s in range(3)]
    rows += [head_record("langalign", "logistic", s, 0.60) for s in range(3)]
    rows += [head_record("langalign", "linear", s, 0.61, **collapsed) for s in range(3)]
    text = build_report(write_jsonl(tmp_path / "r.jsonl", rows), tmp_path / "out").markdown
    assert "- head `linear`: **3 of 6 cells degenerate**" in text and "head `logistic`: **" not in text
    line = next(x for x in text.splitlines() if x.startswith("| langalign procrustes 1k > english at 500"))
    assert "left out (degenerate head: langalign procrustes 1k at seed 0 predicts 'x' for 99% of test rows)" in line
    assert line.endswith("|  |")  # one head decided: neither robust nor head-sensitive


def test_the_report_states_each_verdict_against_english_only(tmp_path):
    """The table's means describe the test rows; the claim is the paired difference with its interval, and the
    report prints it for every row (before, a one-head report printed no verdict at all, only the means)."""
    rows = [head_record("english", "logistic", s, 0.50 + 0.001 * s) for s in range(3)]
    rows += [head_record("langalign", "logistic", s, 0.60 + 0.001 * s) for s in range(3)]
    rows += [head_record("ablation-omit", "logistic", s, 0.50 + 0.001 * s) for s in range(3)]
    text = build_report(write_jsonl(tmp_path / "r.jsonl", rows), tmp_path / "out").markdown
    table = text[text.index("Against English-only"):].split("\n\n")[1].splitlines()
    assert table[0] == "| method | task rows | Δ [95% interval] | verdict |"
    langalign = next(line for line in table if line.startswith("| langalign procrustes 1k | 500 | +0.100 ["))
    assert langalign.endswith("| langalign procrustes 1k clearly better |")
    omit = next(line for line in table if line.startswith("| ablation-omit | 500 |"))
    assert "within noise" in omit and "[-0.0" in omit  # approximate interval: test-set noise even at Δ 0


def test_arms_with_no_differing_test_row_say_so_instead_of_a_zero_width_interval():
    from embedstore.study.report_data import Row
    from embedstore.study.report_markdown import verdicts_markdown
    from embedstore.study.verdicts import WITHIN_NOISE, Comparison

    same = Comparison("ablation-omit", "english", "accuracy", WITHIN_NOISE, 0.44, 0.44, 0.0, 0.0, 0.0, 1000,
                      seeds=tuple(range(10)))
    lines = verdicts_markdown({(Row("ablation-omit", None, None, "default", "logistic"), 300): same})
    assert lines[-2] == "| ablation-omit | 300 | 0 at every test row | no test row differs: nothing to estimate |"
    assert not any("0.000]" in line for line in lines)


def e2e_record(head: str, seed: int, accuracy: float, context: str, written_at: str) -> dict[str, Any]:
    """A langalign-e2e record on 1,000 test rows, named with `head` (its network is the same for logistic and
    linear) and written under `context` at `written_at`."""
    cell = {"language": "ko", "task": "t", "method": "langalign-e2e", "task_size": 500, "pair_size": 1000,
            "aligner": "procrustes", "seed": seed, "recipe": "default", "head": head}
    return {"cell": cell, "cell_id": f"e2e{head}{seed}", "context": context, "status": "ok",
            "metrics": {"accuracy": accuracy, "n": 1000},
            "provenance": {"sizes": {"n_train": 500, "n_test": 1000}, "written_at": written_at}}


def two_head_study_with_e2e(e2e: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """English-only and cached LangAlign under logistic and linear (cached clearly better than `e2e`'s 0.45)."""
    rows = [head_record("english", h, s, 0.50 + 0.001 * s) for h in ("logistic", "linear") for s in range(3)]
    rows += [head_record("langalign", h, s, 0.60 + 0.001 * s) for h in ("logistic", "linear") for s in range(3)]
    return rows + e2e


def test_an_lm_trained_arm_named_under_two_heads_is_one_row_of_one_context(tmp_path):
    """Issue 26: e2e cells named head=logistic and head=linear train one nn.Linear with the LM: the report showed
    them as two heads' rows. Now they are one row under the network they trained, marked LM-trained, read from the
    newest record's context; the older context's records are named as left out, not pooled in."""
    same = [e2e_record(h, s, 0.45 + 0.001 * s, "c", "2026-12-06T21:00:00+00:00")
            for h in ("logistic", "linear") for s in range(3)]
    text = build_report(write_jsonl(tmp_path / "r.jsonl", two_head_study_with_e2e(same)), tmp_path / "out").markdown
    rows = table_rows(text, "## ko · t")
    assert [label for label in rows if "e2e" in label] == ["langalign-e2e procrustes 1k head=linear (LM-trained)"]
    assert rows["langalign-e2e procrustes 1k head=linear (LM-trained)"][0].startswith("0.451 ± ")  # 3 seeds, not 6
    assert sum(line.startswith("| langalign-e2e procrustes 1k | 500 |") for line in text.splitlines()) == 1
    old = [e2e_record("linear", s, 0.40, "old", "2026-11-23T22:00:00+00:00") for s in range(3)]
    new = [e2e_record("logistic", 0, 0.45, "new", "2026-12-06T21:00:00+00:00")]
    text = build_report(write_jsonl(tmp_path / "r.jsonl", two_head_study_with_e2e(old + new)), tmp_path / "o2").markdown
    assert table_rows(text, "## ko · t")["langalign-e2e procrustes 1k head=linear (LM-trained)"] == ["0.450 (n=1)"]
    assert ("- one run per LM-trained arm: langalign-e2e procrustes 1k at task size 500 (its head the 'linear' "
            "network, trained with the LM): read from context new (head named logistic, seed 0), the newest; left "
            "out: context old (head named linear, seeds 0, 1, 2)") in text


def test_read_results_says_what_an_older_e2e_record_trained(tmp_path):
    """Records written before e2e cells said what their head trained get it at read time, through the function the
    runner writes it with; cached cells' records are left as they are."""
    from embedstore.study.methods import TEXT_HEAD_TRAINING
    from embedstore.study.sweep import read_results

    path = write_jsonl(tmp_path / "r.jsonl", [e2e_record("logistic", 0, 0.45, "c", "t"),
                                              head_record("langalign", "logistic", 0, 0.6)])
    e2e, cached = read_results(path)
    assert e2e["metrics"]["head_network"] == "linear" and e2e["metrics"]["head_training"] == TEXT_HEAD_TRAINING
    assert "no C search" in TEXT_HEAD_TRAINING and "head_network" not in cached["metrics"]
