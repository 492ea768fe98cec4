"""The README runs as written: every command of its tour, its Python examples and its shell export block, in the
order the README gives them, on the bundled sample, from a directory laid out like the repository's root.

The fast tier puts a tiny 12-layer model in through EMBEDSTORE_MODEL, the way a user sets a model once (so the
tour's layer numbers are valid), and runs every command but the heavy lines (`heavy_line`: the int8 encode, the
torchrun encode and the merge of its store), which the heavy tier runs as written on the same tiny model. The heavy tier also runs, on the real default model set the same way, the
commands whose result depends on real vectors: encode, the aligner, the head behind it, evaluate, predict and the
Python examples (Parquet input, the sentence-transformers export and its check, the store); its pipeline must beat
the majority class on the Korean test rows. The other commands (sweep, demo, analyses, tune, finetune, adapt, mine,
torchrun, merge, the shell exports) are proved by the tiny tour; on the real model they only cost minutes. A command that fails fails the test with the README line and the command's output.
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
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import SAMPLE, real_sample_rows, write_sample

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
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


def _repository_layout(root: Path, sample_rows: Callable[[str, int], bool]) -> Path:
    """What the tour reads from a clone: the bundled sample (the rows `sample_rows(fold, row)` keeps) and the
    sample config. Returns the sample's path."""
    sample = write_sample(root / "embedstore" / "data" / SAMPLE.name, sample_rows)
    (root / "configs").mkdir()
    shutil.copy2(REPO / "configs" / "sample-ko.toml", root / "configs" / "sample-ko.toml")
    return sample


def smallest_sample(fold: str, row: int) -> bool:
    """The rows every command of the tour still has enough of (2,018 of 3,000): all aligner pairs of folds 0-2
    (942: the demo's pair pool, and more than the sweep's 500-pair budget), all English task rows of folds 6-7 (the
    demo draws 300 single-label ones; tune, finetune and adapt take --size 300), every third row of folds 3-5 and
    8-9 (the analyses fit on folds 0-5 and test on 8-9)."""
    return fold in ("0", "1", "2", "6", "7") or row % 3 == 0


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


def run_readme(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: Path,
               commands: Callable[[str], bool] = lambda command: True,
               sample_rows: Callable[[str, int], bool] = lambda fold, row: True, python: bool = True) -> list[str]:
    """Runs every Python block (unless `python` is false) and the shell commands `commands` accepts, in the
    README's order, on the sample's rows `sample_rows` keeps (what the Python examples and `demo` read as the
    bundled sample too); returns the stdout lines of the Python blocks."""
    from embedstore.study import demo

    pytest.importorskip("sentence_transformers")
    sample = _repository_layout(tmp_path, sample_rows)
    monkeypatch.setattr(demo, "sample_path", lambda: sample)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EMBEDSTORE_CACHE", raising=False)
    monkeypatch.delenv("EMBEDSTORE_STORE", raising=False)
    monkeypatch.setenv("EMBEDSTORE_MODEL", str(model))
    variables: dict[str, str] = {}
    printed = io.StringIO()
    for language, code in readme_blocks():
        if language == "python":
            if not python:
                continue
            with contextlib.redirect_stdout(printed):
                exec(compile(code, str(README), "exec"), {})
            continue
        for command in shell_commands(code):
            if commands(command):
                _run_shell(command, variables)
    for name in variables:
        monkeypatch.delenv(name, raising=False)
    return printed.getvalue().splitlines()


def _check_outputs(tmp_path: Path, lines: list[str], made: tuple[str, ...]) -> None:
    assert re.fullmatch(r"\S+ 0\.\d+", lines[0])  # the primary result's name and its accuracy
    assert re.fullmatch(r"\S+ \(1, \d+\)", lines[1])  # a label; the probabilities' shape
    for name in made:
        assert (tmp_path / name).exists(), name
    assert not (tmp_path / "cache" / "models").exists()  # every command took the project's model, none the default


# What the Python blocks write (they run in both tiers); the tiny tour's commands write the rest
PYTHON_MADE = ("cache/al-py/config.json", "cache/pipe-py/pipeline.json", "cache/pipe-py-st/modules.json")
TOUR_MADE = ("cache/al/config.json", "cache/pipe/pipeline.json", "cache/pipe-st/modules.json",
             "cache/sample-ko.jsonl", "cache/tuned/config.json", "cache/aligned/config.json",
             "mined.en-ko.tsv")
# The commands the real model runs (each must still be in the README): everything the Python blocks and the pipeline
# they evaluate read comes through these, so their result is real vectors' result
REAL_SIGNAL = ("S=", "embedstore encode $S --column en --column ko", "embedstore store info",
               "embedstore train-aligner --pairs $S --target-column ko --where fold=0,1,2,3,4,5 --arch procrustes",
               "embedstore train-head", "embedstore evaluate", "embedstore predict")


