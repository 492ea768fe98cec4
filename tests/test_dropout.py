"""The estimators' dropout: torch's semantics (keep rate, 1/(1-p) scaling, gradient, eval identity), masks fixed by
torch's seed, and the networks that train with it."""
import pytest
import torch
from torch import nn

from embedstore.estimators.aligners.fc import FCAligner
from embedstore.estimators.dropout import Dropout
from embedstore.estimators.heads.mlp import MLPHead
from embedstore.export.layers import dense_steps


@pytest.mark.parametrize("p", [0.5, 0.1, 0.3])
def test_it_keeps_each_element_with_probability_one_minus_p_and_scales_the_kept(p):
    torch.manual_seed(0)
    x = torch.rand(1000, 1000) + 1  # no zeros, so a zero output is a dropped element
    out = Dropout(p).train()(x)
    kept = out != 0
    assert abs(kept.float().mean().item() - (1 - p)) < 0.002  # 1M draws: the binomial sd is <= 0.0005
    assert torch.allclose(out[kept], x[kept] / (1 - p))


def test_the_gradient_is_the_mask_as_torchs_dropout_gives_it():
    x = torch.randn(64, 32, requires_grad=True)
    torch.manual_seed(1)
    out = Dropout(0.5).train()(x)
    out.sum().backward()
    assert torch.equal(x.grad, (out != 0).float() * 2)


def test_torchs_seed_fixes_the_masks_and_another_seed_draws_others():
    layer, x = Dropout(0.5).train(), torch.ones(256, 128)
    masks = {}
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        masks.setdefault(seed, []).append((layer(x), layer(x)))
    (first, second), (again_first, again_second) = masks[0]
    assert torch.equal(first, again_first) and torch.equal(second, again_second)
    assert not torch.equal(first, second)  # each call draws a new mask
    assert not torch.equal(first, masks[1][0][0])


def test_in_eval_mode_or_at_p_0_it_is_the_identity():
    x = torch.randn(8, 4)
    assert torch.equal(Dropout(0.5).eval()(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)


def test_the_fc_aligner_and_the_mlp_head_train_with_it_and_export_without_it():
    fc = FCAligner()._network(16)
    mlp = MLPHead()._network(16, 3)
    for net in (fc, mlp):
        drops = [m for m in net.modules() if isinstance(m, nn.Dropout)]
        assert drops and all(isinstance(m, Dropout) for m in drops)
    steps = dense_steps(fc.eval(), "fc")  # dropout is the identity in eval mode: only the six dense layers
    assert len(steps) == 6
