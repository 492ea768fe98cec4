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


def test_a_bad_row_stops_the_encode_before_any_model_is_resolved(tmp_path, monkeypatch):
    """Every row is checked before the model is touched: in an empty cache a bad line must not first build the
    default model (seconds of work and half a gigabyte, for a run that stops anyway)."""
    bad = tmp_path / "bad.tsv"
    bad.write_text("en\tko\nfine\t좋아\nonly one field\n", encoding="utf-8")

    def resolve(self):
        raise AssertionError("the model was resolved before the input was checked")

    monkeypatch.setattr(EncodeOptions, "resolve", resolve)
    with pytest.raises(InputError, match=r"bad.tsv: line 3: 1 tab-separated fields; expected 2"):
        encode_files([bad], columns=["en", "ko"], store=tmp_path / "s.zarr")
    assert not (tmp_path / "s.zarr").exists()


def test_encode_decides_what_to_encode_from_the_ids_alone(tiny_model_dir, tmp_path, monkeypatch):
    """Issue 28: what is already stored is decided by the ids; encode reads no stored vector or row digest (a stale
    vectors shard is for reads and `verify` to find, each of which checks the digests)."""
    from embedstore.store import zarr_backend

    store = tmp_path / "s.zarr"
    encode(SENTENCES, store=store, compute=COMPUTE, options=opts(tiny_model_dir))
    arrays_read = []
    real = zarr_backend.ZarrBackend._read

    def recording(self, name, which, *args, **kwargs):
        arrays_read.append(which)
        return real(self, name, which, *args, **kwargs)

    monkeypatch.setattr(zarr_backend.ZarrBackend, "_read", recording)
    again = encode(SENTENCES + ["one new text"], store=store, compute=COMPUTE, options=opts(tiny_model_dir))
    assert (again.encoded, again.present) == (1, 8)
    assert "ids" in arrays_read and set(arrays_read) == {"ids"}, arrays_read


def test_several_layers_in_one_pass_each_its_own_key(tiny_model_dir, tmp_path):
    store = tmp_path / "s.h5"
    report = encode(SENTENCES, store=store, compute=COMPUTE, options=opts(tiny_model_dir, layers=(-1, 1, 2)))
    layers = sorted(k.layer for k in report.keys)
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


class CountingTokenizer:
    """A tokenizer that counts the characters handed to it: the work a long text costs, without timing it."""

    def __init__(self, real) -> None:
        self.real, self.chars = real, 0

    def __call__(self, text, text_pair=None, **kwargs):
        for part in (text, text_pair):
            self.chars += sum(map(len, [part] if isinstance(part, str) else part or []))
        return self.real(text, text_pair, **kwargs)


def long_text(n_chars: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    words = ["cell", "format", "서식", "表", "セル", "insert", "a", "spreadsheet", "row,", "column."]
    out, size = [], 0
    while size < n_chars:
        out.append(words[rng.integers(len(words))])
        size += len(out[-1]) + 1
    return " ".join(out)[:n_chars]


def test_a_1mb_text_is_cut_before_tokenizing_and_gives_its_prefix_vector(tiny_model_dir, tmp_path):
    """Issue 13 D8: one 1 MB text was tokenized whole (2 minutes, ~1 GB) to keep max_length tokens of it."""
    from embedstore.encoding.batching import CHARS_PER_TOKEN, tokenize

    text, max_length = long_text(1_000_000), 64
    head = text[:20_000]  # far more than 64 tokens
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    counting = CountingTokenizer(tok)
    got = tokenize(counting, [text], "query: ", max_length).features["input_ids"]
    assert got == tok(["query: " + head], truncation=True, max_length=max_length)["input_ids"]
    assert counting.chars <= 2 * (max_length * CHARS_PER_TOKEN + len("query: "))  # a check and the real call

    pair = tokenize(tok, [(text, "a short hypothesis"), ("short premise", text)], "", max_length)
    assert pair.features["input_ids"] == tok([head, "short premise"], ["a short hypothesis", head], truncation=True,
                                             max_length=max_length)["input_ids"]

    spaced = "cell" + " " * 50_000 + text  # spaces carry no tokens: a bound in characters alone would be wrong
    assert tokenize(tok, [spaced], "", max_length).features["input_ids"] == \
        tok(["cell" + " " * 50_000 + head], truncation=True, max_length=max_length)["input_ids"]

    options = opts(tiny_model_dir, max_length=max_length)
    whole = embed([text], store=tmp_path / "s.zarr", options=options)
    prefix = embed([head], store=tmp_path / "s.zarr", options=options)
    np.testing.assert_array_equal(whole, prefix)
