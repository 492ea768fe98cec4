"""A whole sweep on the tiny model: every cached-vector method runs, records carry provenance, reports build."""
import json
import shutil

import numpy as np
import pytest
import torch
from transformers import XLMRobertaModel
from typer.testing import CliRunner

from embedstore.cli.app import app
from embedstore.study.cells import expand, load_config
from embedstore.base.errors import ConfigError
from embedstore.study.experiments import run_cell
from embedstore.estimators.aligners import load_aligner
from embedstore.estimators.training import FIT_REVISION
from embedstore.study import experiments, predictions
from embedstore.study.predictions import PredictionReader
from embedstore.study.run import run_study
from embedstore.study.verdicts import PAIRED, compare
from embedstore.study.vector_memory import RememberedVectors
from embedstore.study.sweep import read_results

TOPICS = {"calc": ["cell", "formula", "sheet", "column"], "writer": ["page", "paragraph", "font", "document"],
          "math": ["equation", "matrix", "symbol", "fraction"]}


def write_data(tmp_path):
    lines = ["en\tko\tapps\tfold"]
    for i in range(300):
        label = list(TOPICS)[i % 3]
        w = TOPICS[label]
        en = f"the {w[i % 4]} with {w[(i + 1) % 4]} item {i}"
        lines.append(f"{en}\t{w[i % 4]} {w[(i + 2) % 4]} 항목 {i}\t{label if i % 17 else label + ',calc'}\t{i % 10}")
    path = tmp_path / "data.tsv"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_config(tmp_path, model_dir, methods, aligners=("procrustes", "fc")):
    data = write_data(tmp_path)
    cfg = tmp_path / "sweep.toml"
    src = lambda text, where, extra="": (f'{{ file = "{data}", text = "{text}", {extra} '  # noqa: E731
                                          f'where = {{ fold = {json.dumps(where)} }} }}')
    cfg.write_text(f"""
name = "t"
results = "results.jsonl"
store = "s.zarr"
model = "{model_dir}"
[grid]
languages = ["ko"]
tasks = ["topic"]
methods = {json.dumps(methods)}
task_sizes = ["40", "all"]
pair_sizes = ["100"]
aligners = {json.dumps(list(aligners))}
seeds = [0]
[tasks.topic]
single_label = true
en_train = {src("en", ["6", "7"], 'label = "apps",')}
translated_train = {src("{lang}", ["6", "7"], 'label = "apps",')}
native_train = {src("{lang}", ["6", "7"], 'label = "apps",')}
test = {src("{lang}", ["8", "9"], 'label = "apps",')}
en_test = {src("en", ["8", "9"], 'label = "apps",')}
pairs = {src("en", ["0", "1", "2", "3", "4", "5"], 'target = "{lang}",')}
""")
    return cfg


METHODS = ["english", "native", "translated", "translate-test", "langalign", "reverse", "ablation-omit",
           "ablation-share"]


