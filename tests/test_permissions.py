"""Artifacts get the usual permissions (issue 13 D8): files were once written 0600 inside 0755 directories, so
a model trained by one user could not be read by the others. Atomic writes (`base.atomic`) create files as an
ordinary `open` would, 0666 under the umask; this checks every file a real train-aligner/train-head writes."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from test_steps_cli import invoke, make_files


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}


@pytest.mark.parametrize("arch", ["procrustes", "fc"])
def test_train_aligner_and_train_head_write_0644_files_in_0755_directories(tiny_model_dir, tmp_path, umask_022,
                                                                           arch):
    data = make_files(tmp_path)
    common = ["--model", tiny_model_dir, "--store", tmp_path / "s.zarr"]
    r = invoke("train-aligner", "--pairs", data, "--target-column", "ko", "--arch", arch, "--where",
               "fold=0,1,2,3,4,5", "--out", tmp_path / "al", *common)
    assert r.exit_code == 0, r.output
    r = invoke("train-head", "--train", data, "--text-column", "en", "--label-column", "apps", "--aligner",
               tmp_path / "al", "--out", tmp_path / "pipe", *common)
    assert r.exit_code == 0, r.output
    for out in (tmp_path / "al", tmp_path / "pipe"):
        found = modes(out)
        assert any(not (out / name).is_dir() for name in found)  # there are files to check
        wrong = {name: oct(mode) for name, mode in found.items()
                 if mode != (0o755 if (out / name).is_dir() else 0o644)}
        assert wrong == {}, f"{out}: {wrong}"
