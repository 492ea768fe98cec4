"""The PyTorch engine's linear layers on weights packed for oneDNN (`encoding.packed_linear`): the same hidden states
within the engines' shared 1e-5, the model left as it is, the packing kept while the weights are unchanged."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from embedstore.encoding import packed_linear
from embedstore.encoding.encoder import Encoder
from embedstore.encoding.packed_linear import PackedLinear, packed_copy

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="PyTorch built without oneDNN")


@pytest.fixture
def model() -> nn.Module:
    from transformers import XLMRobertaConfig, XLMRobertaModel

    torch.manual_seed(0)
    config = XLMRobertaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=64, pad_token_id=1, max_position_embeddings=40)
    return XLMRobertaModel(config).eval()


def padded_batch() -> dict[str, torch.Tensor]:
    ids = torch.randint(3, 100, (5, 17), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    for row, length in enumerate((17, 12, 9, 3, 1)):
        ids[row, length:], mask[row, length:] = 1, 0
    ids[:, 0] = 0
    return {"input_ids": ids, "attention_mask": mask}


def linear_types(model: nn.Module) -> set[type]:
    return {type(m) for m in model.modules() if isinstance(m, (nn.Linear, PackedLinear))}


def test_packed_copy_gives_the_models_hidden_states_and_leaves_the_model_alone(model):
    fast = packed_copy(model)
    assert linear_types(fast) == {PackedLinear} and linear_types(model) == {nn.Linear}
    assert fast.embeddings.word_embeddings.weight is model.embeddings.word_embeddings.weight  # shared, not copied
    batch = padded_batch()
    with torch.inference_mode():
        want = model(**batch, output_hidden_states=True).hidden_states
        got = fast(**batch, output_hidden_states=True).hidden_states
    mask = batch["attention_mask"].bool()
    for w, g in zip(want, got):
        assert (w[mask] - g[mask]).abs().max() <= 1e-5


def test_encoder_runs_the_packed_copy_and_autocast_the_model(model):
    encoder = Encoder(model, SimpleNamespace(padding_side="right"), torch.device("cpu"))
    assert encoder.packed is packed_copy(model) and linear_types(encoder.packed) == {PackedLinear}
    batch = padded_batch()
    with torch.inference_mode():
        plain = model(**batch, output_hidden_states=True).hidden_states
    from embedstore.encoding.encoder import pool

    got = encoder.forward(batch, [1, 2], "mean")
    for layer in (1, 2):
        assert abs(got[layer] - pool(plain[layer], batch["attention_mask"], "mean").numpy()).max() <= 1e-5
    calls = []
    hook = model.encoder.layer[0].intermediate.dense.register_forward_hook(lambda *_: calls.append(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        encoder.forward(batch, [2], "mean")
    hook.remove()
    assert calls == [1]  # under autocast the model's own nn.Linear ran


def test_packing_is_kept_until_a_weight_changes_in_place(model):
    first = packed_copy(model)
    assert packed_copy(model) is first
    with torch.no_grad():
        model.encoder.layer[0].output.dense.weight.mul_(2.0)  # as an optimizer step would
    second = packed_copy(model)
    assert second is not first
    batch = padded_batch()
    with torch.inference_mode():
        want, got = model(**batch).last_hidden_state, second(**batch).last_hidden_state
    assert (want - got)[batch["attention_mask"].bool()].abs().max() <= 1e-5


def test_a_layer_whose_packed_product_disagrees_is_not_packed(model, monkeypatch):
    monkeypatch.setattr(packed_linear, "agrees", lambda packed, linear: False)
    assert packed_copy(model) is model


def test_kernel_rates_times_both_kernels_on_one_thread_and_restores_the_threads(model, monkeypatch):
    seen = []
    real = PackedLinear.forward
    monkeypatch.setattr(PackedLinear, "forward", lambda self, x: seen.append(torch.get_num_threads()) or real(self, x))
    threads = torch.get_num_threads()
    rates = packed_linear.kernel_rates(model, rows=64, rounds=2)
    assert set(rates) == set(packed_linear.KERNELS) and all(rate > 0 for rate in rates.values())
    assert seen and set(seen) == {1} and torch.get_num_threads() == threads


def test_an_encoder_on_mkl_runs_the_models_own_layers(model):
    encoder = Encoder(model, SimpleNamespace(padding_side="right"), torch.device("cpu"),
                      linear={"kernel": "mkl", "reason": "measured"})
    assert encoder.packed is model and encoder.linear["kernel"] == "mkl"
    with pytest.raises(Exception, match="linear kernel 'blas'"):
        Encoder(model, SimpleNamespace(padding_side="right"), torch.device("cpu"), linear={"kernel": "blas"})
