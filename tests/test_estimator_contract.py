"""What every registered aligner and head promises callers: its registry entry, `to_torch()` equal to `transform`,
scikit-learn's parameter protocol for real (clone, get/set_params, Pipeline, GridSearchCV), and one P@1."""
from dataclasses import replace

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.utils import estimator_checks as checks

from embedstore.analysis import measures
from embedstore.base.errors import ConfigError
from embedstore.base.retrieval import nn_p_at_1
from embedstore.estimators.aligners import ALIGNERS, Aligner, detect_collapse, make_aligner
from embedstore.estimators.aligners.inputs import aligner_for_run, takes_seed
from embedstore.estimators.heads import HEADS, Head, make_head
from embedstore.estimators.training import RECIPES
from embedstore.study import cells

D = 16
TINY_ALIGNER = replace(RECIPES["default"]["aligner"], max_epochs=2, min_steps=0)
#: Two-epoch fits exist to exercise the contract, not quality; they may look collapsed.
quiet_collapse = pytest.mark.filterwarnings("ignore::embedstore.estimators.aligners.CollapseWarning")


def pairs(n: int, seed: int = 0, noise: float = 0.1, shift: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((D, D)))
    x = rng.standard_normal((n, D)).astype(np.float32)
    y = (x @ q + shift + noise * rng.standard_normal((n, D))).astype(np.float32)
    return x, y


def aligner(arch: str, **params) -> Aligner:
    if ALIGNERS[arch].trains:
        params = {"recipe": TINY_ALIGNER, "seed": 1, **params}
    return make_aligner(arch, **params)


# --------------------------------------------------------------------------------------------- registry


def test_registries_are_generated_from_the_classes_in_the_papers_order():
    """A new aligner joins by declaring its name; the paper's five keep their order (tables list them so)."""
    paper = ["fc", "ae", "linear", "procrustes", "meanshift"]
    assert [name for name in ALIGNERS if name in paper] == paper
    assert [name for name in HEADS if name in ("linear", "mlp")] == ["linear", "mlp"]
    for name, cls in ALIGNERS.items():
        assert cls.name == name and issubclass(cls, Aligner) and cls.__module__.endswith("." + name)
    assert {n: c.trains for n, c in ALIGNERS.items() if n in paper} == {
        "fc": True, "ae": True, "linear": False, "procrustes": False, "meanshift": False}
    assert not ALIGNERS["meanshift"].paired and ALIGNERS["procrustes"].paired
    assert all(cls.name == name and issubclass(cls, Head) for name, cls in HEADS.items())
    assert cells.ALIGNERS == tuple(ALIGNERS) and cells.HEADS == tuple(HEADS)


@quiet_collapse
@pytest.mark.parametrize("arch", list(ALIGNERS))
@pytest.mark.parametrize("reverse", [False, True])
def test_aligns_target_at_test_is_the_aligners_answer(arch, reverse):
    expected = reverse or ALIGNERS[arch].trains  # trained aligners default to the identity term
    assert aligner(arch, reverse=reverse).aligns_target_at_test is expected
    if ALIGNERS[arch].trains:
        assert aligner(arch, reverse=reverse, identity=False).aligns_target_at_test is reverse


# --------------------------------------------------------------------------------------------- seeds

#: Settings under which an aligner's own randomness acts on 400 rows: RCSLS draws mini-batches and neighbour pools
#: smaller than the rows, self-learning an induction sample smaller than them (with defaults both take every row).
RANDOMNESS_IN_USE = {"rcsls": {"batch": 64, "pool": 128}, "selflearn": {"induce_rows": 150},
                     "selflearn_seeded": {"induce_rows": 150}}


def test_every_aligner_with_randomness_takes_the_one_seed_name():
    """`random_state` on three aligners and `seed` on the rest meant the run's seed never reached those three."""
    for name, cls in ALIGNERS.items():
        assert "random_state" not in cls().get_params()
        if cls.trains or name in RANDOMNESS_IN_USE:
            assert takes_seed(cls), name


