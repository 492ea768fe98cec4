"""`--precision fp16|bf16|onnx-fp16` (issue 31): PyTorch autocast or ONNX Runtime's fp16 graph, each under a key of
its own, checked against fp32 on first use. No GPU here: the CUDA paths are `benchmarks/gpu_check.py`'s."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from embedstore.base.errors import ConfigError
from embedstore.encoding import precision
from embedstore.encoding.backend import fixed_choice
from embedstore.encoding.encode import encode
from embedstore.encoding.encoder import Encoder
from embedstore.encoding.models import load_once, resolve_model
from embedstore.encoding.options import PRECISION_ENGINES, ComputeOptions, EncodeOptions
from embedstore.store import Store

TEXTS = ["hello world", "세계 안녕", "a longer sentence about spreadsheets and the cells in them"]


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDSTORE_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("name", ["bf16", "fp16",
                                  pytest.param("onnx-fp16", marks=[pytest.mark.heavy, pytest.mark.parallel])])
def test_precision_has_its_own_key_and_records_its_check(tiny_model_dir, tmp_path, name):
    store = tmp_path / "s.zarr"
    full = encode(TEXTS, store=store, options=EncodeOptions(model=str(tiny_model_dir)))
    low = encode(TEXTS, store=store, options=EncodeOptions(model=str(tiny_model_dir), precision=name))
    assert low.encoded == 3 and low.keys[0].model.endswith(f"+{name}")
    assert low.keys[0].fingerprint != full.keys[0].fingerprint
    check = low.provenance["precision_check"]
    assert low.provenance["compute_dtype"] == name and low.provenance["backend"] == PRECISION_ENGINES[name]
    assert check["texts"] == 2 * precision.CHECK_TEXTS and check["min_cosine"] >= precision.MIN_COSINE
    assert check["p_at_1"] >= precision.MIN_P_AT_1
    st = Store.open(store)
    a, b = (st.get(next(k for k in st.keys() if k.model == m), TEXTS) for m in (full.keys[0].model,
                                                                              low.keys[0].model))
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() >= precision.MIN_COSINE and not np.array_equal(a, b)  # close, yet computed otherwise


def test_precision_beyond_the_bound_is_refused_naming_the_figures(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "MIN_COSINE", 1.5)  # no vector can pass: the refusal path
    with pytest.raises(ConfigError, match=r"precision: bf16 on cpu moves .*\(min cosine \d\.\d{4}, P@1 \d\.\d{3} on 96 "
                                          r"sample texts; the bound is 1.5"):
        encode(TEXTS, store=tmp_path / "s.zarr", options=EncodeOptions(model=str(tiny_model_dir), precision="bf16"))
    assert not Store.open(tmp_path / "s.zarr").exists() or not Store.open(tmp_path / "s.zarr").keys()


def test_precision_refuses_what_cannot_run_with_it(tiny_model_dir, tmp_path):
    with pytest.raises(ConfigError, match="precision: fp16 runs on PyTorch .* or --precision onnx-fp16"):
        encode(TEXTS, store=tmp_path / "s.zarr", options=EncodeOptions(model=str(tiny_model_dir), precision="fp16"),
               compute=ComputeOptions(backend="onnx"))
    with pytest.raises(ConfigError, match="precision: bf16 runs on PyTorch .*ONNX Runtime has no bf16 path"):
        encode(TEXTS, store=tmp_path / "s.zarr", options=EncodeOptions(model=str(tiny_model_dir), precision="bf16"),
               compute=ComputeOptions(backend="onnx"))
    with pytest.raises(ConfigError, match="precision: onnx-fp16 runs on ONNX Runtime; expected --backend onnx"):
        encode(TEXTS, store=tmp_path / "s.zarr", options=EncodeOptions(model=str(tiny_model_dir),
                                                                        precision="onnx-fp16"),
               compute=ComputeOptions(backend="torch"))
    assert not (tmp_path / "s.zarr").exists()
    with pytest.raises(ConfigError, match="precision: 'fp8' is not supported"):
        EncodeOptions(precision="fp8")
    with pytest.raises(ConfigError, match="expected one of them"):
        EncodeOptions(precision="bf16", quantize="int8")


def test_each_precision_and_engine_has_a_key_of_its_own(tiny_model_dir):
    spec = resolve_model(tiny_model_dir)
    keys = {name: EncodeOptions(model=str(tiny_model_dir), precision=name).key(spec)
            for name in (None, "fp16", "bf16", "onnx-fp16")}
    assert len({k.fingerprint for k in keys.values()}) == 4 and len({k.model for k in keys.values()}) == 4
    assert keys["onnx-fp16"].model.endswith("+onnx-fp16")
    int8 = EncodeOptions(model=str(tiny_model_dir), quantize="int8").key(spec)
    assert int8.fingerprint not in {k.fingerprint for k in keys.values()}


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here")
def test_onnx_fp16_on_a_gpu_without_onnxruntime_gpu_is_refused_before_anything_loads(tiny_model_dir):
    options = EncodeOptions(model=str(tiny_model_dir), precision="onnx-fp16")
    with pytest.raises(ConfigError, match=r"^precision: onnx-fp16 on cuda:0 needs ONNX Runtime's CUDA provider "
                                          r"\(pip install onnxruntime-gpu\)"):
        fixed_choice(options, ComputeOptions(), torch.device("cuda:0"))
    assert fixed_choice(options, ComputeOptions(), torch.device("cpu")).backend == "onnx"


class Distorted:
    """A stand-in reduced engine: the reference's vectors, changed by `how` (what a broken half-precision path
    could do), so the check's figures and refusals are tested without a GPU."""

    def __init__(self, reference: Encoder, how) -> None:
        self.reference, self.how = reference, how
        self.tokenizer, self.device = reference.tokenizer, reference.device

    def forward(self, batch, layers, pooling):
        return {layer: self.how(v) for layer, v in self.reference.forward(batch, layers, pooling).items()}


