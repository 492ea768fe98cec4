import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from embedstore.encoding.options import ComputeOptions, EncodeOptions

from embedstore.encoding.encode import embed, encode, encode_files
from embedstore.base.errors import ConfigError, InputError
from embedstore.store import Store

SENTENCES = [
    "The cat sat on the mat.", "Select the cells you want to format.", "고양이가 매트 위에 앉았다.",
    "Choose Format - Cells.", "A much longer sentence that has quite a few more tokens than the others in this list.",
    "短い文。", "Press Enter.", "Hello world",
]


COMPUTE = ComputeOptions(batch_size=3, chunk_rows=4)


def opts(model_dir, **kw) -> EncodeOptions:
    return EncodeOptions(model=str(model_dir), **kw)


def reference_mean(model_dir, texts, layer=-1):
    """Each text alone, no padding at all: what a correct masked mean must reproduce."""
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    out = []
    with torch.inference_mode():
        for t in texts:
            enc = tok(t, return_tensors="pt")
            hs = model(**enc, output_hidden_states=True).hidden_states[layer]
            out.append(hs[0].mean(0).numpy())
    return np.stack(out)


def test_vectors_match_unpadded_forward_in_input_order(tiny_model_dir, tmp_path):
    store = tmp_path / "s.zarr"
    vecs = embed(SENTENCES, store=store, compute=COMPUTE, options=opts(tiny_model_dir))
    assert vecs.shape == (len(SENTENCES), 32) and vecs.dtype == np.float32
    np.testing.assert_allclose(vecs, reference_mean(tiny_model_dir, SENTENCES), atol=1e-5)


def test_rerun_skips_everything_without_loading_the_model(tiny_model_dir, tmp_path):
    store = tmp_path / "s.zarr"
    first = encode(SENTENCES + SENTENCES[:3], store=store, compute=COMPUTE, options=opts(tiny_model_dir))
    assert (first.texts, first.unique, first.encoded, first.present) == (11, 8, 8, 0)
    again = encode(SENTENCES, store=store, compute=COMPUTE, options=opts(tiny_model_dir))
    assert (again.encoded, again.present, again.model_loaded) == (0, 8, False)
    more = encode(SENTENCES + ["one new text"], store=store, compute=COMPUTE, options=opts(tiny_model_dir))
    assert (more.encoded, more.present) == (1, 8)
    assert Store.open(store).rows(Store.open(store).keys()[0]) == 9


def test_several_layers_in_one_pass_each_its_own_key(tiny_model_dir, tmp_path):
    store = tmp_path / "s.h5"
    report = encode(SENTENCES, store=store, compute=COMPUTE, options=opts(tiny_model_dir, layers=(-1, 1, 2)))
    layers = sorted(k["layer"] for k in report.keys)
    assert layers == [1, 2]  # -1 and 2 are the same hidden state of a 2-layer model
    st = Store.open(store)
    by_layer = {k.layer: st.get(k, SENTENCES) for k in st.keys()}
    np.testing.assert_allclose(by_layer[1], reference_mean(tiny_model_dir, SENTENCES, layer=1), atol=1e-5)
    assert not np.allclose(by_layer[1], by_layer[2])
    with pytest.raises(ConfigError, match=r"layer: 5 is out of range for a 2-layer model"):
        encode(SENTENCES, store=store, compute=COMPUTE, options=opts(tiny_model_dir, layers=(5,)))


def test_pooling_prefix_and_length_change_the_key(tiny_model_dir, tmp_path):
    store = tmp_path / "s.zarr"
    base = embed(SENTENCES, store=store, compute=COMPUTE, options=opts(tiny_model_dir))
    cls = embed(SENTENCES, store=store, compute=COMPUTE, options=opts(tiny_model_dir, pooling="cls"))
    mx = embed(SENTENCES, store=store, compute=COMPUTE, options=opts(tiny_model_dir, pooling="max"))
    pre = embed(SENTENCES, store=store, compute=COMPUTE, options=opts(tiny_model_dir, prefix="query: "))
    short = embed(SENTENCES, store=store, compute=COMPUTE, options=opts(tiny_model_dir, max_length=4))
    assert len(Store.open(store).keys()) == 5
    for other in (cls, mx, pre, short):
        assert not np.allclose(base, other)
    assert (mx >= base - 1e-6).all()  # a max is never below the mean
    half = embed(SENTENCES, store=store, compute=COMPUTE, options=opts(tiny_model_dir, dtype="float16"))
    np.testing.assert_allclose(half, base, atol=2e-3)


def test_pairs_are_one_tokenizer_pair_input(tiny_model_dir, tmp_path):
    pairs = [("A man is sleeping.", "A person rests."), ("A man is sleeping.", "Nobody sleeps.")]
    vecs = embed(pairs, store=tmp_path / "s.zarr", compute=COMPUTE, options=opts(tiny_model_dir))
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModel.from_pretrained(tiny_model_dir).eval()
    with torch.inference_mode():
        enc = tok(*pairs[0], return_tensors="pt")
        expect = model(**enc).last_hidden_state[0].mean(0).numpy()
    np.testing.assert_allclose(vecs[0], expect, atol=1e-5)
    assert not np.allclose(vecs[0], vecs[1])


def test_bad_input_writes_nothing(tiny_model_dir, tmp_path):
    good = tmp_path / "good.tsv"
    good.write_text("text\nfine\n")
    bad = tmp_path / "bad.tsv"
    bad.write_text("text\nfine\n \n")
    store = tmp_path / "s.zarr"
    with pytest.raises(InputError, match=r"bad.tsv: line 3: field 'text' is empty"):
        encode_files([good, bad], store=store, compute=COMPUTE, options=opts(tiny_model_dir))
    assert not store.exists()
