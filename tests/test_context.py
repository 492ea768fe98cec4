"""A cell's context (embedstore.study.context): what makes a finished cell stale, as the sweep engine sees it.

The runner is test_sweep's fake one; the fingerprint is given, so no model is resolved.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from embedstore.study.context import StudyContext
from embedstore.study.sweep import read_results, run_sweep
from test_sweep import fake_runner, make_config


def test_changed_model_reruns_finished_cells(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    run_sweep(config, fake_runner, StudyContext(config, "fp-tiny"), workers=1, progress=False)
    other = dataclasses.replace(config, model="other")
    with pytest.warns(UserWarning, match="12 finished cells were computed with another model, task"):
        summary = run_sweep(other, fake_runner, StudyContext(other, "fp-tiny"), workers=1, progress=False)
    assert len(summary.ok) == 12
    assert {r["provenance"]["model"] for r in read_results(config.results)} == {"other"}


def test_other_weights_under_the_same_model_name_rerun_finished_cells(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    run_sweep(config, fake_runner, StudyContext(config, "fp-tiny"), workers=1, progress=False)
    with pytest.warns(UserWarning, match="12 finished cells were computed with another model"):
        summary = run_sweep(config, fake_runner, StudyContext(config, "fp-retrained"), workers=1, progress=False)
    assert len(summary.ok) == 12 and summary.skipped == ()
    again = run_sweep(config, fake_runner, StudyContext(config, "fp-retrained"), workers=1, progress=False)
    assert len(again.skipped) == 12 and again.to_run == ()


def test_changed_recipe_settings_rerun_only_trained_aligner_cells(tmp_path: Path, monkeypatch) -> None:
    """A release that changes what `default` means for FC/AE must not keep their results; baselines stay."""
    from embedstore.estimators import training

    config = make_config(tmp_path)
    context = StudyContext(config, "fp-tiny")
    run_sweep(config, fake_runner, context, workers=1, progress=False)
    faster = dataclasses.replace(training.RECIPES["default"]["aligner"], batch_size=1024)
    monkeypatch.setitem(training.RECIPES, "default", {**training.RECIPES["default"], "aligner": faster})
    with pytest.warns(UserWarning, match="8 finished cells .* settings"):
        summary = run_sweep(config, fake_runner, context, workers=1, progress=False)
    assert {c.method for c in summary.ok} == {"langalign"} and len(summary.ok) == 8
    assert {c.method for c in summary.skipped} == {"english"} and len(summary.skipped) == 4
