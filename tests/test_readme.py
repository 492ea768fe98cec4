"""The README's Python example runs as written (with the tiny model standing in for e5-small, set the way a
user would: EMBEDSTORE_MODEL, and a store through EMBEDSTORE_STORE)."""
import contextlib
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
MARK = "<!-- the block below is run by tests/test_readme.py"


def readme_example() -> str:
    text = README.read_text(encoding="utf-8")
    after = text[text.index(MARK):]
    return re.search(r"```python\n(.*?)```", after, re.S).group(1)


def test_the_readme_python_example_runs(tiny_model_dir, tmp_path, monkeypatch):
    pytest.importorskip("sentence_transformers")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EMBEDSTORE_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("EMBEDSTORE_STORE", str(tmp_path / "store.zarr"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(readme_example(), str(README), "exec"), {})
    lines = out.getvalue().splitlines()
    assert re.fullmatch(r"(with|without)_aligner 0\.\d+", lines[0])
    assert re.fullmatch(r"\S+ \(1, \d+\)", lines[1])
    assert (tmp_path / "cache" / "pipe-st" / "modules.json").is_file()
    assert (tmp_path / "store.zarr").is_dir() and not (tmp_path / "cache" / "store.zarr").exists()
