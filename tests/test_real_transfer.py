"""Real signal for steps 2 and 3: e5-small on LibreOffice help en-ko (the real tests' rows of the bundled sample).

An English-trained head is evaluated on Korean rows of other folds, with and without a Procrustes aligner fitted
on pairs from yet other folds; the aligner must bring English vectors closer to their Korean translations on
held-out rows than they were.
"""
import numpy as np
import pytest

from embedstore.estimators.aligners import ProcrustesAligner
from embedstore.encoding.options import EncodeOptions
from embedstore.encoding.encode import embed
from embedstore.estimators.heads import LinearHead
from embedstore.base.metrics import classification_metrics
from embedstore.data.tasks import Source, load_rows

pytestmark = pytest.mark.real


def rows(sample, folds, n):
    src = Source(file=sample, text="en", label="apps", target="ko", where=(("fold", tuple(folds)),))
    r = load_rows(src, single_label=True)
    return r.texts[:n], r.targets[:n], r.labels[:n]


def test_english_head_transfers_to_korean_and_alignment_brings_translations_closer(real_sample, e5_small_dir, e5_store):
    options = EncodeOptions(model=str(e5_small_dir))
    vec = lambda texts: embed(texts, store=e5_store, options=options)  # noqa: E731
    pair_en, pair_ko, _ = rows(real_sample, "012345", 600)  # a 384-d Procrustes map is well determined by 600
    train_en, _, train_y = rows(real_sample, "67", 600)
    test_en, test_ko, test_y = rows(real_sample, "89", 300)
    aligner = ProcrustesAligner().fit(vec(pair_en), vec(pair_ko))

    x_train, x_test_ko, x_test_en = vec(train_en), vec(test_ko), vec(test_en)
    plain = LinearHead(seed=0).fit(x_train, train_y)
    aligned = LinearHead(seed=0).fit(aligner.transform(x_train), train_y)
    acc_plain = classification_metrics(test_y, plain.predict(x_test_ko))["accuracy"]
    acc_aligned = classification_metrics(test_y, aligned.predict(x_test_ko))["accuracy"]
    acc_en = classification_metrics(test_y, plain.predict(x_test_en))["accuracy"]
    majority = max(test_y.count(c) for c in set(test_y)) / len(test_y)

    unit = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)  # noqa: E731
    cos_raw = float((unit(x_test_en) * unit(x_test_ko)).sum(1).mean())
    cos_aligned = float((unit(aligner.transform(x_test_en)) * unit(x_test_ko)).sum(1).mean())
    print(f"\nKorean accuracy: English-only {acc_plain:.3f}, LangAlign (Procrustes) {acc_aligned:.3f}; English test "
          f"{acc_en:.3f}; majority {majority:.3f}; held-out cosine EN-KO {cos_raw:.3f} -> aligned {cos_aligned:.3f}")
    assert acc_plain > majority + 0.05  # the multilingual encoder transfers at all
    assert acc_aligned > majority + 0.05
    assert cos_aligned > cos_raw
