"""`sweep --dry-run` validates the task tables as a real run does, without encoding (issue 13 D8)."""
from __future__ import annotations

import re

import pytest
from embedstore.cli.app import app
from test_experiments import write_config
from typer.testing import CliRunner


@pytest.mark.parametrize("typo, message", [
    (('label = "apps", ', 'label = "appz", '), r"data.tsv: no column 'appz'"),
    (("data.tsv", "data.tvs"), r"data.tvs: "),
    (("en_test =", "en_tset ="), r"tasks.topic.en_tset: unknown role"),
])
def test_dry_run_reports_task_table_typos_as_a_real_run_does(tiny_model_dir, tmp_path, typo, message):
    """The dry run said all was well where the real run stopped at a typo in a task table."""
    cfg = write_config(tmp_path, tiny_model_dir, ["english"])
    cfg.write_text(cfg.read_text().replace(*typo, 1))
    dry = CliRunner().invoke(app, ["sweep", str(cfg), "--dry-run"])
    assert dry.exit_code == 1, dry.output
    assert len(dry.output.strip().splitlines()) == 1 and dry.output.startswith("error: ")
    assert re.search(message, dry.output), dry.output
    assert not (tmp_path / "s.zarr").exists() and not (tmp_path / "results.jsonl").exists()
