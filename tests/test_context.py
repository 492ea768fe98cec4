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


def test_head_parameters_enter_the_context_only_of_cells_whose_head_they_fit(tmp_path: Path) -> None:
    """A changed `[heads.logistic]` table makes the vector-head cells stale, not the end-to-end ones (langalign-e2e
    trains its head with the encoder under `[e2e]`): those took ~50 min a cell on the real studies."""
    from embedstore.study.cells import Cell
    from embedstore.study.context import context_id

    config = make_config(tmp_path)
    tuned = dataclasses.replace(config, head_params={"logistic": {"C": 0.1}})
    on_vectors = Cell("ko", "t", "langalign", 100, 100, "procrustes", 0, head="logistic")
    with_encoder = Cell("ko", "t", "langalign-e2e", 100, 100, "procrustes", 0, head="logistic")
    assert context_id(config, on_vectors, "fp") != context_id(tuned, on_vectors, "fp")
    assert context_id(config, with_encoder, "fp") == context_id(tuned, with_encoder, "fp")
