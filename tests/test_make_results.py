"""`docs/make_results.py --check`: the results page and the README's result sentences must be what the records
give, on a fixture of a few records, a page and a README block (the real check runs on main's docs/results)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from embedstore.study import predictions
from embedstore.study.predictions import PredictionReader, RowPredictions
from embedstore.study.sweep import read_results
from embedstore.study.verdicts import compare, degeneracy, select

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.fixture(scope="module")
def make_results():
    sys.path.insert(0, str(DOCS))
    try:
        import make_results
        yield make_results
    finally:
        sys.path.remove(str(DOCS))


STUDY = "shared-topic-ko-seeds"  # a study the README's headline cites
CONFIG = """
name = "shared-topic-ko-seeds"
[grid]
languages = ["ko"]
tasks = ["libreoffice-apps"]
methods = ["english", "langalign"]
task_sizes = ["500", "2k"]
pair_sizes = ["5k"]
aligners = ["fc", "procrustes"]
seeds = [0, 1, 2]
{claims}
[tasks.libreoffice-apps]
test = {{ file = "unused.tsv", text = "ko", label = "apps" }}
"""
NAMED = '[claims]\nlangalign = { aligner = "fc", pairs = "5k" }\n'


def write_study(results_dir: Path, configs: Path, claims: str = NAMED,
                validation: dict[str, list[float]] | None = None) -> None:
    """English-only, LangAlign FC and Procrustes at 5k pairs, 2 task sizes, 3 seeds, 400 test rows, per-row
    predictions kept with the heads' refits at C/10 and C×10, and the study's config. Procrustes scores highest
    on the test rows; the config names FC. FC's head refitted at C/10 predicts what English-only's does.
    `validation`: each aligner's validation kappa per seed (None: records written before they were kept)."""
    rng = np.random.default_rng(0)
    truth = [("calc", "writer")[i % 2] for i in range(400)]
    records = []
    english: dict[tuple[int, int], list[str]] = {}
    for method, aligner, accuracy in (("english", None, 0.55), ("langalign", "fc", 0.70),
                                      ("langalign", "procrustes", 0.80)):
        for task_size in (500, 2000):
            for seed in range(3):
                right = rng.random(400) < accuracy
                predicted = [t if ok else ("writer" if t == "calc" else "calc") for t, ok in zip(truth, right)]
                if method == "english":
                    english[(task_size, seed)] = predicted
                at_c = english[(task_size, seed)] if aligner == "fc" else predicted
                rows = RowPredictions.of(truth, predicted, "test-rows", {"C/10": at_c, "C*10": predicted})
                pairs = 5000 if aligner else None
                cell = {"language": "ko", "task": "libreoffice-apps", "method": method, "task_size": task_size,
                        "pair_size": pairs, "aligner": aligner, "seed": seed, "recipe": "default", "head": "logistic"}
                cell_id = f"{method}{aligner}{task_size}{seed}"
                confusion = [[sum(t == a and p == b for t, p in zip(truth, predicted)) for b in ("calc", "writer")]
                             for a in ("calc", "writer")]
                refits = {name: {"C": c, "accuracy": float(rows.at(name).correct.mean()), "macro_f1": 0.0,
                                 "degenerate": None} for name, c in (("C/10", 0.001), ("C*10", 0.1))}
                records.append({"cell": cell, "cell_id": cell_id, "context": "ctx", "status": "ok",
                                "metrics": {"accuracy": float(right.mean()), "n": 400, "labels": ["calc", "writer"],
                                            "confusion": confusion, "degenerate": None,
                                            "head_regularisation": {"C": 0.01, **refits},
                                            **({"validation": {"rows": 100, "kappa": validation[aligner][seed],
                                                               "agreement": 0.9, "split": "held out"}}
                                               if validation and aligner and seed < len(validation[aligner])
                                               else {})},
                                "predictions": predictions.write(results_dir / f"{STUDY}.jsonl", cell_id, "ctx",
                                                                 rows.to_payload()),
                                "provenance": {"sizes": {"n_train": task_size, "n_test": 400,
                                                         **({"n_pairs": pairs} if pairs else {})}}})
    (results_dir / f"{STUDY}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    configs.mkdir(exist_ok=True)
    (configs / f"{STUDY}.toml").write_text(CONFIG.format(claims=claims), encoding="utf-8")


def test_the_check_passes_on_generated_text_and_fails_on_a_doctored_figure(make_results, tmp_path):
    results, configs = tmp_path / "results", tmp_path / "configs"
    results.mkdir()
    write_study(results, configs)
    page_path, readme_path = tmp_path / "results.md", tmp_path / "README.md"
    page_path.write_text(make_results.page(results, results, configs), encoding="utf-8")  # figures beside records
    block = make_results.BLOCK.format(name="studies")
    readme = f"# tool\n\nResults:\n{block}\n{make_results.END}\nMore text.\n"
    readme_path.write_text(make_results._with_blocks(readme, make_results.headlines(results, configs)),
                           encoding="utf-8")
    sentence = readme_path.read_text(encoding="utf-8").splitlines()[4]
    assert sentence.startswith("In short, with the default `logistic` head and e5-small (3 seeds), LangAlign (fc, "
                               "5k pairs")
    assert "On LibreOffice help topic" in sentence and "ko 0.695 vs 0.579, clearly better, Δ +0.116 [" in sentence
    assert "(3 seeds so far)" in sentence and "†" not in sentence  # fewer than 10 seeds named; a paired interval
    page = page_path.read_text(encoding="utf-8")
    assert "LangAlign fc 5k clearly better" in page
    assert make_results.check(results, page_path, readme_path, configs) == []

    doctored = sentence.replace("ko 0.695", "ko 0.696", 1)
    readme_path.write_text(readme_path.read_text(encoding="utf-8").replace(sentence, doctored), encoding="utf-8")
    problems = make_results.check(results, page_path, readme_path, configs)
    assert len(problems) == 1 and problems[0].startswith(f"{readme_path}: differs from the records")
    assert "ko 0.696" in problems[0]

    page_path.write_text(page.replace("LangAlign fc 5k clearly better", "within noise", 1), encoding="utf-8")
    assert [p.split(":")[0] for p in make_results.check(results, page_path, readme_path, configs)] == [
        str(page_path), str(readme_path)]
    readme_path.write_text("# tool\n", encoding="utf-8")
    assert any("no generated block 'studies'" in p
               for p in make_results.check(results, page_path, readme_path, configs))


def test_the_check_draws_nothing_and_names_each_figure_or_table_not_written_from_the_records(make_results, tmp_path,
                                                                                            monkeypatch):
    from matplotlib.figure import Figure

    from embedstore.study.report_plots import Plot

    results, configs = tmp_path / "results", tmp_path / "configs"
    results.mkdir()
    write_study(results, configs)
    page_path, readme_path = tmp_path / "results.md", tmp_path / "README.md"
    page_path.write_text(make_results.page(results, tmp_path / "plots", configs), encoding="utf-8")
    readme = f"{make_results.BLOCK.format(name='studies')}\n{make_results.END}\n"
    readme_path.write_text(make_results._with_blocks(readme, make_results.headlines(results, configs)),
                           encoding="utf-8")
    shown = tmp_path / "plots" / STUDY
    figure = shown / "scores_ko_libreoffice-apps.png"
    assert [p.name for p in shown.glob("*.png")] == [figure.name]
    assert make_results.check(results, page_path, readme_path, configs, plots=tmp_path / "plots") == []
    Plot(figure, "the digest of other records", Figure, 50).draw()  # a figure left from earlier records

    def no_drawing(self):
        raise AssertionError(f"the check drew {self.path}")

    monkeypatch.setattr(Plot, "draw", no_drawing)
    (shown / "table.md").write_text((shown / "table.md").read_text(encoding="utf-8") + "x", encoding="utf-8")
    (shown / "table.csv").unlink()
    problems = make_results.check(results, page_path, readme_path, configs, plots=tmp_path / "plots")
    assert sorted(p.split(": ")[0] for p in problems) == sorted(str(shown / name) for name in (
        "table.md", "table.csv", figure.name))
    assert all(p.endswith("missing or not written from the records (run `python docs/make_results.py`)")
               for p in problems)
    figure.unlink()
    assert len(make_results.check(results, page_path, readme_path, configs, plots=tmp_path / "plots")) == 3
    # the check looks beside the records by default: nothing there
    assert len(make_results.check(results, page_path, readme_path, configs)) == 3


def test_the_side_by_side_table_says_so_far_only_while_the_studys_configs_have_cells_left(make_results, tmp_path):
    """Fewer than ten seeds is "(3 seeds)" when the configs named three (a slow arm's design), and "(3 seeds so far)"
    while their sweep still has seeds to run."""
    results, configs = tmp_path / "results", tmp_path / "configs"
    results.mkdir()
    write_study(results, configs)

    def side() -> str:
        return next(line for line in make_results.page(results, tmp_path / "plots", configs).splitlines()
                    if line.startswith("| LangAlign (fc 5k pairs) above English-only, task size 500 | "))

    assert "(3 seeds) " in side()
    config = configs / f"{STUDY}.toml"
    config.write_text(config.read_text(encoding="utf-8").replace("seeds = [0, 1, 2]", "seeds = [0, 1, 2, 3]"),
                      encoding="utf-8")
    assert "(3 seeds so far) " in side()


def test_a_claim_that_flips_one_decade_of_C_away_is_marked_on_the_page_and_in_the_readme(make_results, tmp_path):
    """FC's heads refitted at C/10 predict what English-only's do: "LangAlign above English-only" is clearly
    better at the chosen C and within noise at C/10, so the page and the README mark it C-sensitive; the
    Procrustes/FC claim, alike at every C, is not marked."""
    results, configs = tmp_path / "results", tmp_path / "configs"
    results.mkdir()
    write_study(results, configs)
    page = make_results.page(results, tmp_path / "plots", configs)
    marked = [line for line in page.splitlines() if "**C-sensitive**: at C/10 within noise, Δ +0.000" in line]
    assert [line.split(":")[0] for line in marked] == ["- LangAlign (fc 5k pairs) above English-only, task size 500",
                                                       "- LangAlign (fc 5k pairs) above English-only, task size 2k"]
    assert not any("C-sensitive" in line for line in page.splitlines() if line.startswith("- closed-form"))
    assert "2 change (marked **C-sensitive**)" in page
    side = [line for line in page.splitlines() if line.startswith("| LangAlign (fc 5k pairs) above English-only, "
                                                                    "task size 500 | ")]  # the studies side by side
    assert len(side) == 1 and "(3 seeds) (C-sensitive) | one corpus (help topic, 1 language) |" in side[0]
    assert "ko 0.695 vs 0.579, clearly better" in make_results.headlines(results, configs)["studies"]
    assert "(**C-sensitive**: at C/10 within noise" in make_results.headlines(results, configs)["studies"]
    report = (tmp_path / "plots" / STUDY / "table.md").read_text(encoding="utf-8")  # `embedstore report` too
    assert "- **C-sensitive**: langalign fc 5k against english at 500 (head `logistic`)" in report


def test_langalign_claims_read_the_arm_the_config_names_never_the_best_by_test_mean(make_results, tmp_path):
    """Procrustes scores highest on the test rows, the config names FC: every "LangAlign" claim reads FC. A
    config that names no arm gets no LangAlign claim at all (the page says why), not the best arm by test mean;
    and a config cannot name an arm its grid does not run."""
    from embedstore.base.errors import ConfigError
    from embedstore.study.cells import load_config

    results, configs = tmp_path / "results", tmp_path / "configs"
    results.mkdir()
    write_study(results, configs)
    page = make_results.page(results, tmp_path / "plots", configs)
    assert "LangAlign (fc 5k pairs) above English-only" in page and "LangAlign (procrustes" not in page
    assert "(fc, 5k pairs, the arm each study's config names" in make_results.headlines(results, configs)["studies"]

    (configs / f"{STUDY}.toml").write_text(CONFIG.format(claims=""), encoding="utf-8")
    page = make_results.page(results, tmp_path / "plots", configs)
    assert "no LangAlign arm named in the config's `[claims]`" in page
    assert "pairs) above English-only" not in page
    assert "studies" not in make_results.headlines(results, configs)

    for wrong, message in (('{ aligner = "ae", pairs = "5k" }', "'ae' is not in the grid's aligners"),
                           ('{ aligner = "fc", pairs = "1k" }', "'1k' is not among the grid's pair sizes"),
                           ('{ aligner = "fc" }', "needs both aligner and pairs")):
        (configs / f"{STUDY}.toml").write_text(CONFIG.format(claims=f"[claims]\nlangalign = {wrong}\n"))
        with pytest.raises(ConfigError, match=message):
            load_config(configs / f"{STUDY}.toml")


def test_the_arm_chosen_on_validation_is_decided_beside_the_named_one(make_results, tmp_path):
    """Each seed's LangAlign arm is the one with the highest validation kappa, never the best on the test rows:
    FC at seeds 0 and 1, Procrustes (the best on the test rows) at seed 2. The page and the README decide that
    per-seed arm against English-only through the verdict rule, beside the named arm, and say what was chosen."""
    from embedstore.study.predictions import PredictionReader
    from embedstore.study.sweep import read_results
    from embedstore.study.verdicts import compare, select

    results, configs = tmp_path / "results", tmp_path / "configs"
    results.mkdir()
    write_study(results, configs, validation={"fc": [0.7, 0.6, 0.3], "procrustes": [0.5, 0.5, 0.4]})
    records = read_results(results / f"{STUDY}.jsonl")

    def expected_at(task_size):
        chosen = [r for r in select(records, method="langalign", task_size=task_size)
                  if (r["cell"]["aligner"], r["cell"]["seed"]) in {("fc", 0), ("fc", 1), ("procrustes", 2)}]
        return compare(chosen, select(records, method="english", task_size=task_size),
                       rows=PredictionReader(results / f"{STUDY}.jsonl"),
                       labels=("LangAlign (chosen on validation)", "English-only"))

    expected = expected_at(500)
    page = make_results.page(results, tmp_path / "plots", configs)
    line = next(line for line in page.splitlines()
                if line.startswith(f"- {make_results.CHOSEN} above English-only, task size 500: "))
    assert expected.describe() in line
    assert "chosen per seed by validation kappa among fc 5k, procrustes 5k: fc 5k × 2, procrustes 5k × 1" in line
    assert line.endswith(f"**{expected.statement}**")
    assert "LangAlign (fc 5k pairs) above English-only, task size 500" in page  # the named arm's claim stays
    studies = make_results.headlines(results, configs)["studies"]
    assert "With the arm chosen per seed on held-out translated pairs" in studies
    headline = expected_at(2000)  # the README cites the largest task size
    assert f"ko help topic {headline.mean_a:.3f} vs {headline.mean_b:.3f}" in studies

    write_study(results, configs, validation={"fc": [0.7, 0.6, 0.3], "procrustes": [0.5, 0.5]})  # one seed short
    page = make_results.page(results, tmp_path / "plots", configs)
    line = next(line for line in page.splitlines()
                if line.startswith(f"- {make_results.CHOSEN} above English-only, task size 500: "))
    assert "fewer than two LangAlign arms have a validation score at every seed" in line  # a choice of one arm
    assert "With the arm chosen per seed" not in make_results.headlines(results, configs)["studies"]


def test_the_closing_note_gives_each_questioned_claim_the_verdict_the_records_give(make_results, tmp_path):
    """Issue 26's closing note: every claim it questioned gets a line with what the records decide now, through the
    same rule as the sections above; a claim with no records to decide it says so instead of keeping its wording."""
    results, configs = tmp_path / "results", tmp_path / "configs"
    results.mkdir()
    write_study(results, configs)
    note = make_results.closing_note(results, configs)
    assert note[0] == make_results.CLOSING
    bullets = {line.split(": ", 1)[0]: line for line in note if line.startswith("- ")}
    assert len(bullets) == 10  # no frontier, adapt or earlier ja records here: their claims say "not run" or are absent
    closed_form = bullets['- "A closed-form aligner is within a point of FC"']
    path = results / f"{STUDY}.jsonl"
    at_2k = select(read_results(path), task_size=2000)  # the largest task size: the one the headlines cite
    expected = make_results._figures(compare(select(at_2k, aligner="procrustes"), select(at_2k, aligner="fc"),
                                             rows=PredictionReader(path), labels=("procrustes", "fc")))
    assert expected.startswith("0.8") and ", clearly better, Δ +0.1" in expected  # procrustes 0.80 vs fc 0.70
    assert f"5k pairs: ko {expected} (3 seeds so far)" in closed_form  # a 10-seed study's verdict on fewer says so
    assert "FC against resmlp with all pairs (2k task rows, 3 seeds): not run" in bullets['- "With all pairs FC is best"']
    assert "not run at 10 seeds yet" in bullets['- "resmlp over FC at 500 pairs"']
    assert "ko help topic: 2 decided alike at C/10, the chosen C and C×10; 2 change" in bullets[
        '- "The head\'s C" (a claim that holds at one C only)']  # FC's refit at C/10 turns its claims (2 task sizes)
    page = make_results.page(results, tmp_path / "plots", configs)
    assert page.endswith("\n".join(note))


def test_ten_seed_verdicts_mark_c_sensitivity_and_name_the_studies_not_run_yet(make_results, tmp_path):
    """The 10-seed verdicts of the closing note and the frontier paragraph: one marked **C-sensitive** where the
    heads refitted at C/10 decide it otherwise (as the study sections mark it), and a help study that has not run
    the arms named, so "ko ...; ja ..." never reads as every language."""
    results, configs = tmp_path / "results", tmp_path / "configs"
    results.mkdir()
    write_study(results, configs)
    (results / "shared-topic-ja-seeds.jsonl").write_text("", encoding="utf-8")  # its sweep has written nothing yet
    ten, rows = make_results.help_studies_at_ten(results)
    fc, english = dict(method="langalign", aligner="fc"), dict(method="english")
    said = make_results.at_ten_seeds(ten, rows, fc, english, ("fc", "English-only"))
    assert said.startswith("ko 0.6") and ", clearly better, Δ +0.1" in said  # fc drawn at 0.70, English-only 0.55
    assert "(3 seeds so far) (**C-sensitive**: at C/10 within noise, Δ +0.000 [" in said  # fc's refit: English's rows
    assert said.endswith("; ja not run at 10 seeds yet")
    assert make_results.at_ten_seeds(ten, rows, dict(method="langalign", aligner="resmlp"), english,
                                     ("resmlp", "English-only")) == ""  # no study ran it: the caller says so
    bullets = {line.split(": ", 1)[0]: line for line in make_results.closing_note(results, configs)}
    closed_form = bullets['- "A closed-form aligner is within a point of FC"']
    assert "(3 seeds so far); ja not run at 10 seeds yet." in closed_form and "C-sensitive" not in closed_form
    assert "not run at 10 seeds yet" in bullets['- "resmlp over FC at 500 pairs"']


def write_lora_ta(results_dir: Path, accuracies: tuple[float, ...], name: str = "shared-topic-ko-lora-ta") -> Path:
    """LoRA-TA cells at 500 task rows, one per seed, scored on the fixture study's 400 test rows, with how far the
    encoder moved and the fine-tuning's history as the sweep records them. An accuracy of None: a head that
    answers one class for every row (degenerate)."""
    rng = np.random.default_rng(1)
    truth = [("calc", "writer")[i % 2] for i in range(400)]
    path = results_dir / f"{name}.jsonl"
    records = []
    for seed, accuracy in enumerate(accuracies):
        if accuracy is None:
            predicted = ["calc"] * 400
        else:
            right = rng.random(400) < accuracy
            predicted = [t if ok else ("writer" if t == "calc" else "calc") for t, ok in zip(truth, right)]
        rows = RowPredictions.of(truth, predicted, "test-rows")
        cell = {"language": "ko", "task": "libreoffice-apps", "method": "lora-ta", "task_size": 500,
                "pair_size": None, "aligner": None, "seed": seed, "recipe": "default", "head": "logistic"}
        confusion = [[sum(t == a and p == b for t, p in zip(truth, predicted)) for b in ("calc", "writer")]
                     for a in ("calc", "writer")]
        metrics = {"accuracy": float(np.mean([t == p for t, p in zip(truth, predicted)])), "n": 400,
                   "labels": ["calc", "writer"], "confusion": confusion,
                   "adaptation": {"relative_weight_change": {"overall": 0.001 * (seed + 1), "largest_layer": 0.01},
                                  "mean_cosine_base_adapted": 0.999}}
        metrics["degenerate"] = degeneracy(metrics)
        val = [{"epoch": e, "val_loss": 2.0 - 0.1 * e, "val_accuracy": 0.3 + 0.05 * e} for e in range(4)]
        records.append({"cell": cell, "cell_id": f"lora{seed}", "context": "ctx", "status": "ok", "metrics": metrics,
                        "predictions": predictions.write(path, f"lora{seed}", "ctx", rows.to_payload()),
                        "provenance": {"sizes": {"n_train": 500, "n_test": 400, "finetune_epochs": 3,
                                                 "finetune_config": {"epochs": 3, "lr": 1e-5},
                                                 "finetune_best_epoch": 3, "finetune_stopped_early": False,
                                                 "finetune_val": val}}})
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_lora_ta_is_paired_with_the_studys_english_and_named_langalign_cells_through_the_verdict_rule(
        make_results, tmp_path):
    """Issue 26 item 7 on the page: LoRA-TA's own section decides it against English-only and the named LangAlign
    arm at the same seeds and task size (the paired rule, each record's predictions read from its own file), shows
    how far the encoder moved and the epochs run, and the closing note gives the same verdicts."""
    import results_lora_ta

    results, configs = tmp_path / "results", tmp_path / "configs"
    results.mkdir()
    write_study(results, configs)
    lora_path = write_lora_ta(results, (0.9, 0.9, 0.9))
    study = results / f"{STUDY}.jsonl"
    at_500 = select(read_results(study), task_size=500)
    lora = select(read_results(lora_path))
    reader = {True: PredictionReader(lora_path), False: PredictionReader(study)}
    rows = lambda r: reader[r["cell"]["method"] == "lora-ta"](r)  # noqa: E731
    english = compare(lora, select(at_500, method="english"), rows=rows, labels=("LoRA-TA", "English-only"))
    named = compare(lora, select(at_500, aligner="fc"), rows=rows, labels=("LoRA-TA", "LangAlign FC 5k"))
    assert english.winner == named.winner == "LoRA-TA" and english.interval.startswith("paired")
    section = "\n".join(results_lora_ta.section(results, configs))
    row = next(line for line in section.splitlines() if line.startswith("| `shared-topic-ko-lora-ta` | the paper's"))
    assert f"LoRA-TA clearly better: {english.describe()}" in row and f"LoRA-TA clearly better: {named.describe()}" in row
    assert "| 3 (3), 3 (3), 3 (3); cap 3 |" in row and "| 0 of 3 |" in row and "2.00e-03 ± " in row  # ‖ΔW‖/‖W‖, mean of 0.001..3
    assert "not run yet: `embedstore sweep configs/shared-topic-ko-lora-ta-lr1e-4.toml`" in section
    assert "| `shared-topic-ko-lora-ta` | 0 | " in section and "2.000, 0.300 → 1.700, 0.450" in section
    note = results_lora_ta.closing(results, configs, make_results._figures)
    assert note.startswith("ko, the paper's recipe (lr 1e-5), 3 seeds") and make_results._figures(named) in note


def test_a_degenerate_lora_ta_head_is_counted_and_left_out_of_its_verdicts(make_results, tmp_path):
    import results_lora_ta

    results, configs = tmp_path / "results", tmp_path / "configs"
    results.mkdir()
    write_study(results, configs)
    write_lora_ta(results, (0.9, None, 0.9))
    row = next(line for line in results_lora_ta.section(results, configs)
               if line.startswith("| `shared-topic-ko-lora-ta` | the paper's"))
    assert "| 1 of 3 |" in row and row.count("refused: degenerate head: LoRA-TA at seed 1 predicts 'calc'") == 2
    assert "no verdict" in results_lora_ta.closing(tmp_path / "nothing", configs)


def test_the_report_title_names_the_studys_configs_not_the_copies_that_ran_some_cells(make_results, tmp_path):
    """Cells run by a copy of the study's config under another name (results kept elsewhere, merged later) are
    counted under the config whose context id they carry; a record no config accounts for keeps its own name."""
    from embedstore.study.cells import expand, load_config
    from embedstore.study.context import context_id

    configs = tmp_path / "configs"
    write_study(tmp_path, configs)
    config = load_config(configs / f"{STUDY}.toml")
    cells = expand(config)
    records = [{"cell_id": cell.id, "context": context_id(config, cell, "fp"),
                "provenance": {"sweep": STUDY if i else "tmp-copy", "model_fingerprint": "fp"}}
               for i, cell in enumerate(cells[:3])]
    title = make_results._report_title(STUDY, records, configs)
    assert title == (f"#### Results: {STUDY} (1 records written by a copy of `configs/{STUDY}.toml` under another "
                     "name: the same cells and context ids)")
    records[0]["context"] = "other"  # not this config's cell as the config gives it
    assert make_results._report_title(STUDY, records, configs) == f"#### Results: {STUDY}, tmp-copy"


def test_fc_retrieval_is_worded_from_the_head_space_records(make_results, tmp_path):
    """The closing note's retrieval claim is worded from the head-space records when there are some (A(en) against
    A(tr) beside A(en) against raw target, with intervals over seeds and test rows) and says "no verdict" without."""
    results, configs = tmp_path / "results", tmp_path / "configs"
    results.mkdir()
    write_study(results, configs)
    retrieval = '- "FC raises cosine while losing retrieval" (FC(en) against raw target vectors)'
    before = {line.split(": ", 1)[0]: line for line in make_results.closing_note(results, configs)}[retrieval]
    assert "no study on this page has recorded it yet: no verdict" in before

    def p1(value: float) -> dict:
        return {"rows": 1000, "csls_k": 10, "forward": {"nn": {"p@1": value}, "csls": {"p@1": value + 0.05}}}

    lines = [{"cell": {"aligner": "fc", "pair_size": 1000}, "cell_id": f"fc{seed}", "held_out": {"checked": True,
              "dropped_as_fit_pairs": 0}, "retrieval": {"raw": p1(0.79), "aligned": p1(0.21), "head_space": p1(0.59)},
              "collapse": {"collapsed": True}, "collapse_head_space": {"collapsed": False}} for seed in range(3)]
    (results / "shared-topic-ko-seeds.head-space.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    after = {line.split(": ", 1)[0]: line for line in make_results.closing_note(results, configs)}[retrieval]
    assert ("ko 1,000 pairs (3 seeds, 1,000 test rows): A(en)→A(tr) 0.590 ± 0.030, A(en)→raw TR 0.210 ± 0.025, "
            "raw 0.790 ± 0.025; collapse check 0 of 3 seeds in the head's space, 3 against raw TR. FC's retrieval in the "
            "head's space lies wholly below the raw vectors' (the two intervals apart) in 1 of these 1, and wholly "
            "above A(en) against raw TR (the figure the page once cited) in 1 of 1") in after
    assert "Retrieval in the head's space" in make_results.page(results, tmp_path / "plots", configs)


def test_head_space_retrieval_scores_only_the_aligner_a_record_describes(make_results, tmp_path):
    """An aligner refitted after its record was last written (a backfill whose re-run did not reproduce the record
    overwrites the aligner it refitted) is not the record's fit: it is not scored for that record."""
    import os

    import results_head_space  # docs/, on the path while make_results is imported

    saved = tmp_path / "aligner"
    saved.mkdir()
    (saved / "config.json").write_text("{}")
    os.utime(saved / "config.json", (1_800_000_000, 1_800_000_000))  # 2027-01-15T08:00:00Z
    record = {"provenance": {"written_at": "2027-01-15T07:00:00+00:00"}}
    assert not results_head_space._fit_of(record, saved)
    record["provenance"]["backfilled"] = {"written_at": "2027-01-15T08:05:00+00:00"}  # reproduced after the refit
    assert results_head_space._fit_of(record, saved)
    assert results_head_space._fit_of({"provenance": {"written_at": "2027-01-15T09:00:00+00:00"}}, saved)


def test_half_the_gap_at_ten_seeds_is_decided_on_the_paired_interval_and_needs_the_translated_head(
        make_results, tmp_path):
    """"Self-learning recovers half the gap": recovered only where the lower end of self-learning's paired interval
    over English-only reaches half the gap to the translated-rows head; a study without that head says nothing."""
    rng = np.random.default_rng(2)
    truth = [("calc", "writer")[i % 2] for i in range(400)]
    ten, rows = {}, {}
    for lang, zero in (("ko", 0.85), ("ja", 0.56)):  # half the gap: (0.70 - 0.50) / 2 = +0.10
        path = tmp_path / f"{lang}.jsonl"
        records = []
        for method, aligner, accuracy in (("english", None, 0.50), ("translated", None, 0.70),
                                          ("langalign", "selflearn", zero)):
            for seed in range(3):
                right = rng.random(400) < accuracy
                predicted = [t if ok else ("writer" if t == "calc" else "calc") for t, ok in zip(truth, right)]
                cell_id = f"{lang}{method}{seed}"
                cell = {"language": lang, "task": "libreoffice-apps", "method": method, "task_size": 500,
                        "pair_size": None, "aligner": aligner, "seed": seed, "recipe": "default", "head": "logistic"}
                records.append({"cell": cell, "cell_id": cell_id, "context": "ctx", "status": "ok",
                                "metrics": {"accuracy": float(right.mean()), "n": 400, "degenerate": None},
                                "predictions": predictions.write(path, cell_id, "ctx",
                                                                 RowPredictions.of(truth, predicted, "t").to_payload()),
                                "provenance": {"sizes": {"n_train": 500, "n_test": 400}}})
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        ten[lang], rows[lang] = read_results(path), PredictionReader(path)
    said = dict(part.split(" ", 1) for part in make_results.half_gap_at_ten(ten, rows).split("; "))
    assert said["ko"].endswith(": recovered") and said["ja"].endswith(": not shown to be recovered")
    assert "(3 seeds so far)" in said["ko"] and ", half the gap to the translated-rows head +0.1" in said["ja"]
    without = {lang: [r for r in records if r["cell"]["method"] != "translated"] for lang, records in ten.items()}
    assert make_results.half_gap_at_ten(without, rows) == ""


def test_a_headline_of_two_arms_with_the_same_predictions_says_so_not_a_zero_interval(make_results, tmp_path) -> None:
    """The README's LoRA line printed "Δ +0.000 [+0.000, +0.000]": a bootstrap of identical rows, read as a measured
    certainty. The headline says what happened instead, as the page does."""
    results, configs = tmp_path / "results", tmp_path / "configs"
    results.mkdir()
    write_study(results, configs)
    path = results / f"{STUDY}.jsonl"
    fc = select(select(read_results(path), task_size=2000), aligner="fc")
    same = compare(fc, fc, rows=PredictionReader(path), labels=("fc", "fc again"))
    assert same.identical
    assert make_results._figures(same) == f"{same.mean_a:.3f} vs {same.mean_b:.3f}, the same prediction on every test row"


def test_the_e2e_claim_compares_one_lm_trained_run_with_each_heads_cached_arm(make_results, tmp_path):
    """Issue 26: the e2e claim's head-robustness came from e2e records named logistic against themselves named
    linear (one nn.Linear trained with the LM either way). Now one e2e arm enters both columns, each against that
    head's cached arm, and the mark says only the cached side's head varied."""
    def record(method: str, head: str, seed: int, accuracy: float) -> dict:
        aligner, pairs = (None, None) if method == "english" else ("procrustes", 5000)
        cell = {"language": "ko", "task": "t", "method": method, "task_size": 500, "pair_size": pairs,
                "aligner": aligner, "seed": seed, "recipe": "default", "head": head}
        return {"cell": cell, "cell_id": f"{method}{head}{seed}", "context": "c", "status": "ok",
                "metrics": {"accuracy": accuracy, "n": 1000, "degenerate": None},
                "provenance": {"sizes": {"n_train": 500, "n_test": 1000, "n_pairs": 5000}, "written_at": "t"}}

    records = [record(m, h, s, a + 0.001 * s) for h in ("logistic", "linear") for s in range(3)
               for m, a in (("english", 0.50), ("langalign", 0.60), ("langalign-e2e", 0.45))]
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    lines = make_results.claims_under_heads(read_results(tmp_path / "r.jsonl"), PredictionReader(tmp_path / "r.jsonl"),
                                            None)
    row = next(line for line in lines if line.startswith("| end-to-end (langalign-e2e, LM fine-tuned)"))
    logistic, linear, mark = row.split(" | ")[1:4]
    assert logistic.startswith("0.451 vs 0.601") and linear.startswith("0.451 vs 0.601")  # one e2e arm, 3 seeds
    assert mark == ("robust (the cached side's head only: the end-to-end arm is one LM-trained run in every column, "
                    "not varied) |")