def test_every_method_runs_and_records_provenance(tiny_model_dir, tmp_path, monkeypatch):
    diagnosed = []
    original = experiments.fitted_alignment
    monkeypatch.setattr(experiments, "_DIAGNOSED", {})  # another test's identical cells may have filled it
    monkeypatch.setattr(experiments, "fitted_alignment", lambda *a, **k: diagnosed.append(1) or original(*a, **k))
    config = load_config(write_config(tmp_path, tiny_model_dir, METHODS))
    cells = expand(config)
    summary = run_study(config, workers=1, progress=False).summary
    assert not summary.errors, summary.errors
    records = read_results(config.results)
    # an aligner's diagnostics depend only on it, the seed and the test rows: computed once an aligner (both task
    # sizes reuse a LangAlign or reverse aligner), each cell records them, and they are a fresh computation's
    aligned = [r for r in records if r["cell"]["aligner"]]
    ids = {r["provenance"]["sizes"]["aligner_id"] for r in aligned}
    assert len(diagnosed) == len(ids) < len(aligned)
    for aligner_id in ids:
        first, *others = (r["metrics"]["aligner"] for r in aligned if r["provenance"]["sizes"]["aligner_id"] == aligner_id)
        assert all(other == first for other in others)
    fc = next(r for r in aligned if r["cell"]["method"] == "langalign" and r["cell"]["aligner"] == "fc")
    ctx = experiments._context(expand(config)[0], config)
    en, tr = (ctx.vectors(ctx.task.rows(role).texts) for role in ("en_test", "test"))
    fresh = original(load_aligner(config.results.with_suffix(".aligners") / fc["provenance"]["sizes"]["aligner_id"]),
                     en, tr, ks=(1,), seed=0)
    assert fc["metrics"]["aligner"]["cosine"]["aligned_tr"] == pytest.approx(fresh["cosine"]["aligned_tr"], abs=1e-6)
    assert fc["metrics"]["aligner"]["p1_head_space"] == fresh["retrieval"]["head_space"]["forward"]["nn"]["p@1"]
    assert fc["metrics"]["aligner"]["collapse_check"]["p1"] == fresh["collapse"]["p1"]
    # the last cell of that aligner mapped its rows from what earlier cells kept (`_mapped`): run afresh in an
    # empty memory it scores the same, through the same head (its digest is of the very training arrays)
    last = [r for r in aligned if r["provenance"]["sizes"]["aligner_id"] == fc["provenance"]["sizes"]["aligner_id"]][-1]
    monkeypatch.setattr(experiments, "_ALIGNED", RememberedVectors())
    monkeypatch.setattr(experiments, "_DIAGNOSED", {})
    again = run_cell(next(c for c in cells if c.id == last["cell_id"]), config)["metrics"]
    assert again["head"].pop("reused") is True and again["head"].pop("seconds") is not None
    assert {k: v for k, v in last["metrics"]["head"].items() if k not in ("reused", "seconds")} == again.pop("head")
    assert {k: v for k, v in last["metrics"].items() if k != "head"} == json.loads(json.dumps(again))
    assert len(records) == len(cells) == 2 * (5 + 2 * 2 * 1 + 2)
    fc = [r for r in records if r["cell"]["aligner"] == "fc"]
    assert fc and all("collapsed" in r["metrics"]["aligner"] for r in fc)  # diagnostics travel with results
    for r in fc:  # and how the fit went, in fp32 on any CPU, as the record says
        training = r["provenance"]["sizes"]["aligner_training"]
        assert training["precision"] == "fp32" and 1 <= training["best_epoch"] <= training["epochs_run"]
        assert training["fit_revision"] == FIT_REVISION
        assert r["provenance"]["precision"]["aligner"] == "fp32"
        diag = r["metrics"]["aligner"]  # FC maps target text at test time: judged in the head's space too
        if r["cell"]["method"] == "langalign":
            assert {"p1_head_space", "p1_head_space_csls", "collapse_check_head_space"} <= set(diag)
            assert diag["collapse_check_head_space"]["identity_p1"] == diag["p1_raw"]
    for r in records:  # the default (logistic) head also at C one decade either side of the C it chose
        regularisation = r["metrics"]["head_regularisation"]
        assert regularisation["C/10"]["C"] == pytest.approx(regularisation["C"] / 10)
        assert regularisation["C*10"]["C"] == pytest.approx(regularisation["C"] * 10)
        assert 0 <= regularisation["C/10"]["accuracy"] <= 1 and "macro_f1" in regularisation["C*10"]
        assert "degenerate" in regularisation["C/10"]
        kept = PredictionReader(config.results)(r).at("C/10")  # the refit's rows, kept for verdicts
        assert kept.correct.mean() == pytest.approx(regularisation["C/10"]["accuracy"])
    closed_form = [r for r in records if r["cell"]["aligner"] == "procrustes"]
    assert closed_form and not any("aligner_training" in r["provenance"]["sizes"] for r in closed_form)
    by_method = {r["cell"]["method"]: r for r in records}
    assert set(by_method) == set(METHODS)
    for r in records:
        m, p = r["metrics"], r["provenance"]
        assert m["n"] == 60 - 4  # fold 8-9 rows minus the multi-label ones
        confusion = np.asarray(m["confusion"])
        assert confusion.sum() == m["n"] and m["accuracy"] == pytest.approx(np.trace(confusion) / m["n"])
        if "aligner_at_test" in m:  # the method's figure is the one its test rows were scored with
            chosen = m["accuracy_with_aligner"] if m["aligner_at_test"] else m["accuracy_without_aligner"]
            assert m["accuracy"] == pytest.approx(chosen)
        assert p["model_fingerprint"] and p["store_key"]["model"] and p["embedstore_version"] and p["files"]["test"]["sha256"]
        if r["cell"]["method"] != "langalign-e2e":  # every cached cell says how its head's fit ended
            assert m["head"]["converged"] is True and m["head"]["C"] > 0 and m["head"]["rows"] == p["sizes"]["n_train"]
    la = by_method["langalign"]
    assert la["provenance"]["sizes"]["n_pairs"] == 100
    assert {"accuracy_without_aligner", "aligner"} <= set(la["metrics"])
    assert la["metrics"]["aligner"]["cosine"]["rows"] == 56
    share = by_method["ablation-share"]["provenance"]["sizes"]
    assert share["n_pairs"] == share["n_train"]
    # every cell keeps its per-row predictions beside the results, agreeing with its metrics, and the
    # identity of its draws: one test set for every method, one training draw per task size and seed
    reader = PredictionReader(config.results)
    for r in records:
        rows = reader(r)
        assert rows is not None and rows.correct.mean() == pytest.approx(r["metrics"]["accuracy"])
        assert r["metrics"]["degenerate"] is None or r["metrics"]["degenerate"].startswith(("predicts", "has"))
    assert len({r["provenance"]["draws"]["test"] for r in records}) == 1
    assert len({(r["cell"]["task_size"], r["provenance"]["draws"]["train"]) for r in records}) == 2
    assert len(list(predictions.directory(config.results).iterdir())) == len(records)
    english, langalign = ([r for r in records if r["cell"]["method"] == m and r["cell"]["task_size"] == 40
                           and r["cell"]["aligner"] in (None, "procrustes")] for m in ("english", "langalign"))
    assert compare(langalign, english, rows=reader).interval == PAIRED
    # rerun: nothing left to do
    again = run_study(config, workers=1, progress=False).summary
    assert len(again.skipped) == len(cells) and not again.to_run


