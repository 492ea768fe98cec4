"""Heads on separable synthetic data, label round-trips, and their boundary checks."""
import json
from dataclasses import replace

import numpy as np
import pytest

from embedstore.base.errors import ConfigError, EmbedstoreError, InputError
from embedstore.estimators.heads import (DEFAULT_HEAD, HEADS, LinearHead, LogisticHead, MLPHead, SklearnHead,
                                        build_head, load_head, make_head)
from embedstore.estimators.training import RECIPES

D = 16
TINY = replace(RECIPES["default"]["head"], max_epochs=2)
#: Every family: the registered names, and a scikit-learn classifier by name.
KINDS = [k for k in HEADS if k != "sklearn"] + ["sklearn:discriminant_analysis.LinearDiscriminantAnalysis"]


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


@pytest.mark.parametrize("cls", [LogisticHead, LinearHead, MLPHead])
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


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("labels", [("neg", "neu", "pos"), (0, 1, 2)])
def test_save_load_round_trip(kind, labels, tmp_path):
    x, y = blobs(50, labels=labels)
    head = build_head(kind, recipe=TINY, seed=5).fit(x, y)
    head.save(tmp_path / "h", provenance={"task": "sentiment", "lang": "en"})
    assert sorted(p.name for p in (tmp_path / "h").iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((tmp_path / "h" / "config.json").read_text())
    assert config["provenance"] == {"task": "sentiment", "lang": "en"}
    assert config["state"]["classes_"] == {"__ndarray__": list(labels)}
    for loaded in (load_head(tmp_path / "h"), type(head).load(tmp_path / "h")):
        if kind.startswith("sklearn:"):  # rebuilt estimator: its float64 arithmetic may differ in the last bits
            np.testing.assert_allclose(loaded.predict_proba(x), head.predict_proba(x), rtol=1e-3, atol=1e-7)
        else:
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
    with pytest.raises(ConfigError, match="logistic, linear, mlp"):
        make_head("svm")
    with pytest.raises(ConfigError, match="no class NoSuchSVC"):
        make_head("sklearn:svm.NoSuchSVC")
    with pytest.raises(ConfigError, match="not a scikit-learn classifier"):
        make_head("sklearn:linear_model.Ridge")
    with pytest.raises(ConfigError, match="no class system in sklearn.os"):
        make_head("sklearn:os.system")  # only names inside sklearn are ever imported
    with pytest.raises(ConfigError, match="public dotted class name"):
        make_head("sklearn:svm._private")
    with pytest.raises(ConfigError, match="name the classifier"):
        make_head("sklearn")
    with pytest.raises(ConfigError, match="dropout"):
        make_head("linear", dropout=0.1)
    with pytest.raises(ConfigError, match="dropout"):
        MLPHead(dropout=1.5, recipe=TINY).fit(*blobs(10))


def test_default_head_is_the_converged_logistic_regression_with_cv_chosen_C():
    """The default head solves the convex problem to lbfgs's gradient tolerance and says so; C comes from
    cross-validation on the training rows (the walk up the grid is recorded), and the saved head keeps it."""
    assert DEFAULT_HEAD == "logistic"
    x, y = blobs(100)
    head = make_head(DEFAULT_HEAD).fit(x, y)
    report = head.fit_report
    assert report["converged"] is True and head.converged
    assert 0 <= report["iterations"] < report["max_iter"]  # 0 when the start (the folds' mean) already meets tol
    search = report["C_search"]
    assert report["C"] in search["Cs"] and search["folds"] == 5 and search["rows"] == len(x)
    best = max(search["mean_accuracy"])  # highest CV accuracy, ties to the lowest log-loss
    tied = [i for i, a in enumerate(search["mean_accuracy"]) if a == best]
    assert report["C"] == search["Cs"][min(tied, key=lambda i: search["mean_log_loss"][i])]
    assert report["normalize"] == "standard" and "tol=0.0001" in report["criterion"] and search["tol"] == 1e-3
    fixed = LogisticHead(C=0.5).fit(x, y).fit_report
    assert fixed["C"] == 0.5 and "C_search" not in fixed


def overlapping(n: int, n_classes: int, seed: int = 0):
    """Classes that overlap (no perfect classifier), so C matters and the solver needs tens of iterations."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).standard_normal((n_classes, D)) * 0.8
    labels = rng.integers(0, n_classes, n)
    return (centres[labels] + rng.standard_normal((n, D))).astype(np.float32), np.array([f"c{k}" for k in labels])


@pytest.mark.parametrize("n_classes", [2, 4])
def test_warm_started_fits_reach_the_cold_optimum(n_classes):
    """The fit on every row starts from the CV folds' mean solution, the C/10 and C×10 refits from the head's
    own: the objective is strictly convex, so they must land where a cold start lands, as close to the optimum
    (a fit to tol=1e-9) as the cold fit is, up to the solver's tolerance: the same C, the same predictions on
    held-out rows but for a handful at the boundary, the same score; and the refit at C×10 in fewer iterations."""
    x, y = overlapping(400, n_classes)
    x_test, y_test = overlapping(3000, n_classes, seed=1)
    head = LogisticHead().fit(x, y)
    C = head.fit_report["C"]
    assert "CV folds" in head.fit_report["started_from"] and not head.fit_report.get("C_at_grid_edge")
    assert "started_from" not in LogisticHead(C=C).fit(x, y).fit_report
    for factor in (1.0, 0.1, 10.0):
        warm = head if factor == 1.0 else LogisticHead(C=C * factor).fit_from(head, x, y)
        cold = LogisticHead(C=C * factor).fit(x, y)
        exact = LogisticHead(C=C * factor, tol=1e-9, max_iter=10_000).fit(x, y).predict_proba(x_test)
        assert warm.fit_report["C"] == cold.fit_report["C"] and warm.converged
        off_warm, off_cold = (np.abs(h.predict_proba(x_test) - exact).max() for h in (warm, cold))
        assert off_warm <= 3 * off_cold + 1e-3
        assert np.mean(warm.predict(x_test) == cold.predict(x_test)) >= 0.998
        assert warm.score(x_test, y_test) == pytest.approx(cold.score(x_test, y_test), abs=0.002)
    up = LogisticHead(C=C * 10).fit_from(head, x, y)
    assert up.fit_report["iterations"] < LogisticHead(C=C * 10).fit(x, y).fit_report["iterations"]
    assert f"C={C:g}" in up.fit_report["started_from"]


@pytest.mark.parametrize("n_classes", [2, 4])
def test_the_c_search_starts_at_the_small_c_optimum_and_chooses_as_from_zero(n_classes, monkeypatch):
    """The walk's folds start at the class priors: near the optimum at the grid's smallest C (in scikit-learn's
    form for two classes and for more), and the walk from there scores every C as the walk from zero does and
    picks the same C."""
    from sklearn.linear_model import LogisticRegression

    from embedstore.estimators.heads import logistic

    x, y = overlapping(600, n_classes)
    keep = (y == "c0") | (np.arange(len(y)) % 3 == 0)  # class c0 three times as common as each other class
    x, y = x[keep], y[keep]
    codes = np.unique(y, return_inverse=True)[1]
    start = logistic._at_class_priors(LogisticRegression(), codes, D)
    assert np.abs(start.intercept_).max() > 0.3  # far from the zero start
    # with no weights, the intercepts' gradient vanishes there: the predicted class shares are the priors
    b = start.intercept_
    shares = (np.array([1 / (1 + np.exp(b[0])), 1 / (1 + np.exp(-b[0]))]) if n_classes == 2
              else np.exp(b) / np.exp(b).sum())
    np.testing.assert_allclose(shares, np.bincount(codes) / len(codes), rtol=1e-12)
    # the grid's smallest C, solved tightly, is near it (a vanishing C is no reference: lbfgs's relative-decrease
    # test stops it at its start)
    smallest = LogisticRegression(C=1e-4, tol=1e-10, max_iter=10_000).fit(x, codes)
    assert start.coef_.shape == smallest.coef_.shape and not start.coef_.any()
    assert np.abs(smallest.coef_).max() < 0.05
    np.testing.assert_allclose(start.intercept_, smallest.intercept_, atol=0.05)
    from_priors = LogisticHead().fit(x, y).fit_report
    monkeypatch.setattr(logistic, "_at_class_priors", lambda model, codes, dim: model)
    from_zero = LogisticHead().fit(x, y).fit_report
    assert from_priors["C"] == from_zero["C"]
    assert from_priors["C_search"]["Cs"] == from_zero["C_search"]["Cs"]
    np.testing.assert_allclose(from_priors["C_search"]["mean_accuracy"], from_zero["C_search"]["mean_accuracy"],
                               atol=1 / len(y))
    np.testing.assert_allclose(from_priors["C_search"]["mean_log_loss"], from_zero["C_search"]["mean_log_loss"],
                               rtol=1e-3)


@pytest.mark.parametrize("n_classes", [2, 4])
def test_the_looser_search_ranks_the_cs_as_the_tight_one(n_classes):
    """The fold fits stop at cv_tol=1e-3 (the head at tol=1e-4): the held-out accuracies it ranks the Cs by stay
    within a point and a half of the tight search's (their own noise at 400 rows is several points), and it picks
    the same C; a cv_tol of 0 is refused."""
    x, y = overlapping(400, n_classes)
    loose, tight = LogisticHead().fit(x, y).fit_report, LogisticHead(cv_tol=1e-4).fit(x, y).fit_report
    assert (loose["C_search"]["tol"], tight["C_search"]["tol"]) == (1e-3, 1e-4)
    assert loose["C"] == tight["C"] and loose["converged"] and "tol=0.0001" in loose["criterion"]
    steps = min(len(loose["C_search"]["Cs"]), len(tight["C_search"]["Cs"]))
    np.testing.assert_allclose(loose["C_search"]["mean_accuracy"][:steps], tight["C_search"]["mean_accuracy"][:steps],
                               atol=0.015)
    with pytest.raises(ConfigError, match="cv_tol"):
        LogisticHead(cv_tol=0).fit(x, y)


def test_the_c_searchs_log_loss_is_scikit_learns():
    from sklearn.metrics import log_loss

    from embedstore.estimators.heads.logistic import held_out_log_loss

    rng = np.random.default_rng(3)
    proba = rng.dirichlet(np.ones(4), size=200)
    proba[:5] = [1.0, 0.0, 0.0, 0.0]  # certain, and wrong for some rows: clipped, not infinite
    codes = rng.integers(0, 4, 200)
    assert held_out_log_loss(codes, proba) == pytest.approx(log_loss(codes, proba, labels=np.arange(4)), rel=1e-12)


def test_fit_from_needs_a_head_of_the_same_rows():
    x, y = blobs(40)
    head = LogisticHead(C=1.0).fit(x, y)
    with pytest.raises(InputError, match="other classes"):
        LogisticHead(C=10.0).fit_from(head, x[y != "neu"], y[y != "neu"])
    with pytest.raises(ConfigError, match="needs a given C"):
        LogisticHead().fit_from(head, x, y)
    with pytest.raises(InputError, match=r"start head \(LogisticHead\)"):
        LogisticHead(C=10.0, normalize="l2").fit_from(head, x, y)
    linear = LinearHead(recipe=TINY).fit(x, y)
    with pytest.raises(InputError, match=r"start head \(LinearHead\)"):
        LogisticHead(C=10.0).fit_from(linear, x, y)
    with pytest.raises(ConfigError, match="LinearHead cannot start from another head's solution"):
        LinearHead(recipe=TINY).fit_from(linear, x, y)


def test_fit_from_leaves_no_start_behind():
    """The start travels as an argument of the fit, not as state: a later plain fit of the same head starts cold."""
    x, y = blobs(40)
    head = LogisticHead(C=1.0).fit(x, y)
    twin = LogisticHead(C=10.0)
    assert "started_from" in twin.fit_from(head, x, y).fit_report
    assert "started_from" not in twin.fit(x, y).fit_report and "_start" not in vars(twin)


def test_logistic_head_matches_scikit_learns_pipeline():
    """Same objective and inputs as StandardScaler + LogisticRegression: the same probabilities."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = blobs(60)
    ours = LogisticHead(C=0.3).fit(x, y)
    theirs = make_pipeline(StandardScaler(), LogisticRegression(C=0.3, max_iter=1000)).fit(x, y)
    np.testing.assert_allclose(ours.predict_proba(x), theirs.predict_proba(x), atol=2e-4)
    two = LogisticHead(C=0.3).fit(x[y != "neu"], y[y != "neu"])  # binary: one coefficient row in scikit-learn
    theirs2 = make_pipeline(StandardScaler(), LogisticRegression(C=0.3, max_iter=1000)).fit(x[y != "neu"], y[y != "neu"])
    np.testing.assert_allclose(two.predict_proba(x), theirs2.predict_proba(x), atol=2e-4)


def test_a_capped_head_says_so():
    """Hitting the cap is recorded as not converged, for the solver head and the epoch-trained ones."""
    x, y = blobs(100)
    assert LogisticHead(C=1e4, max_iter=2).fit(x, y).fit_report["converged"] is False
    capped = LinearHead(recipe=TINY).fit(x, y)  # two epochs, patience 10: stopped by the cap
    assert capped.fit_report["converged"] is False and capped.fit_report["iterations"] == 2


@pytest.mark.parametrize("normalize", ["none", "l2", "standard"])
def test_normalisation_is_part_of_the_saved_head(normalize, tmp_path):
    x, y = blobs(60)
    x = x * 50 + 7  # far from unit scale: each normalisation gives the classifier different inputs
    head = LogisticHead(C=1.0, normalize=normalize).fit(x, y)
    head.save(tmp_path / "h")
    loaded = load_head(tmp_path / "h")
    np.testing.assert_array_equal(loaded.predict_proba(x), head.predict_proba(x))
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    if normalize == "l2":  # scale-free: a row and a multiple of it get the same answer
        np.testing.assert_allclose(head.predict_proba(3 * x), head.predict_proba(x), atol=1e-6)
    else:
        assert not np.allclose(head.predict_proba(unit), head.predict_proba(x), atol=1e-3)
    with pytest.raises(ConfigError, match="normalize='l3'"):
        LogisticHead(normalize="l3").fit(x, y)


def test_mlp_hidden_width():
    net = MLPHead(hidden=8)._network(D, 3)
    assert net[1].weight.shape == (8, D) and net[4].weight.shape == (3, 8)
    with pytest.raises(ConfigError, match="hidden=0"):
        MLPHead(hidden=0).check_params()


def test_sklearn_head_refuses_state_it_cannot_save_without_pickles(tmp_path):
    x, y = blobs(30)
    head = make_head("sklearn:tree.DecisionTreeClassifier", params={"max_depth": 2}).fit(x, y)
    assert head.score(x, y) > 0.6  # usable in memory (sweeps never save heads)
    with pytest.raises(ConfigError, match="tree_.*cannot be saved without pickling"):
        head.save(tmp_path / "h")
    assert not (tmp_path / "h").exists()
    svm = make_head("sklearn:svm.LinearSVC").fit(x, y)
    assert isinstance(svm, SklearnHead) and svm.fit_report["converged"] is True
    np.testing.assert_allclose(svm.predict_proba(x).sum(axis=1), 1.0, atol=1e-5)


def test_on_text_logistic_and_linear_train_one_network_and_sklearn_none():
    """Issue 26: the registry is the one home of which network a head kind trains with the LM; logistic's is the
    linear head's nn.Linear (no C search there), built alike under one seed, and a scikit-learn head has none."""
    import torch

    from embedstore.estimators.heads import text_network
    from embedstore.text_training.model import head_module

    assert {kind: text_network(kind) for kind in ("logistic", "linear", "mlp")} == {
        "logistic": "linear", "linear": "linear", "mlp": "mlp"}
    logistic, linear = (head_module(kind, 8, 3, seed=5) for kind in ("logistic", "linear"))
    assert type(logistic) is torch.nn.Linear and torch.equal(logistic.weight, linear.weight)
    with pytest.raises(ConfigError, match=r"^head 'sklearn:svm\.LinearSVC': has no network to train with the LM"):
        text_network("sklearn:svm.LinearSVC")
