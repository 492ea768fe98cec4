"""Alignment analyses against known truth on synthetic vectors (no model, no store)."""
import numpy as np
import pytest
import torch

from embedstore.analysis import measures as A
from embedstore.estimators.aligners import make_aligner
from embedstore.base.errors import ConfigError, InputError
from embedstore.estimators.heads import make_head
from embedstore.estimators.training import Recipe

N, D = 400, 24


def rotated_pairs(seed: int = 0, noise: float = 0.1, offset: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """English = Gaussian (+ a common offset, i.e. anisotropy); translation = English rotated, plus noise."""
    rng = np.random.default_rng(seed)
    en = rng.standard_normal((N, D)) + offset
    rotation, _ = np.linalg.qr(rng.standard_normal((D, D)))
    tr = en @ rotation + noise * rng.standard_normal((N, D))
    return en.astype(np.float32), tr.astype(np.float32)


def test_procrustes_on_a_rotated_noisy_target_aligns_held_out_rows_almost_perfectly():
    en, tr = rotated_pairs()
    split = A.random_split(N, 0.25, seed=0)
    report = A.held_out_alignment(en, tr, split, make_aligner("procrustes"))
    cos, raw, aligned = report["cosine"], report["retrieval"]["raw"], report["retrieval"]["aligned"]
    assert cos["rows"] == len(split.test) == 100
    assert cos["aligned_tr"] > 0.98 and cos["en_tr"] < 0.5
    for direction in ("forward", "backward"):
        for method in ("nn", "csls"):
            assert aligned[direction][method]["p@1"] >= 0.99
            assert raw[direction][method]["p@1"] < 0.2
    assert not report["collapse"]["collapsed"]


def test_held_out_alignment_fits_on_the_fit_rows_only():
    en, tr = rotated_pairs()
    split = A.random_split(N, 0.25, seed=1)
    aligner = make_aligner("linear")
    A.held_out_alignment(en, tr, split, aligner)
    on_fit_rows = make_aligner("linear").fit(en[split.fit], tr[split.fit])
    np.testing.assert_allclose(aligner.W_, on_fit_rows.W_)


def test_shuffled_baseline_sits_below_paired_cosine_even_when_every_cosine_is_high():
    # a common offset makes every pair of vectors similar (anisotropy)
    en, tr = rotated_pairs(offset=3.0)
    aligned = make_aligner("procrustes").fit(en, tr).transform(en)
    cos = A.cosine_report(en, tr, aligned, seed=0)
    assert cos["shuffled"] > 0.8  # unrelated pairs already look similar after alignment...
    assert cos["aligned_tr"] > cos["shuffled"] + 0.05  # ...but paired rows are more similar still
    # the raw spaces are rotated against each other: their paired cosine is no better than the shuffled floor
    assert abs(cos["en_tr"] - cos["shuffled_en_tr"]) < 0.05
    assert A.cosine_report(en, tr, aligned, seed=0) == cos  # seeded


def test_derangement_never_pairs_a_row_with_itself():
    for n in (2, 3, 10, 101):
        perm = A.derangement(n, seed=n)
        assert sorted(perm.tolist()) == list(range(n))
        assert not np.any(perm == np.arange(n))


def test_csls_beats_nearest_neighbour_when_hubs_attract_every_query():
    """Hubs: 10% of keys shrunk toward the common mean are near every query and steal NN retrievals."""
    rng = np.random.default_rng(1)
    n, d = 300, 64
    mean = rng.standard_normal(d)
    mean *= 3 * np.sqrt(d) / 4 / np.linalg.norm(mean)
    base = rng.standard_normal((n, d))
    shrink = np.ones(n)
    shrink[: n // 10] = 0.2
    queries = base + mean
    keys = shrink[:, None] * (base + 2.0 * rng.standard_normal((n, d))) + mean
    report = A.retrieval_report(queries, keys, ks=(1, 5), csls_k=10)
    nn, csls = report["forward"]["nn"], report["forward"]["csls"]
    print(f"\nhub-heavy: NN P@1 {nn['p@1']:.3f}, CSLS P@1 {csls['p@1']:.3f}")
    assert csls["p@1"] >= nn["p@1"] + 0.2
    assert csls["p@5"] >= nn["p@5"]


def test_p_at_k_counts_the_pair_within_the_top_k():
    keys = np.eye(4, dtype=np.float32)
    # query 0 points at key 1 first, its own key second; the others point at their own key
    queries = np.array([[0.6, 0.8, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], np.float32)
    report = A.retrieval_report(queries, keys, ks=(1, 2), csls_k=1)
    assert report["forward"]["nn"] == {"p@1": 0.75, "p@2": 1.0}
    with pytest.raises(ConfigError, match="ks"):
        A.retrieval_report(queries, keys, ks=(5,))


def test_an_aligner_collapsed_onto_the_target_mean_is_flagged_though_its_cosine_looks_fine():
    en, tr = rotated_pairs(offset=3.0)
    rng = np.random.default_rng(0)
    collapsed = tr.mean(axis=0) + 1e-3 * rng.standard_normal(tr.shape).astype(np.float32)
    report = A.evaluate_alignment(en, tr, collapsed)
    assert report["cosine"]["aligned_tr"] > 0.8  # cosine alone would call this a good aligner
    assert report["retrieval"]["aligned"]["forward"]["nn"]["p@1"] < 0.05
    assert report["collapse"]["collapsed"]
    assert "variance" in report["collapse"]["reason"]


def test_layer_report_fits_each_layer_separately():
    en, tr = rotated_pairs()
    rng = np.random.default_rng(5)
    unrelated = rng.standard_normal(tr.shape).astype(np.float32)
    split = A.random_split(N, 0.25, seed=0)
    rows = A.layer_report({3: en, 7: en}, {3: tr, 7: unrelated}, split, lambda: make_aligner("procrustes"))
    assert [r["layer"] for r in rows] == [3, 7]
    assert rows[0]["retrieval"]["aligned"]["forward"]["nn"]["p@1"] >= 0.99
    assert rows[1]["retrieval"]["aligned"]["forward"]["nn"]["p@1"] < 0.1


def test_splits_are_disjoint_seeded_and_sized():
    split = A.random_split(100, 0.2, seed=3)
    assert len(split.test) == 20 and len(split.fit) == 80
    assert np.array_equal(np.sort(np.concatenate([split.fit, split.test])), np.arange(100))
    assert np.array_equal(A.random_split(100, 0.2, seed=3).test, split.test)
    small = A.limit_split(split, 30, 10, seed=0)
    larger = A.limit_split(split, 50, 15, seed=0)
    assert set(small.fit) <= set(larger.fit) <= set(split.fit)
    assert len(small.test) == 10 and set(small.test) <= set(split.test)


def test_fold_split_takes_the_rest_for_a_side_left_out_and_refuses_overlap():
    folds = [str(i % 10) for i in range(50)]
    split = A.fold_split(folds, None, ["8", "9"])
    assert {folds[i] for i in split.test} == {"8", "9"}
    assert {folds[i] for i in split.fit} == {str(i) for i in range(8)}
    with pytest.raises(ConfigError, match="folds 5 of column 'fold' are both fit and test"):
        A.fold_split(folds, ["0", "5"], ["5"])
    with pytest.raises(ConfigError, match="test folds 12 do not occur in column 'fold'"):
        A.fold_split(folds, ["0"], ["12"])


def test_paired_inputs_must_match():
    en, tr = rotated_pairs()
    with pytest.raises(InputError, match="tr has shape"):
        A.cosine_report(en, tr[:-1], en)
    with pytest.raises(ConfigError, match="reverse=True"):
        A.held_out_alignment(en, tr, A.random_split(N, 0.2, 0), make_aligner("procrustes", reverse=True))


# --------------------------------------------------------------------------------------------- gradients


@pytest.fixture(scope="module")
def labelled():
    """Labels = which side of direction u a row lies on; a linear head learns to read u."""
    en, _ = rotated_pairs(seed=2)
    labels = (en[:, 0] > 0).astype(int)
    head = make_head("linear", seed=0).fit(en, labels)
    return en, labels, head


def _targets(en: np.ndarray, labels: np.ndarray, how: str) -> np.ndarray:
    """Translation vectors that differ from English along u (the task's axis) or v (orthogonal to it)."""
    sign = 2 * labels - 1
    u, v = np.eye(D, dtype=np.float32)[0], np.eye(D, dtype=np.float32)[1]
    random_sign = np.random.default_rng(0).choice([-1, 1], len(en))
    shift = {"aligned": sign[:, None] * u, "opposed": -sign[:, None] * u, "orthogonal": random_sign[:, None] * v}[how]
    return (en + shift).astype(np.float32)


@pytest.mark.parametrize("how,low,high", [("aligned", 0.6, 1.0), ("orthogonal", -0.1, 0.1), ("opposed", -1.0, -0.6)])
def test_gradient_cosine_has_the_known_sign(labelled, how, low, high):
    """Targets shifted toward each row's own class side: moving z toward the translation also helps the task
    (cosine near +1); shifted away: the losses conflict (near -1); shifted along an axis the head ignores: 0."""
    en, labels, head = labelled
    report = A.gradient_alignment(en, _targets(en, labels, how), labels, head, batch_size=50, seed=0)
    print(f"\n{how}: parameters {report['parameters']['mean']:+.3f}, representation "
          f"{report['representation']['mean']:+.3f}")
    assert report["rows"] == N and report["parameters"]["n"] == N // 50
    for measure in ("parameters", "representation"):
        assert low <= report[measure]["mean"] <= high
        assert report[measure]["alignment_grad_norm"] > 0 and report[measure]["task_grad_norm"] > 0


def test_affine_aligners_become_an_equivalent_trainable_linear_map():
    en, tr = rotated_pairs()
    for arch in ("procrustes", "linear", "meanshift"):
        aligner = make_aligner(arch).fit(en, tr)
        module, described = A.representation_map(aligner, D)
        assert type(aligner).__name__ in described
        with torch.no_grad():
            mapped = module(torch.from_numpy(en[:20])).numpy()
        np.testing.assert_allclose(mapped, aligner.transform(en[:20]), atol=1e-4)


def test_gradient_alignment_differentiates_a_trained_aligner_network_and_drops_unseen_labels(labelled):
    """The losses are the ones of the aligner's own map (its transform), and rows with unseen labels are dropped."""
    en, labels, head = labelled
    tr = _targets(en, labels, "aligned")
    quick = Recipe(lr=1e-3, batch_size=128, max_epochs=2, patience=1, weight_decay=0.0)
    aligner = make_aligner("ae", recipe=quick, seed=0).fit(en, tr)
    odd = labels.copy()
    odd[:7] = 9  # a class the head was never fitted on
    report = A.gradient_alignment(en, tr, odd, head, aligner=aligner, batch_size=100)
    assert report["map"] == "AEAligner.to_torch()"
    assert report["dropped_unseen_label"] == 7 and report["rows"] == N - 7
    kept = np.flatnonzero(odd != 9)
    aligned = aligner.transform(en[kept])
    expected_mse = float(np.mean((aligned.astype(np.float64) - tr[kept]) ** 2))
    assert report["alignment_loss"] == pytest.approx(expected_mse, rel=1e-4)
    proba = head.predict_proba(aligned).astype(np.float64)
    expected_ce = float(-np.mean(np.log(proba[np.arange(len(kept)), odd[kept]])))
    assert report["task_loss"] == pytest.approx(expected_ce, rel=1e-3)
    assert report["parameters"]["n"] == -(-(N - 7) // 100) and report["parameters"]["alignment_grad_norm"] > 0


def test_an_aligner_applied_to_target_text_is_also_judged_in_the_heads_space():
    """FC with the identity term maps target text at test time, so the head compares A(en) with A(tr): retrieval
    and the collapse check there sit beside A(en) against raw tr (which alone was measured before)."""
    en, tr = rotated_pairs(noise=0.3)
    split = A.random_split(N, 0.25, seed=0)
    quick = Recipe(lr=1e-3, batch_size=64, max_epochs=3, patience=3, weight_decay=0.0)
    fc = make_aligner("fc", recipe=quick, seed=0)
    report = A.held_out_alignment(en, tr, split, fc)
    test_en, test_tr = en[split.test], tr[split.test]
    head_space = report["retrieval"]["head_space"]["forward"]["nn"]["p@1"]
    assert head_space == A.retrieval_report(fc.transform(test_en), fc.transform(test_tr), ks=(1,))["forward"]["nn"]["p@1"]
    assert report["collapse_head_space"]["p1"] == head_space
    # the identity map it is judged against is still raw en against raw tr
    assert report["collapse_head_space"]["identity_p1"] == report["retrieval"]["raw"]["forward"]["nn"]["p@1"]
    closed_form = A.held_out_alignment(en, tr, split, make_aligner("procrustes"))
    assert "head_space" not in closed_form["retrieval"] and "collapse_head_space" not in closed_form


@pytest.mark.parametrize("ks", [(1, 5), (5,)])
def test_a_reports_collapse_check_is_the_one_detect_collapse_gives(ks):
    """evaluate_alignment reads the collapse check's P@1s off its own retrievals instead of searching the rows
    again: the check must be exactly `collapse_report`'s, healthy or collapsed, in the head's space too, and a
    P@1 the caller did not ask for stays out of the retrieval figures."""
    en, tr = rotated_pairs(offset=3.0)
    rng = np.random.default_rng(1)
    healthy = tr + 0.05 * rng.standard_normal(tr.shape).astype(np.float32)
    collapsed = tr.mean(axis=0) + 1e-3 * rng.standard_normal(tr.shape).astype(np.float32)
    shuffled = tr[rng.permutation(N)]
    for aligned in (healthy, collapsed, shuffled):
        report = A.evaluate_alignment(en, tr, aligned, aligned_tr=tr * 1.5, ks=ks)
        assert report["collapse"] == A.collapse_report(aligned, en, tr)
        assert report["collapse_head_space"] == A.collapse_report(aligned, en, tr * 1.5, raw_tr=tr)
        for space in ("raw", "aligned", "head_space"):
            assert set(report["retrieval"][space]["forward"]["nn"]) == {f"p@{k}" for k in ks}
    assert A.evaluate_alignment(en, tr, collapsed, ks=ks)["collapse"]["collapsed"]
    assert not A.evaluate_alignment(en, tr, healthy, ks=ks)["collapse"]["collapsed"]


def test_the_raw_retrieval_of_the_same_rows_is_searched_once_per_process(monkeypatch):
    """Every aligner of a sweep's seed is judged on the same held-out rows; their raw (identity) retrieval is a fact
    of the rows, searched once and handed out as a copy. Other rows, or one changed value, are searched anew."""
    monkeypatch.setattr(A, "_RAW_RETRIEVALS", {})
    searched = []
    original = A.retrieval_report
    monkeypatch.setattr(A, "retrieval_report", lambda q, k, *a, **kw: searched.append(q) or original(q, k, *a, **kw))
    en, tr = rotated_pairs()
    first = A.evaluate_alignment(en, tr, tr + 0.1)
    first["retrieval"]["raw"]["forward"]["nn"]["p@1"] = -1.0  # a caller's edit stays in its own copy
    second = A.evaluate_alignment(en, tr, tr + 0.2)
    assert len(searched) == 3  # raw once, then each aligned set
    assert second["retrieval"]["raw"] == original(en, tr)
    changed = tr.copy()
    changed[0, 0] += 1.0
    A.evaluate_alignment(en, changed, changed + 0.1)
    assert len(searched) == 5
