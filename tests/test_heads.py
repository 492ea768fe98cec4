"""Heads on separable synthetic data, label round-trips, and their boundary checks."""
import json
from dataclasses import replace

import numpy as np
import pytest

from embedstore.base.errors import ConfigError, EmbedstoreError, InputError
from embedstore.estimators.heads import HEADS, LinearHead, MLPHead, load_head, make_head
from embedstore.estimators.training import RECIPES

D = 16
TINY = replace(RECIPES["default"]["head"], max_epochs=2)


def blobs(n_per_class: int, labels=("neg", "neu", "pos"), seed: int = 0):
    """Gaussian blobs around fixed centres of norm 4 (noise sd 0.5): a near-perfect classifier exists.

    The centres do not depend on `seed`, so different seeds give train and test samples of one problem.
    """
    centres = np.random.default_rng(0).standard_normal((len(labels), D))
    rng = np.random.default_rng(seed + 1)
    centres *= 4.0 / np.linalg.norm(centres, axis=1, keepdims=True)
    x = np.concatenate([c + 0.5 * rng.standard_normal((n_per_class, D)) for c in centres]).astype(np.float32)
    y = np.repeat(np.array(labels), n_per_class)
    order = rng.permutation(len(y))
    return x[order], y[order]


@pytest.mark.parametrize("cls", [LinearHead, MLPHead])
def test_heads_separate_blobs(cls):
    x, y = blobs(300)
    x_test, y_test = blobs(100, seed=1)
    head = cls().fit(x, y)
    assert head.score(x_test, y_test) > 0.95
    assert list(head.classes_) == ["neg", "neu", "pos"]
    assert set(head.predict(x_test)) <= {"neg", "neu", "pos"}


def test_predict_proba_is_a_distribution_in_classes_order():
    x, y = blobs(50)
    head = LinearHead(recipe=TINY).fit(x, y)
    proba = head.predict_proba(x)
    assert proba.shape == (len(x), 3) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(head.predict(x), head.classes_[proba.argmax(axis=1)])


@pytest.mark.parametrize("kind", list(HEADS))
@pytest.mark.parametrize("labels", [("neg", "neu", "pos"), (0, 1, 2)])
def test_save_load_round_trip(kind, labels, tmp_path):
    x, y = blobs(50, labels=labels)
    head = make_head(kind, recipe=TINY, seed=5).fit(x, y)
    head.save(tmp_path / "h", provenance={"task": "sentiment", "lang": "en"})
    assert sorted(p.name for p in (tmp_path / "h").iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((tmp_path / "h" / "config.json").read_text())
    assert config["provenance"] == {"task": "sentiment", "lang": "en"}
    assert config["state"]["classes_"] == {"__ndarray__": list(labels)}
    for loaded in (load_head(tmp_path / "h"), type(head).load(tmp_path / "h")):
        np.testing.assert_array_equal(loaded.predict_proba(x), head.predict_proba(x))
        np.testing.assert_array_equal(loaded.predict(x), head.predict(x))
        assert loaded.classes_.dtype.kind == head.classes_.dtype.kind
        assert loaded.get_params() == head.get_params()


def test_weight_decay_overrides_the_recipe():
    assert LinearHead(weight_decay=0.5)._recipe().weight_decay == 0.5
    assert LinearHead()._recipe() == RECIPES["default"]["head"]
    assert MLPHead(recipe="paper")._recipe().lr == 1e-4


def test_mlp_head_has_robertas_shape():
    net = MLPHead(dropout=0.2)._network(D, 3)
    kinds = [type(layer).__name__ for layer in net]
    assert kinds == ["Dropout", "Linear", "Tanh", "Dropout", "Linear"]
    assert net[1].weight.shape == (D, D) and net[4].weight.shape == (3, D) and net[0].p == 0.2


def test_label_errors_are_one_line():
    x, y = blobs(10)
    cases = [
        (y[:-1], "29 labels but X has 30 rows"),
        (np.full(len(y), "only"), "single class"),
        (y.reshape(-1, 1), "1-D"),
        (np.linspace(0, 1, len(y)), "int, bool or str"),
    ]
    for labels, words in cases:
        with pytest.raises(InputError) as e:
            LinearHead(recipe=TINY).fit(x, labels)
        assert words in str(e.value) and "\n" not in str(e.value)


def test_predict_before_fit_and_wrong_dim():
    x, y = blobs(10)
    with pytest.raises(EmbedstoreError, match=r"not fitted; call fit\(X, y\)"):
        LinearHead().predict(x)
    head = LinearHead(recipe=TINY).fit(x, y)
    with pytest.raises(InputError, match=f"X has 4 columns but LinearHead was fitted on dim {D}"):
        head.predict(x[:, :4])
    with pytest.raises(InputError, match="already fitted"):
        head.fit(x[:, :4], y)
    with pytest.raises(InputError, match="numeric labels but LinearHead was fitted on string labels"):
        head.score(x, np.zeros(len(x), dtype=int))


def test_make_head_rejects_unknowns():
    with pytest.raises(ConfigError, match="linear, mlp"):
        make_head("svm")
    with pytest.raises(ConfigError, match="dropout"):
        make_head("linear", dropout=0.1)
    with pytest.raises(ConfigError, match="dropout"):
        MLPHead(dropout=1.5, recipe=TINY).fit(*blobs(10))
