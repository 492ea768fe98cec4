"""`tune` and `finetune` on the tiny model: outputs, frozen parts, accumulation, reruns, errors, kill -9 resume;
and one real-signal run of e5-small on LibreOffice help en → ko (skipped without ../shared)."""
from __future__ import annotations

import json
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel

from embedstore.estimators.aligners import make_aligner
from embedstore.encoding.options import EncodeOptions
from embedstore.encoding.encode import embed
from embedstore.base.errors import ConfigError, InputError
from embedstore.base.history import History
from embedstore.base.metrics import classification_metrics
from embedstore.encoding.models import TUNE_FILE, model_fingerprint, resolve_model
from embedstore.data.tasks import Source
from embedstore.text_training.finetune import METHOD, RESULTS_FILE, WEIGHTS_FILE, finetune
from embedstore.text_training.options import TrainOptions
from embedstore.text_training.tune import tune
from embedstore.estimators.training import Recipe
from kill_resume import reference_and_resumed

VOCAB = {"calc": "cell formula sheet sum column", "writer": "paragraph font page text style",
         "draw": "shape line curve image arrow"}
FAST = {"epochs": 1, "batch_size": 8, "max_length": 24}
# two epochs leave torch aligners undertrained (collapsed); these tests only need some fitted aligner
QUICK_RECIPE = Recipe(lr=1e-3, batch_size=64, max_epochs=2, patience=1, weight_decay=0.0)
pytestmark = pytest.mark.filterwarnings("ignore::embedstore.estimators.aligners.CollapseWarning")


