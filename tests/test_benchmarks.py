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
