"""Aligners against known truth on synthetic vectors, plus their boundary checks and on-disk form."""
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from embedstore.estimators.aligners import (
    ALIGNERS,
    AEAligner,
    CollapseWarning,
    FCAligner,
    LinearAligner,
    MeanShiftAligner,
    ProcrustesAligner,
    TorchAligner,
    detect_collapse,
    load_aligner,
    make_aligner,
)
from embedstore.base.errors import ConfigError, EmbedstoreError, InputError
from embedstore.estimators.heads import LinearHead
from embedstore.estimators.training import RECIPES

D = 32
#: Two-epoch fits exercise saving and plumbing, not quality.
TINY = replace(RECIPES["default"]["aligner"], max_epochs=2, min_steps=0)


def rotation(d: int, seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def rotated_pairs(n: int, shift: float = 0.0, noise: float = 0.01, seed: int = 0):
    """Target = source rotated by R, shifted, plus small noise: the map every aligner should recover."""
    rng = np.random.default_rng(seed)
    r = rotation(D, seed + 1)
    x = rng.standard_normal((n, D)).astype(np.float32)
    y = (x @ r + shift + noise * rng.standard_normal((n, D))).astype(np.float32)
    return x, y, r


def test_procrustes_recovers_the_rotation():
    x, y, r = rotated_pairs(2000, shift=2.0)
    aligner = ProcrustesAligner().fit(x, y)
    np.testing.assert_allclose(aligner.W_, r, atol=2e-3)
    np.testing.assert_allclose(aligner.transform(x), y, atol=0.06)


def test_procrustes_without_centering_uses_no_means():
    x, y, r = rotated_pairs(2000)
    aligner = ProcrustesAligner(center=False).fit(x, y)
    np.testing.assert_allclose(aligner.W_, r, atol=2e-3)
    np.testing.assert_allclose(aligner.transform(x), x @ aligner.W_, atol=1e-6)


def test_linear_recovers_the_rotation_and_shift():
    x, y, r = rotated_pairs(2000, shift=2.0)
    aligner = LinearAligner().fit(x, y)
    np.testing.assert_allclose(aligner.W_, r, atol=2e-3)
    np.testing.assert_allclose(aligner.b_, np.full(D, 2.0), atol=2e-3)


def test_meanshift_recovers_a_pure_shift_from_unpaired_sets():
    rng = np.random.default_rng(0)
    shift = rng.standard_normal(D).astype(np.float32)
    x = rng.standard_normal((300, D)).astype(np.float32)
    y = rng.standard_normal((200, D)).astype(np.float32)
    x -= x.mean(axis=0)
    y += shift - y.mean(axis=0)
    aligner = MeanShiftAligner().fit(x, y)
    probe = rng.standard_normal((5, D)).astype(np.float32)
    np.testing.assert_allclose(aligner.transform(probe), probe + shift, atol=1e-5)


@pytest.mark.parametrize("cls", [ProcrustesAligner, LinearAligner])
def test_reverse_learns_the_inverse_map(cls):
    x, y, r = rotated_pairs(2000, shift=1.0)
    aligner = cls(reverse=True).fit(x, y)
    np.testing.assert_allclose(aligner.W_, r.T, atol=2e-3)
    np.testing.assert_allclose(aligner.transform(y), x, atol=0.06)


def test_meanshift_reverse_shifts_back():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((100, D)).astype(np.float32)
    aligner = MeanShiftAligner(reverse=True).fit(x, x + 3.0)
    np.testing.assert_allclose(aligner.transform(x + 3.0), x, atol=1e-5)


@pytest.mark.heavy
@pytest.mark.parallel
@pytest.mark.parametrize("cls", [pytest.param(FCAligner, marks=pytest.mark.longest), AEAligner, ALIGNERS["resmlp"]])
def test_trained_aligners_recover_a_rotation_under_the_default_recipe(cls):
    # measured: validation MSE 2.3% (FC) / 2.7% (AE) of the identity map's, P@1 0.99 where identity's is ~0
    x, y, _ = rotated_pairs(3000, shift=3.0)
    aligner = cls().fit(x, y)
    assert aligner.val_mse_ < 0.05 * aligner.identity_val_mse_
    assert aligner.val_retrieval_p1_ > 0.9 > 0.1 > aligner.identity_retrieval_p1_
    assert not aligner.collapsed_


def test_residual_mlp_starts_as_the_identity_map():
    """Its correction's last layer starts at zero, so before training it leaves every vector where it is (the
    identity is already a good map between two languages of one multilingual encoder)."""
    x = torch.randn(5, D)
    torch.testing.assert_close(ALIGNERS["resmlp"]()._network(D)(x), x)


def test_standardization_is_learned_from_training_rows_and_undone_on_output():
    x, y, _ = rotated_pairs(300, shift=3.0)
    aligner = AEAligner(recipe=TINY).fit(x, y)
    both = np.concatenate([x, y])
    assert np.abs(aligner.shift_ - both.mean(0)).max() < 0.3  # 90% of rows: training split only
    assert 1.5 < aligner.scale_[0] < 2.2  # sqrt(unit variance + the two languages' +-1.5 offsets squared) ~ 1.8
    module = aligner.to_torch()
    with torch.no_grad():
        np.testing.assert_allclose(module(torch.from_numpy(x[:20])).numpy(), aligner.transform(x[:20]), atol=1e-5)
    raw = AEAligner(recipe=TINY, standardize=False).fit(x, y)
    assert not raw.shift_.any() and raw.scale_.tolist() == [1.0]


@pytest.mark.heavy
@pytest.mark.parallel
def test_torch_reverse_maps_target_back_to_source():
    x, y, _ = rotated_pairs(3000, shift=3.0)
    aligner = AEAligner(reverse=True).fit(x, y)
    back = aligner.transform(y)
    assert np.mean((back - x) ** 2) < 0.05 * np.mean((y - x) ** 2)
    assert not aligner.collapsed_


def test_identity_term_adds_target_to_target_rows():
    src, tgt = torch.zeros(3, D), torch.ones(3, D)
    inputs, targets = FCAligner()._rows(src, tgt)
    assert torch.equal(inputs, torch.cat([src, tgt])) and torch.equal(targets, torch.cat([tgt, tgt]))
    inputs, targets = FCAligner(identity=False)._rows(src, tgt)
    assert torch.equal(inputs, src) and torch.equal(targets, tgt)


#: Two-epoch fits exist to exercise saving, not quality; they are expected to look collapsed.
quiet_collapse = pytest.mark.filterwarnings("ignore::embedstore.estimators.aligners.CollapseWarning")


def fitted(arch: str) -> tuple:
    x, y, _ = rotated_pairs(300, shift=1.0)
    params = {"recipe": TINY, "seed": 3} if ALIGNERS[arch].trains else {}
    return make_aligner(arch, **params).fit(x, y), x


@quiet_collapse
@pytest.mark.parametrize("arch", list(ALIGNERS))
def test_save_load_round_trip(arch, tmp_path):
    aligner, x = fitted(arch)
    aligner.save(tmp_path / "m", provenance={"store_key": "e5-small/layer12", "pairs": 300})
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["provenance"] == {"store_key": "e5-small/layer12", "pairs": 300}
    assert config["class"] == type(aligner).__name__ and config["dim"] == D
    for loaded in (load_aligner(tmp_path / "m"), type(aligner).load(tmp_path / "m")):
        np.testing.assert_array_equal(loaded.transform(x), aligner.transform(x))
        assert loaded.get_params() == aligner.get_params()
        assert repr(loaded) == repr(aligner)


@quiet_collapse
def test_torch_aligner_keeps_its_diagnostics_through_save(tmp_path):
    aligner, _ = fitted("fc")
    loaded = load_aligner(aligner.save(tmp_path / "m"))
    for name in TorchAligner._state_attrs:
        assert getattr(loaded, name) == getattr(aligner, name)


@quiet_collapse
def test_nothing_is_pickled(tmp_path):
    aligner, _ = fitted("fc")
    aligner.save(tmp_path / "m")
    for path in (tmp_path / "m").iterdir():
        assert path.suffix in (".json", ".safetensors")
        assert not path.read_bytes().startswith(b"\x80")  # pickle protocol 2+ magic
        assert not path.read_bytes().startswith(b"PK")  # torch.save's zip container


def test_load_refuses_unregistered_classes(tmp_path):
    aligner, _ = fitted("linear")
    aligner.save(tmp_path / "m")
    config_path = tmp_path / "m" / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "class": "os.system"}))
    with pytest.raises(InputError, match="os.system"):
        load_aligner(tmp_path / "m")


