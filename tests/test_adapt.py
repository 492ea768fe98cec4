"""`adapt` (lora, simcse, align) on the tiny XLM-R: a saved HF model with its own fingerprint that encode uses
under a new key, LoRA merged into query/key only, provenance, option errors, and kill -9 → rerun resumes and
equals an uninterrupted run, for every method."""
from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel

from embedstore.base.errors import ConfigError
from embedstore.encoding.encode import embed
from embedstore.encoding.models import TUNE_FILE, model_fingerprint, resolve_model
from embedstore.encoding.options import EncodeOptions
from embedstore.text_training.adapt import AdaptRecipe, adapt, method_options
from embedstore.data.tasks import Source
from embedstore.store import Store
from kill_resume import reference_and_resumed

WORDS = {"calc": ("cell formula sheet sum column", "셀 수식 시트 합계 열"),
         "writer": ("paragraph font page text style", "단락 글꼴 페이지 텍스트 스타일"),
         "draw": ("shape line curve image arrow", "도형 선 곡선 이미지 화살표")}
FAST = {"epochs": 1, "batch_size": 8, "max_length": 24}


def write_rows(path: Path, n: int, seed: int = 0) -> Path:
    """English texts of a label's words, a 'translation' made of the same label's Korean words, the label."""
    rng = random.Random(seed)
    lines = ["en\tko\tapps"]
    for i in range(n):
        label = sorted(WORDS)[i % len(WORDS)]
        en, ko = (w.split() for w in WORDS[label])
        picks = [rng.randrange(len(en)) for _ in range(rng.randint(3, 8))]
        lines.append(f"{' '.join(en[p] for p in picks)} {i}\t{' '.join(ko[p] for p in picks)} {i}\t{label}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def source(method: str, path: Path) -> Source:
    return {"lora": Source(path, "en", label="apps"), "simcse": Source(path, "en"),
            "align": Source(path, "en", target="ko")}[method]


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> Path:
    return write_rows(tmp_path_factory.mktemp("adapt") / "rows.tsv", 48)


@pytest.mark.parametrize("method", ["lora", "simcse", "align"])
def test_adapt_saves_a_hf_model_with_its_own_fingerprint_that_encode_uses(method, tiny_model_dir, rows, tmp_path):
    out = tmp_path / method
    result = adapt(AdaptRecipe(method), source(method, rows), out, model=str(tiny_model_dir),
                   options=method_options(method, **FAST))

    assert result.steps == 6 and not (out / "checkpoints").exists()  # 43 training rows in batches of 8
    assert result.fingerprint == model_fingerprint(out) != model_fingerprint(tiny_model_dir)
    assert result.base_fingerprint == model_fingerprint(tiny_model_dir)
    assert not any("lora" in k or k.startswith("head") for k in load_file(str(out / "model.safetensors")))
    AutoModel.from_pretrained(out)  # an ordinary Hugging Face checkpoint: no peft needed to load it
    prov = json.loads((out / TUNE_FILE).read_text())["provenance"]
    assert prov["method"] == method and prov["recipe"]["method"] == method
    assert prov["data"]["train"]["rows"] + prov["data"]["val_rows"] == 48 and len(prov["data"]["train"]["sha256"]) == 64
    assert prov["base_model"]["fingerprint"] == result.base_fingerprint and prov["seed"] == 0
    first, last = result.history["epochs"][0], result.history["epochs"][-1]
    assert np.isfinite(first["val_loss"]) and np.isfinite(last["val_loss"])

    texts = ["cell formula sum", "paragraph font"]
    store = tmp_path / "s.zarr"
    adapted = embed(texts, store=store, options=EncodeOptions(model=str(out)))
    base = embed(texts, store=store, options=EncodeOptions(model=str(tiny_model_dir)))
    assert adapted.shape == (2, 32) and np.isfinite(adapted).all()
    assert not np.array_equal(adapted, base)  # the base vectors were not reused (LoRA's paper lr moves them little)
    assert len(Store.open(store).keys()) == 2  # one key per model fingerprint


def test_lora_changes_only_the_adapted_projections(tiny_model_dir, rows, tmp_path):
    out = tmp_path / "lora"
    # a large learning rate so that one epoch moves the merged weights well past float noise
    adapt(AdaptRecipe("lora"), source("lora", rows), out, model=str(tiny_model_dir),
          options=method_options("lora", **FAST, lr=1e-2))
    base, merged = load_file(str(tiny_model_dir / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert base.keys() == merged.keys()
    changed = {k for k in base if not torch.equal(base[k], merged[k])}
    assert changed and all(k.endswith(("query.weight", "key.weight")) for k in changed), sorted(changed)


@pytest.mark.heavy
@pytest.mark.parallel
def test_align_raises_pair_retrieval_on_training_pairs(tiny_model_dir, tmp_path):
    """On the tiny random model, a few epochs of pair InfoNCE must make translations find each other more often."""
    pairs = write_rows(tmp_path / "pairs.tsv", 96)
    out = tmp_path / "align"
    result = adapt(AdaptRecipe("align"), source("align", pairs), out, model=str(tiny_model_dir),
                   options=method_options("align", **{**FAST, "epochs": 4, "lr": 1e-3}))
    epochs = result.history["epochs"]
    assert epochs[-1]["val_loss"] < epochs[0]["val_loss"]
    assert result.history["epochs"][result.history["best_epoch"]]["val_accuracy"] > epochs[0]["val_accuracy"]


def test_a_tuned_models_prefix_and_identity_term_are_recorded(tiny_model_dir, rows, tmp_path):
    recipe = AdaptRecipe("align", identity_weight=1.0)
    out = tmp_path / "align-id"
    result = adapt(recipe, source("align", rows), out, model=str(tiny_model_dir), options=method_options("align", **FAST))
    assert result.provenance["recipe"] == {"method": "align", "temperature": 0.05, "identity_weight": 1.0}
    assert resolve_model(out).prefix == resolve_model(tiny_model_dir).prefix


def test_wrong_data_or_options_are_one_line_errors(tiny_model_dir, rows, tmp_path):
    with pytest.raises(ConfigError, match="method: 'dora'"):
        AdaptRecipe("dora")
    with pytest.raises(ConfigError, match="only method align"):
        AdaptRecipe("simcse", identity_weight=0.5)
    with pytest.raises(ConfigError, match="align needs translation pairs"):
        adapt(AdaptRecipe("align"), Source(rows, "en"), tmp_path / "a", model=str(tiny_model_dir))
    with pytest.raises(ConfigError, match="trains on task rows"):
        adapt(AdaptRecipe("lora"), Source(rows, "en"), tmp_path / "b", model=str(tiny_model_dir))
    with pytest.raises(ConfigError, match="lora_targets: nothing_here not found"):
        adapt(AdaptRecipe("lora", lora_targets=("nothing_here",)), source("lora", rows), tmp_path / "c",
              model=str(tiny_model_dir), options=method_options("lora", **FAST))
    assert method_options("lora").lr == 1e-5 and method_options("lora").max_length == 256
    assert method_options("lora", lr=None, epochs=2).epochs == 2


def adapt_cmd(method: str, model: Path, data: Path, out: Path) -> list[str]:
    columns = {"lora": ["--label-column", "apps"], "simcse": [], "align": ["--target-column", "ko"]}[method]
    return [sys.executable, "-m", "embedstore", "adapt", method, "--data", str(data), "--text-column", "en",
            *columns, "--out", str(out), "--model", str(model), "--epochs", "1", "--batch-size", "4",
            "--max-length", "24", "--checkpoint-every", "2", "--json"]


@pytest.mark.heavy
@pytest.mark.parametrize("method", ["lora", "simcse", "align"])
def test_sigkill_then_rerun_resumes_and_equals_an_uninterrupted_run(method, tiny_model_dir, tmp_path):
    data = write_rows(tmp_path / "rows.tsv", 96)
    reference, resumed, _ = reference_and_resumed(lambda out: adapt_cmd(method, tiny_model_dir, data, out), tmp_path,
                                                  TUNE_FILE)
    assert 0 < resumed["resumed_from_step"] < resumed["steps"] == reference["steps"]
    assert resumed["history"]["step_losses"] == reference["history"]["step_losses"]
    assert resumed["fingerprint"] == reference["fingerprint"]  # the very same weights, bit for bit


# ------------------------------------------------------------------ joint objective and encoder gradients


@pytest.fixture(scope="module")
def procrustes(tmp_path_factory) -> Path:
    from embedstore.estimators.aligners import make_aligner

    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 32)).astype(np.float32)
    out = tmp_path_factory.mktemp("al") / "procrustes"
    make_aligner("procrustes").fit(x, x + 0.1 * rng.normal(size=x.shape).astype(np.float32)).save(out)
    return out


@pytest.mark.heavy
@pytest.mark.parallel
def test_joint_finetune_adds_the_weighted_alignment_loss_and_records_it(tiny_model_dir, rows, procrustes, tmp_path):
    from embedstore.text_training.finetune import finetune
    from embedstore.text_training.options import TrainOptions

    train, test = Source(rows, "en", label="apps"), Source(rows, "ko", label="apps")
    pairs = Source(rows, "en", target="ko")
    options = TrainOptions(**FAST)
    plain = finetune(train, test, procrustes, tmp_path / "plain", model=str(tiny_model_dir), options=options)
    joint = finetune(train, test, procrustes, tmp_path / "joint", model=str(tiny_model_dir), options=options,
                     pairs=pairs, align_weight=1.0)
    # same initial model and first batch: the joint loss is the task loss plus a positive InfoNCE
    assert joint.history["step_losses"][0] > plain.history["step_losses"][0]
    assert joint.provenance["align_weight"] == 1.0 and plain.provenance["align_weight"] == 0.0
    assert joint.provenance["pairs"]["rows"] + joint.provenance["pairs"]["val_rows"] == 48
    assert "pairs" not in plain.provenance
    with pytest.raises(ConfigError, match="needs translation pairs"):
        finetune(train, test, procrustes, tmp_path / "e1", model=str(tiny_model_dir), options=options, align_weight=1.0)
    with pytest.raises(ConfigError, match="freeze_lm"):
        finetune(train, test, procrustes, tmp_path / "e2", model=str(tiny_model_dir), options=options, pairs=pairs,
                 align_weight=1.0, freeze_lm=True)


@pytest.mark.heavy
@pytest.mark.parallel
def test_encoder_gradients_report_a_cosine_per_layer(tiny_model_dir, rows):
    from embedstore.text_training.gradients import encoder_gradients, layer_of
    from embedstore.text_training.options import TrainOptions

    assert layer_of("encoder.layer.11.attention.self.query.weight") == "layer.11"
    assert layer_of("embeddings.word_embeddings.weight") == "embeddings"
    result = encoder_gradients(Source(rows, "en", label="apps"), Source(rows, "en", target="ko"), model=str(tiny_model_dir),
                               options=TrainOptions(batch_size=8, max_length=24), batches=3)
    assert list(result["layers"]) == ["embeddings", "layer.0", "layer.1"]
    for spread in [*result["layers"].values(), result["all_parameters"]]:
        assert -1 <= spread["min"] <= spread["mean"] <= spread["max"] <= 1
    assert result["gradient_norms"]["task"]["min"] > 0 and result["gradient_norms"]["alignment"]["min"] > 0
    assert result["provenance"]["model_fingerprint"] == model_fingerprint(tiny_model_dir)


# ------------------------------------------------------------------ sweep methods


@pytest.mark.heavy
@pytest.mark.parallel
def test_adapt_cells_train_one_encoder_per_context_and_join_the_report(tiny_model_dir, tmp_path):
    from typer.testing import CliRunner

    from embedstore.cli.app import app
    from embedstore.study.cells import load_config
    from embedstore.study.run import run_study
    from embedstore.study.sweep import read_results
    from test_experiments import write_config

    methods = ["english", "adapt-lora", "adapt-simcse", "adapt-align", "adapt-align+langalign"]
    cfg = write_config(tmp_path, tiny_model_dir, methods, aligners=("procrustes",))
    cfg.write_text(cfg.read_text() + "[adapt]\nepochs = 1\nbatch_size = 8\nmax_length = 24\nsize = 50\n")
    config = load_config(cfg)
    summary = run_study(config, workers=1, progress=False).summary
    assert not summary.errors, summary.errors
    records = read_results(config.results)
    assert sorted({r["cell"]["method"] for r in records}) == sorted(methods)
    base = records[0]["provenance"]["model_fingerprint"]
    adapted = [r for r in records if r["cell"]["method"].startswith("adapt-")]
    assert len(adapted) == 4 * 2  # two task sizes each
    for r in adapted:
        info = r["provenance"]["sizes"]["adapt"]
        assert info["fingerprint"] != base == info["base_fingerprint"] and info["steps"] > 0
        assert r["metrics"]["n"] == 56 == np.asarray(r["metrics"]["confusion"]).sum()
    # one adapted encoder per method and context, shared by both task sizes (and by align and align+langalign)
    dirs = {r["provenance"]["sizes"]["adapt"]["dir"] for r in adapted}
    assert len(dirs) == 3 and len(list(config.results.with_suffix(".adapt").iterdir())) == 3
    assert {r["provenance"]["sizes"]["adapt"]["rows"] for r in adapted if r["cell"]["method"] == "adapt-lora"} == {50}
    la = [r for r in adapted if r["cell"]["method"] == "adapt-align+langalign"]
    assert all(r["provenance"]["sizes"]["n_pairs"] == 100 and "aligner" in r["metrics"] for r in la)
    rep = CliRunner().invoke(app, ["report", str(config.results), "--out", str(tmp_path / "rep")])
    assert rep.exit_code == 0, rep.output
    assert "adapt-align+langalign" in (tmp_path / "rep" / "table.md").read_text()
    assert not run_study(config, workers=1, progress=False).summary.to_run


def test_adapt_options_are_checked_when_the_config_loads(tiny_model_dir, tmp_path):
    from embedstore.study.cells import load_config
    from test_experiments import write_config

    cfg = write_config(tmp_path, tiny_model_dir, ["adapt-align"], aligners=("procrustes",))
    cfg.write_text(cfg.read_text() + "[adapt]\nepoch = 1\n")
    with pytest.raises(ConfigError, match=r"adapt\.epoch: unknown key"):
        load_config(cfg)
    cfg.write_text(cfg.read_text().replace("epoch = 1", "lr = -1"))
    with pytest.raises(ConfigError, match=r"adapt\.lr"):
        load_config(cfg)


def test_cli_adapt_and_encoder_gradients_print_their_results(tiny_model_dir, rows, tmp_path):
    from typer.testing import CliRunner

    from embedstore.cli.app import app

    runner = CliRunner()
    out = tmp_path / "aligned"
    r = runner.invoke(app, ["adapt", "align", "--data", str(rows), "--text-column", "en", "--target-column", "ko",
                            "--out", str(out), "--model", str(tiny_model_dir), "--epochs", "1", "--batch-size", "8",
                            "--max-length", "24"])
    assert r.exit_code == 0, r.output
    assert "adapted model (align)" in r.output and model_fingerprint(out)[:8] in r.output.replace("\n", "")
    bad = runner.invoke(app, ["adapt", "align", "--data", str(rows), "--text-column", "en", "--out", str(tmp_path / "x"),
                              "--model", str(tiny_model_dir)])
    assert bad.exit_code == 1 and "align needs translation pairs" in bad.output
    g = runner.invoke(app, ["analyze", "encoder-gradients", "--train", str(rows), "--text-column", "en",
                            "--label-column", "apps", "--pairs", str(rows), "--model", str(tiny_model_dir),
                            "--batch-size", "8", "--batches", "2", "--max-length", "24", "--json"])
    assert g.exit_code == 0, g.output
    assert set(json.loads(g.output)["layers"]) == {"embeddings", "layer.0", "layer.1"}
