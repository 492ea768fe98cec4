"""EMBEDSTORE_MODEL and embedstore.toml reach every command that takes a model (issue 30.1): each command is run
up to the library function it calls, which records the model it was given and stops; flags still win. One rule
says what a path is, and the sweep config, the settings file and the model resolver all follow it."""
from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from embedstore.base.errors import EmbedstoreError
from embedstore.encoding.models import is_model_path
from embedstore.encoding.settings import ENV
from embedstore.cli.app import app


class Reached(EmbedstoreError):
    """Raised by the stand-in library functions: the command got this far."""


def _model_of(value) -> str:
    """The model in whatever the library function was given: a name, EncodeOptions or a sweep config."""
    return str(getattr(value, "model", value))


# command line → (module, function, how the function receives the model)
COMMANDS = {
    "tune": (["tune", "--train", "t.tsv", "--out", "o"], "embedstore.text_training.tune", "tune", "model"),
    "finetune": (["finetune", "--train", "t.tsv", "--test", "t.tsv", "--aligner", "al", "--out", "o"],
                 "embedstore.text_training.finetune", "finetune", "model"),
    "adapt": (["adapt", "simcse", "--data", "t.tsv", "--out", "o"], "embedstore.text_training.adapt", "adapt",
              "model"),
    "lora-ta": (["lora-ta", "--train", "t.tsv", "--test", "t.tsv", "--out", "o"], "embedstore.text_training.lora_ta",
                "lora_ta", "model"),
    "analyze encoder-gradients": (["analyze", "encoder-gradients", "--train", "t.tsv", "--pairs", "t.tsv"],
                                  "embedstore.text_training.gradients", "encoder_gradients", "model"),
    "demo": (["demo"], "embedstore.study.demo", "run_demo", "model"),
    "models pull": (["models", "pull"], "embedstore.encoding.models", "pull", 0),
    "encode": (["encode", "t.tsv"], "embedstore.api", "encode_files", "encoding"),
    "train-aligner": (["train-aligner", "--pairs", "t.tsv", "--target-column", "ko", "--out", "o"],
                      "embedstore.api", "train_aligner", "encoding"),
    "train-head": (["train-head", "--train", "t.tsv", "--out", "o"], "embedstore.api", "train_head", "encoding"),
    "mine": (["mine", "t.tsv", "t.tsv", "--out", "o.tsv"], "embedstore.analysis.mining", "run_mine", "options"),
    "analyze cosine": (["analyze", "cosine", "t.tsv"], "embedstore.analysis.runs", "run_cosine", "options"),
    "analyze retrieval": (["analyze", "retrieval", "t.tsv"], "embedstore.analysis.runs", "run_retrieval", "options"),
    "analyze layers": (["analyze", "layers", "t.tsv"], "embedstore.analysis.runs", "run_layers", "options"),
    "analyze gradients": (["analyze", "gradients", "t.tsv", "--label-column", "apps"], "embedstore.analysis.runs",
                          "run_gradients", "options"),
    "sweep": (["sweep", "sweep.toml"], "embedstore.study.run", "run_study", 0),
}

SWEEP = """
name = "s"
[grid]
languages = ["ko"]
tasks = ["t"]
methods = ["english"]
task_sizes = ["all"]
seeds = [0]
[tasks.t]
en_train = { file = "t.tsv", text = "en", label = "apps" }
test = { file = "t.tsv", text = "ko", label = "apps" }
"""


@pytest.fixture
def project(tmp_path, monkeypatch):
    for variable in ENV.values():
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.tsv").write_text("en\tko\tapps\nhello\t안녕\ta\n")
    (tmp_path / "sweep.toml").write_text(SWEEP)
    for name in ("from-env", "from-file", "from-flag"):
        (tmp_path / "models" / name).mkdir(parents=True)
    return tmp_path


def _run(monkeypatch, name: str, extra: list[str] = ()) -> str:
    import importlib

    argv, module, function, where = COMMANDS[name]
    seen: list[str] = []

    def stand_in(*args, **kwargs):
        seen.append(_model_of(args[where] if isinstance(where, int) else kwargs[where]))
        raise Reached("reached")

    monkeypatch.setattr(importlib.import_module(module), function, stand_in)
    result = CliRunner().invoke(app, [*argv, *extra])
    assert "reached" in result.output and seen, f"{name}: {result.output}"
    return seen[0]


@pytest.mark.parametrize("name", list(COMMANDS))
def test_the_environment_and_the_file_reach_the_command_and_a_flag_wins(project, monkeypatch, name):
    (project / "embedstore.toml").write_text('model = "./models/from-file"\n')
    assert _run(monkeypatch, name) == str(project / "models" / "from-file")
    monkeypatch.setenv("EMBEDSTORE_MODEL", "./models/from-env")
    assert _run(monkeypatch, name) in ("./models/from-env", str(project / "models" / "from-env"))
    if name not in ("models pull", "sweep"):  # pull takes the model as its argument; a sweep's is in its config
        assert _run(monkeypatch, name, ["--model", "./models/from-flag"]) == "./models/from-flag"