def write_task(path: Path, n: int, seed: int, column: str) -> Path:
    """Texts made of their label's words; a second text column makes the rows usable as sentence pairs."""
    rng = random.Random(seed)
    lines = [f"{column}\t{column}2\tapps"]
    for i in range(n):
        label = sorted(VOCAB)[i % len(VOCAB)]
        words = VOCAB[label].split()
        first, second = (" ".join(rng.choice(words) for _ in range(rng.randint(3, 10))) for _ in range(2))
        lines.append(f"{first} {i}\t{second}\t{label}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def one_thread():
    """Two torch threads on two cores that other jobs also use spin against each other (forward and backward of
    e5-small ran 5x slower than with one thread while this was written); one thread keeps these tests fast."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Source]:
    root = tmp_path_factory.mktemp("task")
    return {"train": Source(write_task(root / "train.tsv", 48, 0, "en"), "en", label="apps"),
            "test": Source(write_task(root / "test.tsv", 15, 1, "ko"), "ko", label="apps")}


def fitted_aligner(kind: str, out: Path, dim: int = 32, **params) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, dim)).astype(np.float32)
    y = x + 0.1 * x @ rng.normal(size=(dim, dim)).astype(np.float32)
    if kind in ("fc", "ae"):
        params = {"recipe": QUICK_RECIPE, **params}
    make_aligner(kind, **params).fit(x, y).save(out)
    return out


@pytest.fixture(scope="module")
def fc_aligner(tmp_path_factory) -> Path:
    return fitted_aligner("fc", tmp_path_factory.mktemp("fc") / "aligner")


@pytest.fixture(scope="module")
def finetuned(tiny_model_dir, data, fc_aligner, tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e") / "run"
    options = TrainOptions(**FAST)
    result = finetune(data["train"], data["test"], fc_aligner, out, model=str(tiny_model_dir), options=options)
    return result, options


def test_tune_writes_a_hf_model_with_its_own_fingerprint_that_encode_uses(tiny_model_dir, data, tmp_path, capsys):
    out = tmp_path / "tuned"
    result = tune(data["train"], out, model=str(tiny_model_dir), options=TrainOptions(**FAST), progress=True)
    # after the bar's 100 %, the step that scores and saves (minutes on a real model) says it has started
    assert "tune: training finished; scoring and saving the result" in capsys.readouterr().err

    assert result.fingerprint == model_fingerprint(out) != model_fingerprint(tiny_model_dir)
    assert result.base_fingerprint == model_fingerprint(tiny_model_dir)
    assert not (out / "checkpoints").exists()
    AutoModel.from_pretrained(out)  # an ordinary Hugging Face checkpoint: the encoder, not a classifier
    saved = load_file(str(out / "model.safetensors"))
    assert not any(k.startswith("head") for k in saved)
    record = json.loads((out / TUNE_FILE).read_text())
    prov = record["provenance"]
    assert prov["data"]["train"]["rows"] + prov["data"]["val_rows"] == 48
    assert len(prov["data"]["train"]["sha256"]) == 64 and prov["embedstore_version"] and prov["wall_time_s"] > 0
    assert prov["base_model"]["fingerprint"] == result.base_fingerprint and prov["seed"] == 0
    assert [e["epoch"] for e in result.history["epochs"]] == [0, 1]
    # the one history shape (base.history), as the aligners' and heads' loop writes it
    assert set(result.history) == set(History().to_dict()) and result.history["steps_per_epoch"] >= 1
    assert result.history["seconds"] is None and record["history"] == result.history  # the record keeps wall_time_s

    texts = ["cell formula sum", "paragraph font"]
    store = tmp_path / "s.zarr"
    tuned = embed(texts, store=store, options=EncodeOptions(model=str(out)))
    base = embed(texts, store=store, options=EncodeOptions(model=str(tiny_model_dir)))
    assert tuned.shape == (2, 32) and np.isfinite(tuned).all()
    assert not np.allclose(tuned, base)  # a separate store key, so the base vectors were not reused


def test_finetune_writes_sweep_ready_results_and_keeps_the_aligner_frozen(finetuned, tiny_model_dir, fc_aligner):
    result, _ = finetuned
    record = json.loads((result.out / RESULTS_FILE).read_text())
    assert record["method"] == result.method == METHOD
    metrics = record["metrics"]
    assert metrics["n"] == 15 and set(metrics["per_class"]) == set(VOCAB)
    confusion = np.asarray(metrics["confusion"])
    assert confusion.sum() == 15 and metrics["accuracy"] == pytest.approx(np.trace(confusion) / 15)
    f1 = [c["f1"] for c in metrics["per_class"].values()]
    assert metrics["macro_f1"] == pytest.approx(sum(f1) / len(f1))
    prov = record["provenance"]
    assert prov["model_fingerprint"] == model_fingerprint(tiny_model_dir)
    assert prov["aligner"]["class"] == "FCAligner" and prov["data"]["test"]["rows"] == 15
    assert not prov["freeze_lm"] and not prov["train_aligner"]

    weights = load_file(str(result.out / WEIGHTS_FILE))
    assert not any(k.startswith("aligner.") for k in weights), "a frozen aligner is not trained"
    base = load_file(str(tiny_model_dir / "model.safetensors"))
    name = next(k for k in base if k.endswith("layer.0.attention.self.query.weight"))
    assert not torch.equal(weights["encoder." + name.removeprefix("roberta.")], base[name]), "the LM was trained"
    assert not (result.out / "checkpoints").exists()


@pytest.mark.heavy
@pytest.mark.parallel
def test_freeze_lm_with_train_aligner_trains_aligner_and_head_only_on_pairs(tiny_model_dir, data, tmp_path):
    aligner_dir = fitted_aligner("procrustes", tmp_path / "aligner")
    train, test = (Source(t.file, t.text, pair=t.text + "2", label=t.label)
                   for t in (data["train"], data["test"]))
    result = finetune(train, test, aligner_dir, tmp_path / "run", model=str(tiny_model_dir), freeze_lm=True,
                      train_aligner=True, aligner_at_test=True, options=TrainOptions(**FAST, lr=1e-2))
    assert result.provenance["data"]["train"]["pair"] == "en2" and result.provenance["aligner_at_test"]
    assert result.metrics["n"] == 15
    weights = load_file(str(result.out / WEIGHTS_FILE))
    assert {k.split(".")[0] for k in weights} == {"aligner", "head"}
    from embedstore.estimators.aligners import load_aligner
    original = load_aligner(aligner_dir).to_torch()
    assert not torch.equal(weights["aligner.weight"], original.weight.detach())


def test_rerun_of_a_finished_run_returns_it_and_other_options_are_refused(finetuned, tiny_model_dir, data,
                                                                         fc_aligner):
    result, options = finetuned
    started = time.perf_counter()
    again = finetune(data["train"], data["test"], fc_aligner, result.out, model=str(tiny_model_dir), options=options)
    assert again.metrics == result.metrics and again.steps == result.steps
    assert time.perf_counter() - started < 10  # nothing was trained
    with pytest.raises(ConfigError, match=r"belongs to another finetune run \(different lr\)"):
        finetune(data["train"], data["test"], fc_aligner, result.out, model=str(tiny_model_dir),
                 options=TrainOptions(**{**FAST, "lr": 1e-4}))


@pytest.mark.heavy
@pytest.mark.parallel
def test_a_tuned_model_keeps_its_base_models_text_prefix(tiny_model_dir, data, tmp_path):
    # a copy named like the registry's e5 takes e5's "query: " prefix; the model tuned from it must encode with it
    base = tmp_path / "multilingual-e5-small"
    shutil.copytree(tiny_model_dir, base)
    assert resolve_model(base).prefix == "query: "
    out = tmp_path / "tuned"
    tune(data["train"], out, model=str(base), options=TrainOptions(**FAST))
    assert resolve_model(out).prefix == "query: "


@pytest.mark.heavy
@pytest.mark.parallel
def test_gradient_accumulation_equals_one_large_batch(tiny_model_dir, data, fc_aligner, tmp_path):
    # frozen LM and aligner run in eval mode and the linear head has no dropout, so no random mask depends on
    # how rows are split into forward passes: the two runs must compute the same steps
    common = {"epochs": 1, "max_length": 24, "checkpoint_every": 2}
    runs = [finetune(data["train"], data["test"], fc_aligner, tmp_path / name, model=str(tiny_model_dir),
                     freeze_lm=True, options=TrainOptions(**common, **batching))
            for name, batching in (("whole", {"batch_size": 16}), ("accum", {"batch_size": 8, "grad_accum": 2}))]
    whole, accum = runs
    assert whole.steps == accum.steps == 3
    np.testing.assert_allclose(whole.history["step_losses"], accum.history["step_losses"], rtol=1e-5)
    a, b = load_file(str(whole.out / WEIGHTS_FILE)), load_file(str(accum.out / WEIGHTS_FILE))
    assert a.keys() == b.keys() == {"head.weight", "head.bias"}
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=1e-5)


def test_user_errors_are_one_line_and_name_the_problem(tiny_model_dir, data, fc_aligner, tmp_path):
    cases = [
        (lambda: tune(Source(data["train"].file, "text", label="apps"), tmp_path / "a", model=str(tiny_model_dir)),
         InputError, r"train.tsv: no column 'text'; columns present: en, en2, apps"),
        (lambda: finetune(data["train"], data["test"], fitted_aligner("linear", tmp_path / "rev", reverse=True),
                          tmp_path / "b", model=str(tiny_model_dir)), ConfigError, r"reverse=True"),
        (lambda: finetune(data["train"], data["test"], fitted_aligner("meanshift", tmp_path / "d16", dim=16),
                          tmp_path / "c", model=str(tiny_model_dir)), ConfigError, r"maps 16-d vectors .* 32-d"),
        (lambda: tune(data["train"], tmp_path / "d", model=str(tiny_model_dir),
                      options=TrainOptions(device="cpu", precision="bf16")), ConfigError, r"^precision: bf16 needs"),
        (lambda: TrainOptions(grad_accum=0), ConfigError, r"^grad_accum: 0; expected a positive integer"),
        (lambda: tune(data["train"], tiny_model_dir, model=str(tiny_model_dir)), ConfigError,
         r"is not empty and is not an embedstore training run"),
    ]
    for call, error, pattern in cases:
        with pytest.raises(error, match=pattern) as info:
            call()
        assert "\n" not in str(info.value)


def test_cli_reports_a_user_error_in_one_line_and_exits_1(tiny_model_dir, data, tmp_path):
    from typer.testing import CliRunner

    from embedstore.cli.app import app

    result = CliRunner().invoke(app, ["tune", "--train", str(data["train"].file), "--text-column", "en", "--label-column",
                                      "label", "--model", str(tiny_model_dir), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"error: {data['train'].file}: no column 'label'; columns present: en, en2, apps"]


def test_finetune_refuses_a_directory_it_does_not_own_and_touches_nothing_in_it(tiny_model_dir, data, fc_aligner,
                                                                               tmp_path):
    """Issue 13 D4: `finetune --out DIR` deleted DIR/checkpoints whatever it held and exited 0."""
    from typer.testing import CliRunner

    from embedstore.cli.app import app

    out = tmp_path / "mine"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "notes.txt").write_text("my notes")
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    result = CliRunner().invoke(app, ["finetune", "--train", str(data["train"].file), "--test", str(data["test"].file),
                                      "--aligner", str(fc_aligner), "--out", str(out), "--text-column", "en",
                                      "--label-column", "apps", "--test-text-column", "ko", "--model",
                                      str(tiny_model_dir), "--epochs", "1", "--max-length", "24"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"error: out: {out} is not empty and is not an embedstore training run (no .embedstore-run.json); "
        "pass a new or empty directory"]
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # no lock file or marker left either
    assert (out / "checkpoints" / "notes.txt").read_text() == "my notes"


def interrupt(*args: object) -> None:
    raise KeyboardInterrupt


@pytest.mark.heavy
@pytest.mark.parallel
def test_an_unfinished_run_of_another_identity_is_refused(tiny_model_dir, data, fc_aligner, tmp_path):
    out = tmp_path / "run"
    options = TrainOptions(**FAST)
    with pytest.MonkeyPatch.context() as mp:  # the run dies at once, leaving only its marker (and lock file)
        mp.setattr("embedstore.text_training.run._load_encoder", interrupt)
        with pytest.raises(KeyboardInterrupt):
            finetune(data["train"], data["test"], fc_aligner, out, model=str(tiny_model_dir), options=options)
    assert (out / ".embedstore-run.json").is_file() and not (out / RESULTS_FILE).exists()
    with pytest.raises(ConfigError, match=r"belongs to another finetune run \(different seed\)"):
        finetune(data["train"], data["test"], fc_aligner, out, model=str(tiny_model_dir),
                 options=TrainOptions(**FAST, seed=1))
    resumed = finetune(data["train"], data["test"], fc_aligner, out, model=str(tiny_model_dir),
                       options=TrainOptions(**FAST, device="cpu"))  # where it runs may change
    assert resumed.steps > 0 and (out / RESULTS_FILE).is_file()


def test_removing_checkpoints_deletes_only_what_checkpoints_are_made_of(tmp_path):
    from embedstore.text_training.checkpoints import Checkpoints

    ckpt = Checkpoints(tmp_path)
    ours = ["step-00000004", ".step-00000006.partial-x1y2", "best-step-00000004.safetensors",
            ".best-step-00000006.safetensors.partial-abc"]
    for name in ours:
        (ckpt.root / name).mkdir(parents=True) if "safetensors" not in name else (ckpt.root / name).touch()
    (ckpt.root / "step-00000004" / "state.json").write_text("{}")
    theirs = ["notes.txt", "step-notes", ".hidden"]
    for name in theirs:
        (ckpt.root / name).write_text("keep")
    ckpt.remove_partial()
    assert sorted(p.name for p in ckpt.root.iterdir()) == sorted(theirs + ours[0:3:2])
    ckpt.remove()
    assert sorted(p.name for p in ckpt.root.iterdir()) == sorted(theirs)
    for name in theirs:
        (ckpt.root / name).unlink()
    ckpt.remove()
    assert not ckpt.root.exists()


def test_classification_metrics_count_unseen_labels_as_classes():
    m = classification_metrics(["a", "a", "b", "c"], ["a", "b", "b", "b"])
    assert m["accuracy"] == 0.5
    assert m["labels"] == ["a", "b", "c"] and m["confusion"] == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]
    assert m["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.5 + 0.0) / 3)


def finetune_cmd(model: Path, data: dict[str, Source], aligner: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "embedstore", "finetune", "--train", str(data["train"].file), "--test", str(data["test"].file),
            "--text-column", "en", "--test-text-column", "ko", "--label-column", "apps", "--aligner", str(aligner),
            "--out", str(out), "--model", str(model), "--epochs", "1", "--batch-size", "8", "--max-length", "24",
            "--checkpoint-every", "2", "--head", "mlp", "--json"]


@pytest.mark.heavy
def test_sigkill_then_rerun_resumes_from_a_checkpoint_and_equals_an_uninterrupted_run(tiny_model_dir, data,
                                                                                        fc_aligner, tmp_path):
    reference, resumed, out = reference_and_resumed(lambda out: finetune_cmd(tiny_model_dir, data, fc_aligner, out),
                                                    tmp_path, RESULTS_FILE)
    assert 0 < resumed["resumed_from_step"] < resumed["steps"] == reference["steps"]
    assert resumed["history"]["step_losses"] == reference["history"]["step_losses"]
    assert resumed["metrics"] == reference["metrics"]
    got, want = load_file(str(out / WEIGHTS_FILE)), load_file(str(tmp_path / "ref" / WEIGHTS_FILE))
    assert got.keys() == want.keys()
    for name in want:
        assert torch.equal(got[name], want[name]), name


@pytest.mark.real
def test_real_e5_small_en_to_ko_loss_falls_and_korean_accuracy_beats_majority(shared_data, e5_small_dir, tmp_path):
    from embedstore.data.texts import read_table

    table = read_table(shared_data / "parallel" / "libreoffice_help.en-ko.tsv", ["en", "ko", "apps", "fold"])
    classes = ("shared", "calc", "writer", "impress")  # the four largest apps, balanced: majority rate = 1/4

    def rows(folds: tuple[str, ...], per_class: int) -> list[int]:
        picked = {c: [i for i, (a, f) in enumerate(zip(table["apps"], table["fold"])) if a == c and f in folds]
                  for c in classes}
        return sorted(i for c in classes for i in picked[c][:per_class])

    for name, lang, picked in (("en.tsv", "en", rows(("6", "7"), 40)), ("ko.tsv", "ko", rows(("8", "9"), 40))):
        (tmp_path / name).write_text("text\tlabel\n" + "".join(f"{table[lang][i]}\t{table['apps'][i]}\n"
                                                                for i in picked), encoding="utf-8")
    # LangAlign with the cheapest aligner: English vectors shifted by the ko - en mean difference, fitted on
    # unlabelled sentences of folds 0-5 (disjoint from the task rows)
    pairs = [i for i, f in enumerate(table["fold"]) if int(f) <= 5][:96]
    options = EncodeOptions(model=str(e5_small_dir), max_length=64)
    vectors = {lang: embed([table[lang][i] for i in pairs], store=tmp_path / "s.zarr", options=options)
               for lang in ("en", "ko")}
    make_aligner("meanshift").fit(vectors["en"], vectors["ko"]).save(tmp_path / "aligner")
    # one short epoch (9 steps): the randomly initialised head needs a larger step than the default to learn in it
    result = finetune(Source(tmp_path / "en.tsv", label="label"), Source(tmp_path / "ko.tsv", label="label"), tmp_path / "aligner",
                      tmp_path / "run", model=str(e5_small_dir),
                      options=TrainOptions(epochs=1, max_length=64, head_lr=1e-2))
    epochs = result.history["epochs"]
    print(f"\nval loss {epochs[0]['val_loss']:.3f} -> {epochs[-1]['val_loss']:.3f}; ko accuracy "
          f"{result.metrics['accuracy']:.3f} (majority 0.25, {result.metrics['n']} rows); "
          f"macro-F1 {result.metrics['macro_f1']:.3f}; {result.provenance['wall_time_s']:.0f} s training")
    assert epochs[-1]["val_loss"] < epochs[0]["val_loss"]
    assert result.metrics["accuracy"] > 0.25