def _reference(tiny_model_dir) -> Encoder:
    model, tokenizer = load_once(resolve_model(tiny_model_dir), torch.device("cpu"))
    return Encoder(model, tokenizer, torch.device("cpu"))


@pytest.mark.parametrize("how, figure", [
    (lambda v: np.where(np.arange(len(v))[:, None] == 0, np.nan, v), r"min cosine nan"),  # a NaN row
    (lambda v: v[::-1].copy(), r"min cosine [-.\d]+, P@1 0\.[0-8]\d\d"),  # rows swapped within each batch
    (lambda v: v + 50 * np.abs(v).max() * np.ones_like(v), r"min cosine 0\.\d{4}"),  # a shared offset swamps them
])
def test_the_check_refuses_a_reduced_engine_beyond_the_bound_naming_its_figures(tiny_model_dir, how, figure):
    reference = _reference(tiny_model_dir)
    spec = resolve_model(tiny_model_dir)
    with pytest.raises(ConfigError, match=rf"^precision: onnx-fp16 on cpu moves .* too far from fp32 \({figure}"):
        precision.checked(Distorted(reference, how), lambda: reference, spec, "onnx-fp16", [2], "mean", "", "fake-1")


def test_the_check_runs_once_per_runtime_and_is_read_back_without_the_reference(tiny_model_dir):
    reference = _reference(tiny_model_dir)
    spec = resolve_model(tiny_model_dir)
    calls = []

    def load():
        calls.append(1)
        return reference

    same = Distorted(reference, lambda v: v.astype(np.float16).astype(np.float32))  # fp16 rounding: within bound
    first = precision.checked(same, load, spec, "onnx-fp16", [2], "mean", "", "fake-1")
    assert first["min_cosine"] >= precision.MIN_COSINE and first["p_at_1"] == 1.0 and first["runtime"] == "fake-1"
    assert precision.checked(same, load, spec, "onnx-fp16", [2], "mean", "", "fake-1") == first and calls == [1]
    precision.checked(same, load, spec, "onnx-fp16", [2], "mean", "", "fake-2")  # another graph or runtime
    assert calls == [1, 1]
