"""`embedstore demo` on the tiny model: the study runs through `run_study`, says what it spent its time on, and a
second run reuses everything (vectors, cells, the report itself)."""
from __future__ import annotations

from pathlib import Path

import pytest

from embedstore.base.errors import ConfigError
from embedstore.study.demo import run_demo
from embedstore.study.sweep import read_results


def test_demo_runs_the_study_then_reuses_vectors_cells_and_report(tiny_model_dir: Path, tmp_path: Path,
                                                                  monkeypatch) -> None:
    import embedstore.encoding.models as models

    kwargs = {"model": str(tiny_model_dir), "store": tmp_path / "s.zarr", "aligners": ("procrustes",), "workers": 1,
              "progress": False, "seeds": (0, 1)}
    read, original = [], models.model_fingerprint
    monkeypatch.setattr(models, "model_fingerprint", lambda path: read.append(path) or original(path))
    first = run_demo(tmp_path / "demo", **kwargs)
    assert len(read) == 1  # the model resolved once: for the build's timing, the encode and every cell
    assert first.encoded > 0 and not first.summary.errors and len(first.summary.ok) == len(first.summary.cells)
    assert first.report.table_md.is_file() and "langalign" in first.report.markdown
    assert set(first.steps) == {"model", "encode", "cells", "report"} and first.engine in ("torch", "onnx")
    assert 0 < sum(first.steps.values()) <= first.seconds
    line = first.timing()
    assert line.startswith(f"demo took {first.seconds:.1f} s: model ") and f"{len(first.summary.cells)} cells run" in line
    reused = {(r["cell"]["method"], r["metrics"]["head"]["reused"])
              for r in read_results(first.config.parent / "results.jsonl")}
    # English-only fits the head that translate-test, ablation-omit and reverse reuse
    assert reused >= {("english", False), ("translate-test", True), ("ablation-omit", True), ("reverse", True)}
    assert not reused & {("translate-test", False), ("ablation-omit", False), ("reverse", False)}
    built = first.report.table_md.stat().st_mtime_ns

    import time
    second = run_demo(tmp_path / "demo", **kwargs, started=time.perf_counter() - 5.0)  # as if started 5 s ago
    assert list(second.steps)[0] == "start-up" and second.steps["start-up"] >= 5.0 and second.seconds >= 5.0
    assert second.timing().startswith(f"demo took {second.seconds:.1f} s: start-up ")
    assert second.encoded == 0 and second.engine is None and second.summary.to_run == ()
    assert len(second.summary.skipped) == len(first.summary.cells)
    assert second.report.markdown == first.report.markdown and second.report.plots == first.report.plots
    assert second.report.table_md.stat().st_mtime_ns == built  # the unchanged results' report is kept, not redrawn


def test_a_model_that_cannot_be_had_stops_the_demo_before_it_writes_anything(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model directory not found"):
        run_demo(tmp_path / "demo", model=str(tmp_path / "no-such-model"), store=tmp_path / "s.zarr", workers=0,
                 progress=False)
    assert not (tmp_path / "demo").exists() and not (tmp_path / "s.zarr").exists()


def test_the_demo_module_imports_no_torch_so_its_workers_start_first() -> None:
    """run_demo starts its cell workers before it imports torch and scikit-learn (which take seconds), and names
    their runner's module without importing it."""
    import subprocess
    import sys

    code = ("import sys, embedstore.study.demo; "
            "print(sorted({'torch', 'sklearn', 'transformers'} & set(sys.modules)))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"
    from embedstore.study import demo
    from embedstore.study.experiments import run_cell
    assert run_cell.__module__ == demo.CELL_MODULE
