"""LoRA-TA as the paper ran it, on the tiny XLM-R: adapters and a task head trained together on translated task
rows, that head scoring native rows, with how far the encoder moved."""
from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from embedstore.text_training.adapt import AdaptRecipe, method_options
from embedstore.data.tasks import Source
from embedstore.text_training.lora_ta import METHOD, lora_ta
from test_adapt import write_rows  # the adapt tests' rows: label words in English and "Korean"

FAST = {"epochs": 2, "batch_size": 8, "max_length": 24}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora_ta")
    return write_rows(root / "translated.tsv", 40, seed=1), write_rows(root / "native.tsv", 12, seed=2)


def test_lora_ta_trains_adapters_and_head_on_translated_rows_and_scores_native_ones(tiny_model_dir, files, tmp_path):
    translated, native = files
    options = method_options("lora", **FAST, lr=1e-3)  # a tiny random model needs a larger step to move at all
    result = lora_ta(Source(translated, "ko", label="apps"), Source(native, "ko", label="apps"), tmp_path / "run",
                     model=str(tiny_model_dir), options=options)
    assert result.method == METHOD and result.metrics["n"] == 12 and 0 <= result.metrics["accuracy"] <= 1
    change, cosine = (result.metrics["adaptation"][k] for k in ("relative_weight_change", "mean_cosine_base_adapted"))
    assert 0 < change["overall"] <= change["largest_layer"]  # the adapters moved the weights, a little
    assert -1 <= cosine < 1  # and so the vectors: not the base encoder's any more
    saved = load_file(str(tmp_path / "run" / "model.safetensors"))
    assert any("lora_A" in k for k in saved) and any(k.startswith("head") for k in saved)
    assert not any("lora" not in k and k.startswith("encoder") for k in saved)  # only adapters of the LM trained
    assert all(".query." in k or ".key." in k for k in saved if "lora" in k)  # the paper's targets
    prov = result.provenance
    assert prov["recipe"] == AdaptRecipe("lora").to_record() == {
        "method": "lora", "lora_r": 8, "lora_alpha": 8, "lora_dropout": 0.1, "lora_targets": ["query", "key"]}
    assert prov["config"]["batch_size"] == 8 and prov["data"]["val_rows"] > 0  # early stopping on a split
    assert json.loads((tmp_path / "run" / "results.json").read_text())["metrics"] == result.metrics
    again = lora_ta(Source(translated, "ko", label="apps"), Source(native, "ko", label="apps"), tmp_path / "run",
                    model=str(tiny_model_dir), options=options)
    assert again.metrics == result.metrics  # a finished run returns its result


def test_the_papers_recipe_is_the_default():
    options = method_options("lora")
    assert (options.batch_size, options.lr, options.max_length) == (16, 1e-5, 256)


def test_the_lora_ta_command_runs_the_papers_method_and_prints_how_far_the_encoder_moved(tiny_model_dir, files,
                                                                                          tmp_path):
    from typer.testing import CliRunner

    from embedstore.cli.app import app

    translated, native = files
    args = ["lora-ta", "--train", str(translated), "--test", str(native), "--text-column", "ko", "--label-column",
            "apps", "--out", str(tmp_path / "run"), "--model", str(tiny_model_dir), "--epochs", "1",
            "--batch-size", "8", "--max-length", "24", "--lr", "1e-3", "--lora-r", "4"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "lora-ta on" in result.output and "‖ΔW‖/‖W‖" in result.output and "mean cosine base vs adapted" in result.output
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["provenance"]["recipe"]["lora_r"] == 4 and saved["provenance"]["config"]["batch_size"] == 8
    assert saved["provenance"]["config"]["lr"] == 1e-3 and saved["metrics"]["n"] == 12