def heavy_line(command: str) -> bool:
    """The tour's lines the heavy tier runs in place of the fast one (issue 27.3 puts torchrun there): the int8 encode
    exports, smooths, ranks and quantizes a graph and checks it against PyTorch (28 s of the tiny tour's 133 s of
    commands, measured 2026-12-07); the two-rank torchrun encode starts three processes that each import torch
    (15.3 s), and the merge reads its store. No other line reads what they write;
    `test_the_readmes_heavy_lines_run_as_written` runs them as written."""
    return "--quantize int8" in command or command.startswith("torchrun") or "cache/other.zarr" in command


HEAVY_NEEDS = ("S=", "embedstore encode $S --column en --column ko")
"""The lines before them that the heavy lines read: the sample's path and the store the merge merges into."""


@pytest.mark.longest
def test_the_readme_runs_as_written(tour_model_dir, tmp_path, monkeypatch):
    import functools

    from embedstore.study import demo

    # `embedstore demo` as written (its CLI, options, workers and report), on two of its eight seeds: the eight are the
    # same cells again, and test_demo.py checks the study itself (each step timed, a second run reusing everything)
    monkeypatch.setattr(demo, "run_demo", functools.partial(demo.run_demo, seeds=(0, 1)))
    lines = run_readme(tmp_path, monkeypatch, tour_model_dir, lambda command: not heavy_line(command),
                       sample_rows=smallest_sample)
    _check_outputs(tmp_path, lines, PYTHON_MADE + TOUR_MADE)


@pytest.mark.heavy
@pytest.mark.parallel
def test_the_readmes_heavy_lines_run_as_written(tour_model_dir, tmp_path, monkeypatch):
    """In the `parallel` pass beside another test, as the fast tier ran these lines beside its other worker's tests
    (the torchrun ranks take one thread each); alone in the one-process pass it held ~56 s of that pass's wall."""
    from embedstore.store import Store

    ran: list[str] = []

    def heavy(command: str) -> bool:
        ran.extend([command] if heavy_line(command) else [])
        return command.startswith(HEAVY_NEEDS) or heavy_line(command)

    run_readme(tmp_path, monkeypatch, tour_model_dir, heavy, sample_rows=smallest_sample, python=False)
    assert any(command.startswith("torchrun") for command in ran) and any("int8" in command for command in ran), ran
    merged, store = Store.open(tmp_path / "cache" / "merged.zarr"), Store.open(tmp_path / "cache" / "store.zarr")
    assert any(key.model.endswith("+int8") for key in store.keys()), store.keys()
    other = Store.open(tmp_path / "cache" / "other.zarr")
    for key in other.keys():  # the two ranks' rows, merged with the first encode's
        ranks_ids = other.backend.read_ids(key.group_name, other.rows(key))
        assert len(ranks_ids) > 0 and merged.contains_ids(key, ranks_ids).all()
        assert merged.rows(key) >= store.rows(key)


@pytest.mark.heavy
def test_the_readme_runs_as_written_with_the_real_model(e5_small_dir, e5_store, kept_cache, tmp_path, monkeypatch):
    from embedstore.api import evaluate
    from embedstore.study.verdicts import degeneracy

    ran: set[str] = set()

    def real_signal(command: str) -> bool:
        prefix = next((p for p in REAL_SIGNAL if command.startswith(p)), None)
        ran.update([prefix] if prefix else [])
        return prefix is not None

    # the tour's cache/onnx is the one beside the kept e5-small (as in a clone, where both are the repository's
    # cache/): a graph of e5-small that --backend auto exports (or finds) here is the other real tests' too, so a
    # fresh clone exports it once, not once here and again for their store
    (kept_cache / "onnx").mkdir(parents=True, exist_ok=True)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "onnx").symlink_to(kept_cache / "onnx", target_is_directory=True)
    # the tour's store starts as a copy of the real tests' one, which holds e5-small's vectors of every text of these
    # rows (`e5_store`): the tour's encode checks them and finds nothing to do, and every later command reads
    # real vectors (the real encode is the fixture's, the same `encode` the command runs; the CLI's path is the
    # tiny tour's); a fresh clone encodes the 4,128 texts once, not once here and again for the other real tests
    shutil.copytree(e5_store, tmp_path / "cache" / "store.zarr")
    lines = run_readme(tmp_path, monkeypatch, e5_small_dir, real_signal, sample_rows=real_sample_rows)
    assert ran == set(REAL_SIGNAL), f"the README no longer has {sorted(set(REAL_SIGNAL) - ran)}"
    _check_outputs(tmp_path, lines, PYTHON_MADE + ("cache/al/config.json", "cache/pipe/pipeline.json"))
    result = evaluate(tmp_path / "cache" / "pipe", tmp_path / SAMPLE.relative_to(REPO), text_column="ko",
                      label_column="apps", where={"fold": [8, 9]}, store=tmp_path / "cache" / "store.zarr",
                      model=e5_small_dir)
    # the README's pipeline on real e5-small vectors beats always answering the majority class, beyond noise
    assert degeneracy(result[result["primary"]]) is None, result[result["primary"]]["accuracy"]
