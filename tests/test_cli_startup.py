"""The command line starts with only what the command needs: a finished encode re-runs without torch."""
from __future__ import annotations

import subprocess
import sys

import pytest

RERUN = """
import sys
from typer.testing import CliRunner
from embedstore.cli.app import app
result = CliRunner().invoke(app, ["encode", sys.argv[1], "--column", "text", "--model", sys.argv[2],
                                  "--store", sys.argv[3]])
assert result.exit_code == 0, result.output
print("torch" in sys.modules, "sklearn" in sys.modules)
"""


@pytest.mark.heavy
@pytest.mark.parallel
def test_a_finished_encode_reruns_without_importing_torch_or_sklearn(tiny_model_dir, tmp_path):
    texts = tmp_path / "t.txt"
    texts.write_text("first sentence\nsecond sentence\n")
    store = tmp_path / "s.zarr"
    args = [sys.executable, "-c", RERUN, str(texts), str(tiny_model_dir), str(store)]
    first = subprocess.run(args, capture_output=True, text=True, check=True)
    assert first.stdout.split() == ["True", "False"]  # the model ran: torch was needed
    again = subprocess.run(args, capture_output=True, text=True, check=True)
    assert again.stdout.split() == ["False", "False"]  # everything was stored: nothing heavy was imported


def test_estimator_commands_list_the_registry_in_their_help():
    from typer.testing import CliRunner

    from embedstore.cli.app import app
    from embedstore.estimators.aligners import ALIGNERS

    result = CliRunner().invoke(app, ["train-aligner", "--help"])
    words = set(result.output.replace("|", " ").replace(".", " ").split())
    assert result.exit_code == 0 and set(ALIGNERS) <= words