@quiet_collapse
@pytest.mark.parametrize("arch", list(ALIGNERS))
def test_the_runs_seed_drives_the_aligners_randomness(arch):
    """Built as every run builds it: the same seed gives the same fit; for an aligner with randomness of its own,
    another seed gives another fit (the rows are the same, so only the aligner's randomness can differ)."""
    x, y = pairs(400)
    cls = ALIGNERS[arch]

    def fit(seed: int) -> np.ndarray:
        built = aligner_for_run(cls, 40, seed=seed, recipe=TINY_ALIGNER).set_params(**RANDOMNESS_IN_USE.get(arch, {}))
        assert built.get_params().get("seed", seed) == seed  # the seed a record names is the one fitted with
        return built.fit(x, y).transform(x[:50])

    first = fit(3)
    np.testing.assert_array_equal(fit(3), first)
    if takes_seed(cls):
        assert np.abs(fit(4) - first).max() > 1e-3
    else:
        np.testing.assert_array_equal(fit(4), first)


# --------------------------------------------------------------------------------------------- to_torch


@quiet_collapse
@pytest.mark.parametrize("arch", list(ALIGNERS))
@pytest.mark.parametrize("reverse", [False, True])
def test_to_torch_computes_transform_on_raw_vectors(arch, reverse):
    """The module finetune trains through and `analyze gradients` differentiates is the map `transform` applies
    (before the fix the gradient analysis fed raw vectors to FC/AE networks that expect standardized ones)."""
    x, y = pairs(400)
    fitted = aligner(arch, reverse=reverse).fit(x, y)
    probe = (y if reverse else x)[:50]
    expected = fitted.transform(probe)
    module = fitted.to_torch()
    assert not module.training
    with torch.no_grad():
        np.testing.assert_allclose(module(torch.from_numpy(probe)).numpy(), expected, rtol=1e-5, atol=1e-5)
    rep, _ = measures.representation_map(fitted, D)
    with torch.no_grad():
        np.testing.assert_allclose(rep(torch.from_numpy(probe)).numpy(), expected, rtol=1e-5, atol=1e-5)
    assert any(p.requires_grad for p in rep.parameters())


@quiet_collapse
@pytest.mark.parametrize("arch", list(ALIGNERS))
def test_a_row_maps_to_the_same_bits_whatever_rows_come_with_it(arch):
    """A sweep keeps each row's aligned output and serves it to later cells (`study.experiments._mapped`), so a row
    must map alike alone, beside 40 rows or beside 700, anywhere among them: with plain BLAS products its last
    bits moved with the call's shape, and a cell's record with the cells run before it (CI: a Ray sweep's
    C-search log-losses differed from the local sweep's at the 6th digit)."""
    x, y = pairs(400)
    fitted = aligner(arch).fit(x, y)
    rows = np.random.default_rng(5).standard_normal((700, D)).astype(np.float32) + x.mean(axis=0)
    whole = fitted.transform(rows)
    for seed, size in enumerate((1, 40, 255, 257, 700)):
        picked = np.random.default_rng(seed).permutation(len(rows))[:size]
        np.testing.assert_array_equal(fitted.transform(rows[picked]), whole[picked])


@quiet_collapse
def test_to_torch_is_a_copy_training_it_leaves_the_aligner_alone():
    x, y = pairs(300)
    for arch in ALIGNERS:
        fitted = aligner(arch).fit(x, y)
        before = fitted.transform(x[:10])
        module = fitted.to_torch()
        with torch.no_grad():
            for p in module.parameters():
                p.add_(1.0)
        np.testing.assert_array_equal(fitted.transform(x[:10]), before)


@quiet_collapse
def test_diagnostics_report_what_the_fit_found():
    x, y = pairs(300)
    trained = aligner("fc").fit(x, y)
    diag = trained.diagnostics()
    assert diag == {"val_mse": trained.val_mse_, "identity_val_mse": trained.identity_val_mse_,
                    "val_retrieval_p1": trained.val_retrieval_p1_,
                    "identity_retrieval_p1": trained.identity_retrieval_p1_, "collapsed": bool(trained.collapsed_)}
    assert type(diag["collapsed"]) is bool
    assert make_aligner("procrustes").fit(x, y).diagnostics() == {}


# --------------------------------------------------------------------------------------------- scikit-learn


def every_estimator() -> list:
    return [*(cls() for cls in ALIGNERS.values()), *(cls() for cls in HEADS.values())]


