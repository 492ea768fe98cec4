"""Real signal: the converted e5-small on real LibreOffice help en-ko pairs (the real tests' rows of the bundled sample)."""
import numpy as np
import pytest

from embedstore.encoding.options import EncodeOptions

from embedstore.encoding.encode import embed
from embedstore.data.texts import read_table

pytestmark = pytest.mark.real
ROWS = 300


@pytest.fixture(scope="module")
def en_ko_vectors(real_sample, e5_small_dir, e5_store):
    table = read_table(real_sample, ["en", "ko", "fold"])
    rows = [i for i, f in enumerate(table["fold"]) if f in ("8", "9")][:ROWS]
    en = [table["en"][i] for i in rows]
    ko = [table["ko"][i] for i in rows]
    store = e5_store
    options = EncodeOptions(model=str(e5_small_dir))
    unit = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)  # noqa: E731
    return unit(embed(en, store=store, options=options)), unit(embed(ko, store=store, options=options))


def test_each_english_sentence_is_closer_to_its_translation_than_to_a_shuffled_one(en_ko_vectors):
    en, ko = en_ko_vectors
    own = (en * ko).sum(1)
    shuffled = (en * ko[np.random.default_rng(0).permutation(len(ko))]).sum(1)
    closer = float((own > shuffled).mean())
    print(f"\nen-ko {len(en)} rows: mean cos own {own.mean():.3f}, shuffled {shuffled.mean():.3f}, closer {closer:.3f}")
    assert closer >= 0.95


def test_retrieval_en_to_ko_is_high(en_ko_vectors):
    en, ko = en_ko_vectors
    sims = en @ ko.T
    p_at_1 = float((sims.argmax(1) == np.arange(len(en))).mean())
    p_at_1_back = float((sims.argmax(0) == np.arange(len(en))).mean())
    print(f"\nen->ko P@1 {p_at_1:.3f}, ko->en P@1 {p_at_1_back:.3f} over {len(en)} rows")
    assert p_at_1 >= 0.8