def test_models_pull_takes_the_model_as_its_argument(project, monkeypatch):
    monkeypatch.setenv("EMBEDSTORE_MODEL", "./models/from-env")
    argv = COMMANDS["models pull"][0]
    COMMANDS["models pull"] = ([*argv, "./models/from-flag"], *COMMANDS["models pull"][1:])
    try:
        assert _run(monkeypatch, "models pull") == "./models/from-flag"
    finally:
        COMMANDS["models pull"] = (argv, *COMMANDS["models pull"][1:])


def test_a_sweep_config_s_own_model_wins(project, monkeypatch):
    monkeypatch.setenv("EMBEDSTORE_MODEL", "./models/from-env")
    (project / "sweep.toml").write_text('model = "./models/from-flag"\n' + SWEEP)
    assert _run(monkeypatch, "sweep") == str(project / "models" / "from-flag")


def test_the_library_functions_take_the_project_model_when_given_none(project, monkeypatch):
    from embedstore.encoding.settings import model_with_settings

    assert model_with_settings(None) == "multilingual-e5-small"
    (project / "embedstore.toml").write_text('model = "./models/from-file"\n')
    assert model_with_settings(None) == str(project / "models" / "from-file")
    monkeypatch.setenv("EMBEDSTORE_MODEL", "org/name")
    assert model_with_settings(None) == "org/name"
    assert model_with_settings(Path("x/y/z")) == "x/y/z"


@pytest.mark.parametrize("text, is_path", [
    ("multilingual-e5-small", False), ("intfloat/multilingual-e5-small", False), ("a/b/c", True),
    ("./m", True), ("../m", True), ("/abs/m", True), ("~/m", True), (".hidden", True)])
def test_one_rule_says_what_a_path_is(text, is_path):
    assert is_model_path(text) is is_path


def test_a_sweep_config_resolves_a_nested_relative_model_against_itself(project):
    from embedstore.study.cells import load_config

    (project / "sweep.toml").write_text('model = "models/from-file/x"\n' + SWEEP)
    assert load_config(project / "sweep.toml").model == str(project / "models" / "from-file" / "x")


# commands that load a saved pipeline: its manifest pins the weights, so the settings name only the directory of a
# model the pipeline recorded as a path (a recorded name is not overridden by them)
PIPELINE_COMMANDS = {
    "evaluate": ["evaluate", "--pipeline", "pipe", "--test", "t.tsv", "--label-column", "apps"],
    "predict": ["predict", "--pipeline", "pipe", "hello"],
    "export": ["export", "--pipeline", "pipe", "--format", "onnx", "out"],
}


@pytest.mark.parametrize("name", list(PIPELINE_COMMANDS))
def test_the_environment_and_the_file_name_a_pipeline_s_model_directory_and_a_flag_wins(project, monkeypatch, name):
    """Issue 30.1 for evaluate, predict and export: the model the pipeline loads (`EncodeOptions.resolve`, before
    anything else of the model is read) is the one EMBEDSTORE_MODEL, embedstore.toml or --model names."""
    import json

    from embedstore.encoding.options import EncodeOptions

    (project / "pipe" / "head").mkdir(parents=True)
    (project / "pipe" / "pipeline.json").write_text(json.dumps({
        "kind": "pipeline", "store": "s.zarr", "aligner": None, "head": "head",
        "encoding": {"model": "./models/recorded", "fingerprint": "0" * 16, "layers": [-1]}}))
    seen: list[str] = []

    def resolve(options, *args, **kwargs):
        seen.append(options.model)
        raise Reached("reached")

    monkeypatch.setattr(EncodeOptions, "resolve", resolve)

    def run(extra: list[str] = ()) -> str:
        seen.clear()
        result = CliRunner().invoke(app, [*PIPELINE_COMMANDS[name], *extra])
        assert "reached" in result.output and seen, f"{name}: {result.output}"
        return seen[0]

    result = CliRunner().invoke(app, PIPELINE_COMMANDS[name])
    assert result.exit_code != 0 and "paths in a saved pipeline are not followed" in " ".join(result.output.split())
    (project / "embedstore.toml").write_text('model = "./models/from-file"\n')
    assert run() == str(project / "models" / "from-file")
    monkeypatch.setenv("EMBEDSTORE_MODEL", "./models/from-env")
    assert run() in ("./models/from-env", str(project / "models" / "from-env"))
    assert run(["--model", "./models/from-flag"]) == "./models/from-flag"