@pytest.mark.parametrize("estimator", every_estimator(), ids=lambda e: type(e).__name__)
def test_sklearn_parameter_protocol(estimator):
    name = type(estimator).__name__
    checks.check_parameters_default_constructible(name, estimator)
    checks.check_no_attributes_set_in_init(name, estimator)
    checks.check_get_params_invariance(name, estimator)
    checks.check_set_params(name, estimator)
    checks.check_estimator_cloneable(name, estimator)
    checks.check_estimator_repr(name, estimator)
    checks.check_mixin_order(name, estimator)
    params = estimator.get_params(deep=True)
    assert params == estimator.get_params(deep=False) and params
    first = next(iter(params))
    other = {"reverse": True, "seed": 7, "dropout": 0.3, "alpha": 0.5, "center": False}
    key = next((k for k in other if k in params), first)
    assert estimator.set_params(**{key: other[key]}) is estimator and estimator.get_params()[key] == other[key]
    cloned = clone(estimator)
    assert cloned is not estimator and cloned.get_params() == estimator.get_params()


@pytest.mark.parametrize("estimator", every_estimator(), ids=lambda e: type(e).__name__)
def test_set_params_refuses_unknown_names_in_one_line(estimator):
    with pytest.raises(ConfigError) as e:
        estimator.set_params(learning_rate=1.0)
    message = str(e.value)
    assert "\n" not in message and "learning_rate" in message and type(estimator).__name__ in message


@quiet_collapse
def test_clone_of_a_fitted_aligner_is_unfitted_with_the_same_params():
    x, y = pairs(300)
    for arch in ALIGNERS:
        fitted = aligner(arch, reverse=True).fit(x, y)
        cloned = clone(fitted)
        assert cloned.get_params() == fitted.get_params() and not hasattr(cloned, "dim_")
        np.testing.assert_array_equal(cloned.fit(x, y).transform(y[:5]), fitted.transform(y[:5]))


def test_a_frozen_aligner_and_a_grid_searched_head_run_in_a_sklearn_pipeline():
    """Aligners fit on (X_src, Y_tgt) matrices, so a fitted one enters the pipeline frozen; the head is searched."""
    x, y = pairs(600, seed=3)
    fitted = make_aligner("procrustes").fit(x, y)
    rng = np.random.default_rng(4)
    side = rng.choice([-1.0, 1.0], 240)
    task_x = rng.standard_normal((240, D)).astype(np.float32)
    task_x[:, 0] += 3 * side  # two well-separated blobs
    labels = np.where(side > 0, "pos", "neg")
    pipe = Pipeline([("aligner", FrozenEstimator(fitted)), ("head", make_head("linear"))])
    search = GridSearchCV(pipe, {"head__weight_decay": [0.0, 0.01]}, cv=2).fit(task_x, labels)
    assert set(search.cv_results_["param_head__weight_decay"]) == {0.0, 0.01}
    best = search.best_estimator_
    assert best.named_steps["aligner"].estimator is fitted  # frozen: never cloned, never refitted
    assert list(best.classes_) == ["neg", "pos"]
    head = best.named_steps["head"]
    np.testing.assert_array_equal(best.predict(task_x), head.predict(fitted.transform(task_x)))
    assert best.score(task_x, labels) == head.score(fitted.transform(task_x), labels) > 0.9


# --------------------------------------------------------------------------------------------- retrieval


def test_the_collapse_check_and_the_retrieval_record_report_one_p1_on_many_rows():
    """`analyze retrieval` printed 0.932 in its table and 0.930 in its footer: the collapse check used only the
    first 2,000 rows. On 2,500 held-out rows both figures must be the same number."""
    en, tr = pairs(2500, seed=5, noise=1.0)
    aligned = make_aligner("procrustes").fit(*pairs(2500, seed=5, noise=1.0)).transform(en)
    record = measures.evaluate_alignment(en, tr, aligned, ks=(1,))
    table = record["retrieval"]["aligned"]["forward"]["nn"]["p@1"]
    assert record["collapse"]["p1"] == table
    assert record["collapse"]["identity_p1"] == record["retrieval"]["raw"]["forward"]["nn"]["p@1"]
    assert nn_p_at_1(aligned[:2000], tr[:2000]) != table  # the rows beyond 2,000 do change the figure
    assert detect_collapse(aligned, en, tr).p1 == table


def test_nn_p_at_1_counts_own_pair_as_hit_and_ties_go_to_the_pair():
    keys = np.eye(4, dtype=np.float32)
    assert nn_p_at_1(keys, keys) == 1.0
    assert nn_p_at_1(keys[[1, 0, 2, 3]], keys) == 0.5
    assert nn_p_at_1(np.ones((3, 2), np.float32), np.ones((3, 2), np.float32)) == 1.0  # duplicates: a tie