def test_methods_that_fit_the_same_head_share_one_fit(tiny_model_dir, tmp_path):
    """English-only, translate-test, ablation-omit and reverse all train one head on the same English vectors
    under one seed: the first cell fits it and its refits at C/10 and C×10, the others reuse them from
    `<results>.heads`, and score as a fresh fit."""
    config = load_config(write_config(tmp_path, tiny_model_dir, ["english", "translate-test", "ablation-omit",
                                                                  "reverse"], aligners=("procrustes",)))
    assert not run_study(config, workers=1, progress=False).summary.errors
    records = read_results(config.results)
    for size in (40, None):
        at = {r["cell"]["method"]: r["metrics"] for r in records if r["cell"]["task_size"] == size}
        assert at["english"]["head"]["reused"] is False
        assert all(at[m]["head"]["reused"] is True for m in ("translate-test", "ablation-omit", "reverse"))
        assert at["ablation-omit"]["confusion"] == at["english"]["confusion"]  # the same head on the same test rows
        assert at["reverse"]["accuracy_without_aligner"] == at["english"]["accuracy"]
    assert len(list(config.results.with_suffix(".heads").iterdir())) == 2 * 3  # per task size: a head, 2 refits


def test_missing_role_is_a_clear_error(tiny_model_dir, tmp_path):
    cfg = write_config(tmp_path, tiny_model_dir, ["native"])
    text = cfg.read_text().replace("native_train", "#native_train")
    cfg.write_text(text)
    config = load_config(cfg)
    with pytest.raises(ConfigError, match="task topic has no 'native_train' data"):
        run_cell(expand(config)[0], config)


def test_a_fit_cached_by_another_revision_of_the_fit_arithmetic_is_not_reused(tiny_model_dir, tmp_path, monkeypatch):
    config = load_config(write_config(tmp_path, tiny_model_dir, ["langalign"], aligners=("procrustes",)))
    run_study(config, workers=1, progress=False)  # encodes the texts, fits and caches the aligner and heads
    cell = expand(config)[0]
    first = next(r for r in read_results(config.results) if r["cell_id"] == cell.id)
    again = run_cell(cell, config)
    assert not first["provenance"]["sizes"]["aligner_reused"] and again["provenance"]["sizes"]["aligner_reused"]
    assert again["metrics"]["head"]["reused"]
    monkeypatch.setattr(experiments, "FIT_REVISION", FIT_REVISION + 1)  # e.g. dropout masks drawn another way
    later = run_cell(cell, config)
    assert not later["provenance"]["sizes"]["aligner_reused"] and not later["metrics"]["head"]["reused"]
    assert later["provenance"]["sizes"]["aligner_id"] != first["provenance"]["sizes"]["aligner_id"]


