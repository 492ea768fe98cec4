"""The README runs as written: every command of its tour, its Python examples and its shell export block, in the
order the README gives them, on the bundled sample, from a directory laid out like the repository's root.

The fast tier puts a tiny 12-layer model in through EMBEDSTORE_MODEL, the way a user sets a model once (so the
tour's layer numbers are valid); the heavy tier runs the real default model the same way. A command that fails
fails the test with the README line and the command's output.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SAMPLE = REPO / "embedstore" / "data" / "libreoffice_help.en-ko.sample.tsv"
FIRST_SECTION = "## A tour"
LAST_SECTION = "## Data"


def readme_blocks() -> list[tuple[str, str]]:
    """(language, code) of every fenced bash/python block from the tour up to the data section, in order."""
    text = README.read_text(encoding="utf-8")
    text = text[text.index(FIRST_SECTION):text.index(LAST_SECTION)]
    return re.findall(r"```(bash|python)\n(.*?)```", text, re.S)


def shell_commands(code: str) -> list[str]:
    """One string per command of a bash block (continuation lines joined, comments and blank lines dropped)."""
    return [line for line in code.replace("\\\n", " ").splitlines() if shlex.split(line, comments=True)]


@pytest.fixture(scope="module")
def tour_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """The tiny XLM-R fixture with e5-small's 12 layers (still 32-d), so every layer the tour names exists."""
    import torch
    from transformers import AutoConfig, XLMRobertaModel

    out = tmp_path_factory.mktemp("tour-model")
    config = AutoConfig.from_pretrained(tiny_model_dir)
    config.num_hidden_layers = 12
    torch.manual_seed(0)
    XLMRobertaModel(config).eval().save_pretrained(out)
    for f in tiny_model_dir.iterdir():
        if f.name.startswith("tokenizer") or f.suffix == ".model":
            shutil.copy2(f, out / f.name)
    return out


def _repository_layout(root: Path) -> None:
    """What the tour reads from a clone: the bundled sample and the sample config."""
    (root / "embedstore" / "data").mkdir(parents=True)
    shutil.copy2(SAMPLE, root / "embedstore" / "data" / SAMPLE.name)
    (root / "configs").mkdir()
    shutil.copy2(REPO / "configs" / "sample-ko.toml", root / "configs" / "sample-ko.toml")


def _run_shell(command: str, variables: dict[str, str]) -> None:
    from typer.testing import CliRunner

    from embedstore.cli.app import app

    words = [os.path.expandvars(w) for w in shlex.split(command, comments=True)]
    if len(words) == 1 and "=" in words[0]:
        name, value = words[0].split("=", 1)
        variables[name] = os.environ[name] = value
        return
    if words[0] == "embedstore":
        result = CliRunner().invoke(app, words[1:])
        assert result.exit_code == 0, f"{command}\n{result.output}"
    elif words[:2] == ["python", "-c"]:
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(words[2], command, "exec"), {})
    elif words[0] == "torchrun":
        done = subprocess.run([sys.executable, "-m", "torch.distributed.run", *words[1:]], capture_output=True,
                              text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    else:
        raise AssertionError(f"the README's tour runs a command this test does not know: {command}")


def run_readme(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: Path) -> list[str]:
    """Runs every block; returns the stdout lines of the Python blocks."""
    pytest.importorskip("sentence_transformers")
    _repository_layout(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EMBEDSTORE_CACHE", raising=False)
    monkeypatch.delenv("EMBEDSTORE_STORE", raising=False)
    monkeypatch.setenv("EMBEDSTORE_MODEL", str(model))
    variables: dict[str, str] = {}
    printed = io.StringIO()
    for language, code in readme_blocks():
        if language == "python":
            with contextlib.redirect_stdout(printed):
                exec(compile(code, str(README), "exec"), {})
            continue
        for command in shell_commands(code):
            _run_shell(command, variables)
    for name in variables:
        monkeypatch.delenv(name, raising=False)
    return printed.getvalue().splitlines()


def _check_outputs(tmp_path: Path, lines: list[str]) -> None:
    assert re.fullmatch(r"\S+ 0\.\d+", lines[0])  # the primary result's name and its accuracy
    assert re.fullmatch(r"\S+ \(1, \d+\)", lines[1])  # a label; the probabilities' shape
    for made in ("cache/al/config.json", "cache/pipe/pipeline.json", "cache/pipe-st/modules.json",
                 "cache/sample-ko.jsonl", "cache/tuned/config.json", "cache/aligned/config.json",
                 "cache/merged.zarr", "mined.en-ko.tsv"):
        assert (tmp_path / made).exists(), made
    assert not (tmp_path / "cache" / "models").exists()  # every command took the project's model, none the default


def test_the_readme_runs_as_written(tour_model_dir, tmp_path, monkeypatch):
    _check_outputs(tmp_path, run_readme(tmp_path, monkeypatch, tour_model_dir))


@pytest.mark.heavy
def test_the_readme_runs_as_written_with_the_real_model(e5_small_dir, tmp_path, monkeypatch):
    _check_outputs(tmp_path, run_readme(tmp_path, monkeypatch, e5_small_dir))
