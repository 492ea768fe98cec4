"""`embedstore demo` on the tiny model: the study runs through `run_study`, and a second run reuses everything."""
from __future__ import annotations

from pathlib import Path

from embedstore.study.demo import run_demo


def test_demo_runs_the_study_then_reuses_vectors_and_cells(tiny_model_dir: Path, tmp_path: Path) -> None:
    kwargs = {"model": str(tiny_model_dir), "store": tmp_path / "s.zarr", "aligners": ("procrustes",), "workers": 1,
              "progress": False, "seeds": (0, 1)}
    first = run_demo(tmp_path / "demo", **kwargs)
    assert first.encoded > 0 and not first.summary.errors and len(first.summary.ok) == len(first.summary.cells)
    assert first.report.table_md.is_file() and "langalign" in first.report.markdown
    second = run_demo(tmp_path / "demo", **kwargs)
    assert second.encoded == 0 and second.summary.to_run == ()
    assert len(second.summary.skipped) == len(first.summary.cells)
    assert second.report.markdown == first.report.markdown