def test_sweep_and_report_cli(tiny_model_dir, tmp_path):
    cfg = write_config(tmp_path, tiny_model_dir, ["english", "langalign"], aligners=("procrustes",))
    runner = CliRunner()
    dry = runner.invoke(app, ["sweep", str(cfg), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    r = runner.invoke(app, ["sweep", str(cfg), "--workers", "1"])
    assert r.exit_code == 0, r.output
    rep = runner.invoke(app, ["report", str(tmp_path / "results.jsonl"), "--out", str(tmp_path / "rep")])
    assert rep.exit_code == 0, rep.output
    table = (tmp_path / "rep" / "table.md").read_text()
    assert "langalign" in table and "english" in table and "±" in table
    assert any(p.suffix == ".png" for p in (tmp_path / "rep").iterdir())


@pytest.mark.heavy
@pytest.mark.parallel
def test_e2e_cells_train_on_text_and_join_the_report(tiny_model_dir, tmp_path):
    cfg = write_config(tmp_path, tiny_model_dir, ["langalign", "langalign-e2e"], aligners=("procrustes",))
    cfg.write_text(cfg.read_text() + "[e2e]\nepochs = 1\nbatch_size = 8\nmax_length = 32\n")
    config = load_config(cfg)
    summary = run_study(config, workers=1, progress=False).summary
    assert not summary.errors, summary.errors
    records = read_results(config.results)
    e2e = [r for r in records if r["cell"]["method"] == "langalign-e2e"]
    cached = [r for r in records if r["cell"]["method"] == "langalign"]
    assert len(e2e) == len(cached) == 2
    for r in e2e:
        sizes = r["provenance"]["sizes"]
        confusion = np.asarray(r["metrics"]["confusion"])
        assert r["metrics"]["n"] == 56 == confusion.sum()
        assert r["metrics"]["accuracy"] == pytest.approx(np.trace(confusion) / 56)
        assert sizes["finetune_steps"] > 0 and sizes["finetune_epochs"] == 1 and sizes["n_pairs"] == 100
        assert sizes["finetune_config"]["max_length"] == 32 and sizes["aligner_reused"]  # langalign's aligner
        kept = PredictionReader(config.results)(r)  # per-row predictions, so its verdicts' intervals are exact
        assert kept is not None and kept.test_ids == r["provenance"]["draws"]["test"]
        assert np.mean(kept.correct) == pytest.approx(r["metrics"]["accuracy"])
    n_train = lambda rs: sorted(r["provenance"]["sizes"]["n_train"] for r in rs)  # noqa: E731
    assert n_train(e2e) == n_train(cached) and n_train(e2e)[0] == 40  # the same rows as the cached cells
    rep = CliRunner().invoke(app, ["report", str(config.results), "--out", str(tmp_path / "rep")])
    assert rep.exit_code == 0, rep.output
    assert "langalign-e2e" in (tmp_path / "rep" / "table.md").read_text()
    again = run_study(config, workers=1, progress=False).summary
    assert not again.to_run
    # other [e2e] options: the e2e cells (only they) run again, in their own directories
    cfg.write_text(cfg.read_text().replace("epochs = 1", "epochs = 2"))
    config = load_config(cfg)
    with pytest.warns(UserWarning, match="2 finished cells were computed with another"):
        changed = run_study(config, workers=1, progress=False).summary
    assert not changed.errors, changed.errors
    assert {c.method for c in changed.to_run} == {"langalign-e2e"} and len(changed.ok) == 2
    assert len(list(config.results.with_suffix(".e2e").iterdir())) == 4


def test_e2e_options_are_checked_when_the_config_loads(tiny_model_dir, tmp_path):
    cfg = write_config(tmp_path, tiny_model_dir, ["langalign-e2e"], aligners=("procrustes",))
    cfg.write_text(cfg.read_text() + "[e2e]\nepoch = 1\n")
    with pytest.raises(ConfigError, match=r"e2e\.epoch: unknown key \(did you mean 'epochs'\?\)"):
        load_config(cfg)


def test_other_weights_under_the_same_model_directory_rerun_finished_cells(tiny_model_dir, tmp_path):
    """The model's name (its directory) stays, its weights change: finished cells are stale, not finished."""
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    config = load_config(write_config(tmp_path, model, ["english"]))
    first = run_study(config, workers=1, progress=False).summary
    assert len(first.ok) == 2 and not first.errors
    before = {r["provenance"]["model_fingerprint"] for r in read_results(config.results)}
    retrained = XLMRobertaModel.from_pretrained(model)
    with torch.no_grad():
        for p in retrained.parameters():
            p.add_(0.01)
    retrained.save_pretrained(model)
    with pytest.warns(UserWarning, match="2 finished cells were computed with another model"):
        second = run_study(config, workers=1, progress=False).summary
    assert len(second.ok) == 2 and second.skipped == ()
    after = {r["provenance"]["model_fingerprint"] for r in read_results(config.results)}
    assert len(before) == len(after) == 1 and after != before  # every record now from the new weights


def test_regularisation_neighbours_refit_the_head_a_decade_either_side_of_its_C():
    """What the verdict code calls to re-check a claim at C/10 and C×10: the same rows, predictions in test order."""
    from embedstore.estimators.heads import make_head
    from embedstore.study.experiments import HeadInputs, regularisation_neighbours

    rng = np.random.default_rng(0)
    x = rng.standard_normal((120, 6)).astype(np.float32)
    y = np.where(x[:, 0] + 0.5 * rng.standard_normal(120) > 0, "a", "b").tolist()
    inputs = HeadInputs(x[:80], y[:80], x[80:], y[80:], {}, {"test": "rows"})
    head = make_head("logistic", C=0.05).fit(inputs.train_x, inputs.train_y)
    around = regularisation_neighbours(head, inputs)
    assert [around[k]["C"] for k in ("C/10", "C*10")] == pytest.approx([0.005, 0.5])
    strong = make_head("logistic", C=0.005).fit(inputs.train_x, inputs.train_y).predict(inputs.test_x)
    np.testing.assert_array_equal(around["C/10"]["predicted"], strong)
    assert regularisation_neighbours(make_head("linear").fit(inputs.train_x, inputs.train_y), inputs) == {}


def test_a_study_of_lora_ta_alone_encodes_nothing_but_still_reads_its_task_files(tiny_model_dir, tmp_path):
    """lora-ta fine-tunes the encoder and scores with it: the store's vectors are never read, so `prepare` must not
    spend an encode on them (on a shared CPU that was 48 minutes for the help study's 4,275 texts); a task table
    with a wrong column still fails before any cell runs."""
    from embedstore.base.errors import InputError
    from embedstore.study.experiments import texts_needed

    cfg = write_config(tmp_path, tiny_model_dir, ["lora-ta"])
    config = load_config(cfg)
    assert texts_needed(expand(config), config) == []
    both = load_config(write_config(tmp_path, tiny_model_dir, ["lora-ta", "english"]))
    assert len(texts_needed(expand(both), both)) > 0  # a method that reads vectors still gets them all
    cfg.write_text(cfg.read_text().replace('text = "en", label = "apps"', 'text = "nope", label = "apps"', 1))
    broken = load_config(cfg)
    with pytest.raises((ConfigError, InputError), match="nope"):
        texts_needed(expand(broken), broken)


@pytest.mark.heavy
@pytest.mark.parallel
def test_lora_ta_cells_train_on_translated_rows_and_keep_row_predictions(tiny_model_dir, tmp_path):
    """The paper's LoRA-TA as a method of its own: its cell trains on the translated rows (not English ones),
    scores the native test rows with its own head, records how far the encoder moved, and keeps row predictions."""
    cfg = write_config(tmp_path, tiny_model_dir, ["translated", "lora-ta"])
    text = cfg.read_text().replace('task_sizes = ["40", "all"]', 'task_sizes = ["40"]')
    text = "\n".join(line for line in text.splitlines() if not line.startswith(("aligners =", "pair_sizes =")))
    cfg.write_text(text + "\n[adapt]\nepochs = 1\nbatch_size = 8\nmax_length = 24\n")
    config = load_config(cfg)
    summary = run_study(config, workers=1, progress=False).summary
    assert not summary.errors, summary.errors
    records = {r["cell"]["method"]: r for r in read_results(config.results)}
    lora, translated = records["lora-ta"], records["translated"]
    assert lora["metrics"]["n"] == 56 and lora["provenance"]["sizes"]["n_train"] == 40
    assert lora["provenance"]["draws"] == translated["provenance"]["draws"]  # the same rows as `translated`
    assert lora["provenance"]["sizes"]["finetune_config"]["lr"] == 1e-5  # the paper's recipe, [adapt] on top
    assert set(lora["metrics"]["adaptation"]) == {"relative_weight_change", "mean_cosine_base_adapted"}
    assert "predictions" in lora and lora["provenance"]["precision"] == {"text": "fp32"}
    sizes = lora["provenance"]["sizes"]  # what the page reports: epochs run, the kept epoch, validation per epoch
    assert sizes["finetune_epochs"] == 1 and sizes["finetune_best_epoch"] in (0, 1)
    assert [e["epoch"] for e in sizes["finetune_val"]] == [0, 1] and sizes["finetune_stopped_early"] is False
