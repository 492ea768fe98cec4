"""`--precision fp16|bf16` (issue 31): autocast under a key of its own, checked against fp32 on first use."""
from __future__ import annotations

import numpy as np
import pytest

from embedstore.base.errors import ConfigError
from embedstore.encoding import precision
from embedstore.encoding.encode import encode
from embedstore.encoding.options import ComputeOptions, EncodeOptions
from embedstore.store import Store

TEXTS = ["hello world", "세계 안녕", "a longer sentence about spreadsheets and the cells in them"]


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDSTORE_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("name", ["bf16", "fp16"])
def test_precision_has_its_own_key_and_records_its_check(tiny_model_dir, tmp_path, name):
    store = tmp_path / "s.zarr"
    full = encode(TEXTS, store=store, options=EncodeOptions(model=str(tiny_model_dir)))
    low = encode(TEXTS, store=store, options=EncodeOptions(model=str(tiny_model_dir), precision=name))
    assert low.encoded == 3 and low.keys[0].model.endswith(f"+{name}")
    assert low.keys[0].fingerprint != full.keys[0].fingerprint
    check = low.provenance["precision_check"]
    assert low.provenance["compute_dtype"] == name and low.provenance["backend"] == "torch"
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
    with pytest.raises(ConfigError, match="precision: fp16 runs on PyTorch"):
        encode(TEXTS, store=tmp_path / "s.zarr", options=EncodeOptions(model=str(tiny_model_dir), precision="fp16"),
               compute=ComputeOptions(backend="onnx"))
    with pytest.raises(ConfigError, match="precision: 'fp8' is not supported"):
        EncodeOptions(precision="fp8")
    with pytest.raises(ConfigError, match="expected one of them"):
        EncodeOptions(precision="bf16", quantize="int8")
