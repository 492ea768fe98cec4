"""Behaviour of the few- and zero-pair aligners (issue 14) and of the rows they are fitted on."""
import numpy as np
import pytest

from embedstore.base.errors import InputError
from embedstore.base.retrieval import nn_p_at_1
from embedstore.data.selection import subsample
from embedstore.estimators.aligners import ALIGNERS, make_aligner
from embedstore.estimators.aligners.inputs import fit_rows

D = 24


def clustered(n: int, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
    """Points around shared cluster centres, with unequal spread per coordinate (structure a map can match)."""
    labels = rng.integers(len(centres), size=n)
    return (centres[labels] + 0.05 * rng.standard_normal((n, D))).astype(np.float32)


def language_pair(seed: int = 0, n: int = 1200):
    """Source = content; target = the same content rotated, plus a language offset. Returns two unrelated
    monolingual sets, and held-out pairs (x, y) for judging the map."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, D)) * np.linspace(2.0, 0.3, D)
    q, _ = np.linalg.qr(rng.standard_normal((D, D)))
    offset = 3.0 * rng.standard_normal(D)
    mono_x = clustered(n, rng, centres)
    mono_y = (clustered(n, rng, centres) @ q + offset).astype(np.float32)
    test_x = clustered(300, rng, centres)
    test_y = (test_x @ q + offset).astype(np.float32)
    return mono_x, mono_y, test_x, test_y, q


def test_selflearn_recovers_a_rotation_from_unrelated_monolingual_sets():
    mono_x, mono_y, test_x, test_y, q = language_pair()
    aligner = make_aligner("selflearn").fit(mono_x, mono_y)
    assert np.abs(aligner.W_ - q).max() < 0.1  # the rotation itself, though no pair was given
    assert nn_p_at_1(aligner.transform(test_x), test_y) > 0.8
    assert aligner.diagnostics()["n_source"] == len(mono_x) and aligner.diagnostics()["n_seed"] == 0


def test_seeded_selflearn_keeps_its_seed_pairs_and_grows_the_dictionary():
    mono_x, mono_y, test_x, test_y, q = language_pair(seed=1)
    seed_x, seed_y = test_x[:30], test_y[:30]
    aligner = make_aligner("selflearn_seeded", seed_pairs=30).fit(np.concatenate([seed_x, mono_x]),
                                                                   np.concatenate([seed_y, mono_y]))
    assert aligner.diagnostics()["dictionary_size"] > 30
    assert np.abs(aligner.W_ - q).max() < 0.1
    with pytest.raises(InputError, match="seed_pairs 5000"):
        make_aligner("selflearn_seeded", seed_pairs=5000).fit(mono_x, mono_y)


def test_lsar_moves_only_the_language_direction_and_records_its_evidence():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5000, D)).astype(np.float32)
    offset = np.zeros(D, np.float32)
    offset[3] = 5.0
    y = (rng.standard_normal((7000, D)) + offset).astype(np.float32)
    aligner = make_aligner("lsar").fit(x, y)
    assert aligner.diagnostics() == {"rank": 1, "n_source": 5000, "n_target": 7000}
    moved = aligner.transform(x) - x
    assert np.abs(np.delete(moved, 3, axis=1)).max() < 0.1  # content coordinates stay
    assert abs(aligner.transform(x)[:, 3].mean() - y[:, 3].mean()) < 0.05


def test_lir_keeps_directions_that_separate_languages_and_leaves_content_alone():
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((600, D)) * np.linspace(3, 1, D)).astype(np.float32)
    y = (rng.standard_normal((600, D)) * np.linspace(3, 1, D)).astype(np.float32)
    y[:, 0] += 8.0  # the language direction
    aligner = make_aligner("lir", max_rank=4).fit(x, y)
    assert aligner.rank_ >= 1
    proj = aligner.proj_
    assert proj[0, 0] > 0.9 and np.trace(proj) == pytest.approx(aligner.rank_, abs=1e-4)
    same = make_aligner("lir").fit(x, x[::-1].copy())
    assert same.rank_ == 0 and np.allclose(same.transform(x), x, atol=1e-5)  # no language gap: identity


def test_whiten_gives_source_vectors_the_targets_mean_and_covariance():
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((4000, 8)) * [4, 3, 2, 1, 1, 1, 0.5, 0.5]).astype(np.float32)
    y = (rng.standard_normal((4000, 8)) @ rng.standard_normal((8, 8)) + 2).astype(np.float32)
    out = make_aligner("whiten", shrinkage=0.0).fit(x, y).transform(x)
    assert np.allclose(out.mean(axis=0), y.mean(axis=0), atol=0.05)
    assert np.allclose(np.cov(out.T), np.cov(y.T), atol=0.15 * np.abs(np.cov(y.T)).max())
    truncated = make_aligner("whiten", dims=3).fit(x, y)
    assert truncated.diagnostics()["dims_kept"] == 3 and np.linalg.matrix_rank(truncated.W_) == 3


def test_rcsls_lowers_its_loss_and_does_not_lose_procrustes_retrieval():
    rng = np.random.default_rng(5)
    q, _ = np.linalg.qr(rng.standard_normal((D, D)))
    x = rng.standard_normal((800, D)).astype(np.float32)
    y = (x @ q + 0.6 * rng.standard_normal((800, D))).astype(np.float32)
    rcsls = make_aligner("rcsls").fit(x[:600], y[:600])
    diag = rcsls.diagnostics()
    assert diag["loss_end"] < diag["loss_start"]
    procrustes = make_aligner("procrustes").fit(x[:600], y[:600])
    assert nn_p_at_1(rcsls.transform(x[600:]), y[600:]) >= nn_p_at_1(procrustes.transform(x[600:]), y[600:]) - 0.03


def test_fit_rows_never_pair_unpaired_aligners_and_leave_paired_ones_as_they_were():
    paired = fit_rows(ALIGNERS["procrustes"], 100, 40, 3, "pairs")
    assert np.array_equal(paired.source, subsample(100, 40, 3)) and paired.n_pairs == 40
    unpaired = fit_rows(ALIGNERS["selflearn"], 100, None, 3, "pairs")
    assert unpaired.n_pairs == 0 and len(unpaired.source) == len(unpaired.target) == 50
    assert not set(unpaired.source) & set(unpaired.target)  # no source row's translation is on the target side
    seeded = fit_rows(ALIGNERS["selflearn_seeded"], 100, 10, 3, "pairs")
    assert np.array_equal(seeded.source[:10], seeded.target[:10]) and seeded.n_pairs == 10
    assert not set(seeded.source[10:]) & set(seeded.target[10:]) and len(seeded.source) == 55