def test_load_aligner_refuses_a_head(tmp_path):
    rng = np.random.default_rng(0)
    head = LinearHead(recipe=replace(RECIPES["default"]["head"], max_epochs=1)).fit(
        rng.standard_normal((40, D)), np.arange(40) % 2)
    head.save(tmp_path / "h")
    with pytest.raises(InputError, match="LinearHead"):
        load_aligner(tmp_path / "h")
    with pytest.raises(InputError, match="missing"):
        load_aligner(tmp_path / "nowhere")


def test_make_aligner_names_what_is_allowed():
    assert isinstance(make_aligner("procrustes", center=False), ProcrustesAligner)
    with pytest.raises(ConfigError, match="aligner 'cca' is unknown; use one of") as refused:
        make_aligner("cca")
    assert all(name in str(refused.value) for name in ALIGNERS)  # the registry is the list it names
    with pytest.raises(ConfigError, match="lr"):
        make_aligner("linear", lr=1.0)


def test_get_params_and_repr():
    aligner = FCAligner(seed=3, identity=False)
    assert aligner.get_params() == {"identity": False, "reverse": False, "recipe": "default", "seed": 3,
                                    "progress": False, "device": "cpu", "standardize": True}
    assert repr(aligner) == "FCAligner(identity=False, seed=3)"
    assert repr(LinearAligner()) == "LinearAligner()"


