"""benchmarks/gpu_check.py (issue 31): one line and exit 0 without a GPU; its items run and pass on CPU."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the script runs its checks instead")
def test_without_a_gpu_it_says_so_in_one_line_and_exits_0():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-500:]
    assert done.stdout.splitlines() == ["gpu_check: no CUDA GPU here (torch.cuda.is_available() is False); "
                                        "nothing to check"]


@pytest.mark.heavy
@pytest.mark.parallel
def test_every_item_passes_on_cpu(tiny_model_dir, tmp_path):
    items = gpu_check.run_checks("cpu", str(tiny_model_dir), 64, tmp_path)
    names = [item.name for item in items]
    assert names == ["encode fp32 (torch)", "encode fp32 (onnx)", "fp32 torch = onnx", "encode bf16 (autocast)",
                     "encode onnx-fp16 (ONNX Runtime)", "torchrun 1 rank encode", "finetune e2e cell", "adapt align"]
    assert all(item.ok for item in items), "\n".join(item.line() for item in items)
    for reduced in items[3:5]:
        assert reduced.figures["min cosine"] >= 0.99 and reduced.figures["P@1"] >= 0.99
