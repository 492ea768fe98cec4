"""Every benchmark still imports against the library: they are run by hand (their figures need a quiet machine),
so nothing else would notice a rename they depend on until someone sits down to measure (benchmarks/sweep.py
imported a function the plumbing round had folded into EncodeOptions, and failed at its first line)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py"))


def test_there_are_benchmarks_to_check():
    assert len(BENCHMARKS) >= 10


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.name)
def test_the_benchmark_imports_and_has_an_entry_point(path: Path, monkeypatch: pytest.MonkeyPatch):
    spec = importlib.util.spec_from_file_location(f"benchmark_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)  # top-level imports only: main() runs under `if __name__ == "__main__"`
    assert callable(getattr(module, "main", None)), f"{path.name}: expected a main() to run"


def test_the_sweep_benchmark_counts_the_weight_products_an_aligner_fit_ran(tmp_path, monkeypatch: pytest.MonkeyPatch):
    """benchmarks/sweep.py prints the floor the aligner fits set (their weight products at the fp32 peak): the
    count is the fit's own epochs × steps × batch rows through the AE's layers, the first without an input gradient."""
    import numpy as np

    from embedstore.estimators.aligners.ae import AEAligner
    from embedstore.estimators.training import Recipe

    path = next(p for p in BENCHMARKS if p.name == "sweep.py")
    spec = importlib.util.spec_from_file_location("benchmark_sweep", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 8)).astype(np.float32)
    aligner = AEAligner(recipe=Recipe(lr=1e-3, batch_size=8, max_epochs=2, patience=5, weight_decay=0.0))
    aligner.fit(x, x + 0.1).save(tmp_path / "ae")
    epochs, steps = len(aligner.history_["epochs"]), aligner.history_["steps_per_epoch"]
    assert (epochs, steps) == (2, 7)  # 27 training rows, the identity term doubles them: 54 rows, 7 batches of 8
    per_row = 2 * 2 * 8 * 512 + 3 * 2 * (512 * 256 + 256 * 128 + 128 * 256 + 256 * 512 + 512 * 8)
    assert module.training_tflop(tmp_path / "ae") == pytest.approx(2 * 7 * 8 * per_row / 1e12)