def one_line_error(excinfo: pytest.ExceptionInfo, *words: str) -> None:
    message = str(excinfo.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_validation_errors_are_one_line_and_name_the_parameter():
    good = np.zeros((10, D), dtype=np.float32)
    bad = good.copy()
    bad[4, 2] = np.nan
    with pytest.raises(InputError) as e:
        LinearAligner().fit(bad, good)
    one_line_error(e, "X_src", "row 4", "NaN")
    with pytest.raises(InputError) as e:
        LinearAligner().fit(good, np.full((10, D), np.inf))
    one_line_error(e, "Y_tgt", "row 0")
    with pytest.raises(InputError) as e:
        LinearAligner().fit(good[0], good)
    one_line_error(e, "X_src", "2-D", "reshape")
    with pytest.raises(InputError) as e:
        LinearAligner().fit(good, np.zeros((10, D + 1)))
    one_line_error(e, "Y_tgt", str(D + 1), str(D))
    with pytest.raises(InputError) as e:
        ProcrustesAligner().fit(good, good[:5])
    one_line_error(e, "Y_tgt", "5 rows", "10")
    with pytest.raises(InputError) as e:
        LinearAligner().fit(np.array([["a"] * D] * 3), good[:3])
    one_line_error(e, "X_src", "numbers")


def test_fitted_dim_is_enforced():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, D))
    aligner = MeanShiftAligner()
    with pytest.raises(EmbedstoreError) as e:
        aligner.transform(x)
    one_line_error(e, "not fitted", "fit(X_src, Y_tgt)")
    aligner.fit(x, x)
    with pytest.raises(InputError) as e:
        aligner.transform(x[:, :8])
    one_line_error(e, "X", "8 columns", f"dim {D}")
    with pytest.raises(InputError) as e:
        aligner.fit(x[:, :8], x[:, :8])
    one_line_error(e, "X_src", "already fitted", f"dim {D}")


def test_transform_returns_float32_for_float64_input():
    x = np.random.default_rng(0).standard_normal((20, D))
    assert MeanShiftAligner().fit(x, x).transform(x).dtype == np.float32


def test_detect_collapse_flags_outputs_at_the_target_mean():
    x, y, _ = rotated_pairs(500)
    collapsed = np.broadcast_to(y.mean(axis=0), y.shape).copy()
    check = detect_collapse(collapsed, x, y)
    assert check.collapsed and check.variance_ratio < 1e-6
    assert "variance" in check.reason
    healthy = detect_collapse(y + 0.01, x, y)
    assert not healthy.collapsed and healthy.p1 == 1.0


def test_detect_collapse_flags_retrieval_far_below_identity():
    rng = np.random.default_rng(0)
    y = rng.standard_normal((300, D)).astype(np.float32)
    shuffled = y[rng.permutation(300)]  # full spread, pairs destroyed
    check = detect_collapse(shuffled, y + 0.01, y)
    assert check.collapsed and check.identity_p1 == 1.0 and check.p1 < 0.1
    assert "P@1" in check.reason


class _MeanOnly(nn.Module):
    """A network that ignores its input: whatever training does, it can only output one vector."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(len(x), -1)


class _CollapsedAligner(TorchAligner):
    def _network(self, dim: int) -> nn.Module:
        return _MeanOnly(dim)


def test_fit_warns_and_records_collapse():
    x, y, _ = rotated_pairs(500, shift=1.0)
    with pytest.warns(CollapseWarning, match="collapsed"):
        aligner = _CollapsedAligner(recipe=TINY).fit(x, y)
    assert aligner.collapsed_ and aligner.output_variance_ratio_ < 1e-6
