"""The tokenizer read straight from tokenizer.json only when the file holds the pipeline its class builds
(`encoding.fast_tokenizer`): taken for the real XLM-R tokenizer (same ids as its class on the bundled sample, saved
under the class's name), refused for a file whose pipeline differs (the ids would differ too) or whose class does
more than build a pipeline."""
import csv
import json
import shutil
from pathlib import Path

import pytest
from transformers import AutoTokenizer, TokenizersBackend
from transformers.models.xlm_roberta.tokenization_xlm_roberta import XLMRobertaTokenizer

from embedstore.encoding import fast_tokenizer
from embedstore.study.demo import sample_path

EDGE_CASES = ["", " ", "a  b\t\tc", "Cafe\u0301 déjà vu", "<s> literal </s> <mask>", "  leading and trailing  ",
              "숫자 123,456.78 · 한국어", "query: ｆｕｌｌｗｉｄｔｈ", "x" * 600]


def sample_texts(n: int = 400) -> list[str]:
    with open(sample_path(), encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [r[column] for r in rows[:n] for column in ("en", "ko")] + EDGE_CASES


@pytest.fixture(scope="module")
def class_tokenizer(xlmr_tokenizer_dir: Path):
    tokenizer = AutoTokenizer.from_pretrained(xlmr_tokenizer_dir)
    assert type(tokenizer) is XLMRobertaTokenizer  # what the files declare: the class path under test
    return tokenizer


def test_same_pipeline_loads_from_the_file_with_the_class_ids(xlmr_tokenizer_dir, class_tokenizer, tmp_path):
    fast = fast_tokenizer.load_generic_if_same(xlmr_tokenizer_dir)
    assert type(fast) is XLMRobertaTokenizer
    texts = sample_texts()
    for kwargs in ({}, {"truncation": True, "max_length": 16}):
        assert fast(texts, **kwargs)["input_ids"] == class_tokenizer(texts, **kwargs)["input_ids"]
    pairs = (texts[:50], texts[50:100])
    assert fast(*pairs, truncation=True, max_length=24)["input_ids"] == \
        class_tokenizer(*pairs, truncation=True, max_length=24)["input_ids"]
    assert fast.all_special_ids == class_tokenizer.all_special_ids
    assert fast.model_input_names == class_tokenizer.model_input_names == ["input_ids", "attention_mask"]
    fast.save_pretrained(tmp_path)  # a tuned or exported copy declares the model's own class
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["tokenizer_class"] == "XLMRobertaTokenizer"


def test_another_pipeline_keeps_the_class(xlmr_tokenizer_dir, class_tokenizer, tmp_path):
    """A tokenizer.json whose pre-tokenizer differs from the class's (no word-initial marker): the class
    rebuilds its own and ignores the file's, so reading the file would give other ids; the check refuses."""
    changed = tmp_path / "tok"
    shutil.copytree(xlmr_tokenizer_dir, changed)
    spec = json.loads((changed / "tokenizer.json").read_text(encoding="utf-8"))
    spec["pre_tokenizer"]["pretokenizers"][1]["prepend_scheme"] = "never"
    (changed / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")

    assert fast_tokenizer.load_generic_if_same(changed) is None
    as_file = TokenizersBackend.from_pretrained(changed)
    text = "hello world"
    assert as_file(text)["input_ids"] != class_tokenizer(text)["input_ids"]  # what the refusal prevents


def own_method(self, *args, **kwargs):  # any behaviour of its own: the file cannot stand for it
    return TokenizersBackend._encode_plus(self, *args, **kwargs)


@pytest.mark.parametrize("custom", [
    type("WithMethod", (TokenizersBackend,), {**{k: v for k, v in vars(XLMRobertaTokenizer).items()
                                                 if k not in ("__dict__", "__weakref__")}, "_encode_plus": own_method}),
    type("WithParent", (XLMRobertaTokenizer,), {})], ids=["a method of its own", "a parent between"])
def test_a_class_that_does_more_keeps_the_class(monkeypatch, xlmr_tokenizer_dir, custom):
    monkeypatch.setattr("transformers.models.auto.tokenization_auto.tokenizer_class_from_name", lambda name: custom)
    assert fast_tokenizer.declared_class(xlmr_tokenizer_dir) is None
    assert fast_tokenizer.load_generic_if_same(xlmr_tokenizer_dir) is None


def test_no_tokenizer_json_keeps_the_class(xlmr_tokenizer_dir, tmp_path):
    shutil.copytree(xlmr_tokenizer_dir, tmp_path / "tok")
    (tmp_path / "tok" / "tokenizer.json").unlink()
    assert fast_tokenizer.load_generic_if_same(tmp_path / "tok") is None
