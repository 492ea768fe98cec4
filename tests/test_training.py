"""The shared training loop: determinism, early stopping with best-state restore, splits and recipes."""
import dataclasses
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from embedstore.base.errors import ConfigError
from embedstore.estimators.training import (FIT_REVISION, RECIPES, Recipe, adamw, autocast_dtype, resolve_recipe,
                                           split_indices, train)

RECIPE = Recipe(lr=1e-2, batch_size=32, max_epochs=5, patience=10, weight_decay=0.0)


def data(n: int = 200, d: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return x, x @ torch.randn(d, d, generator=g)


def build() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 8))


def run(recipe: Recipe = RECIPE, seed: int = 0, **kwargs):
    x, y = data()
    return train(build, nn.functional.mse_loss, x[:160], y[:160], x[160:], y[160:], recipe, seed=seed, **kwargs)


def weights(module: nn.Module) -> list[torch.Tensor]:
    return list(module.state_dict().values())


def test_same_seed_gives_identical_history_and_weights():
    (m1, h1), (m2, h2) = run(), run()
    assert h1.epochs == h2.epochs and h1.best_epoch == h2.best_epoch
    assert all(torch.equal(a, b) for a, b in zip(weights(m1), weights(m2)))
    m3, h3 = run(seed=1)
    assert h3.epochs != h1.epochs
    assert not torch.equal(weights(m1)[0], weights(m3)[0])


def test_training_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    run(replace(RECIPE, max_epochs=1))
    assert torch.equal(torch.rand(3), expected)


def test_history_records_every_epoch():
    _, history = run()
    assert [e["epoch"] for e in history.epochs] == [1, 2, 3, 4, 5]
    assert history.epochs[-1]["train_loss"] < history.epochs[0]["train_loss"]
    assert history.best_val_loss == min(e["val_loss"] for e in history.epochs)
    assert not history.stopped_early and history.seconds > 0
    assert set(history.to_dict()) == {"epochs", "best_epoch", "best_val_loss", "stopped_early", "seconds", "precision",
                                      "recipe", "steps_per_epoch", "step_losses",
                                      "fit_revision"}  # the text loop's shape too
    assert history.precision == "fp32" and history.recipe == dataclasses.asdict(RECIPE)
    assert history.fit_revision == FIT_REVISION


def test_early_stopping_restores_the_best_state():
    # validation targets are the negation of training targets: validation loss gets worse as training
    # succeeds, so the best epoch is early and patience runs out
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    recipe = Recipe(lr=0.05, batch_size=16, max_epochs=50, patience=3, weight_decay=0.0)

    def fit(r: Recipe):
        return train(lambda: nn.Linear(4, 4), nn.functional.mse_loss, x, x, x, -x, r, seed=7)

    module, history = fit(recipe)
    assert history.stopped_early
    assert len(history.epochs) == history.best_epoch + recipe.patience
    restored_loss = nn.functional.mse_loss(module(x), -x).item()
    assert restored_loss == pytest.approx(history.best_val_loss, rel=1e-6)
    assert restored_loss < history.epochs[-1]["val_loss"]
    # training is deterministic, so a run cut at the best epoch must end with exactly the restored weights
    best_only, _ = fit(replace(recipe, max_epochs=history.best_epoch))
    assert all(torch.equal(a, b) for a, b in zip(weights(module), weights(best_only)))


def test_min_delta_stops_on_negligible_gains_and_keeps_the_lowest_loss():
    # a learnable linear map: validation loss falls every epoch, by less and less
    x = torch.randn(200, 4, generator=torch.Generator().manual_seed(0))
    y = x @ torch.randn(4, 4, generator=torch.Generator().manual_seed(1))
    recipe = Recipe(lr=0.01, batch_size=16, max_epochs=60, patience=3, weight_decay=0.0)

    def fit(r: Recipe):
        return train(lambda: nn.Linear(4, 4), nn.functional.mse_loss, x[:160], y[:160], x[160:], y[160:], r, seed=0)

    _, plain = fit(recipe)
    assert not plain.stopped_early and plain.best_epoch == 60  # every epoch improves a little
    # with min_delta the gains stop counting once they are smaller than it
    module, tolerant = fit(replace(recipe, min_delta=0.05))
    assert tolerant.stopped_early and len(tolerant.epochs) < 60
    gains = [a["val_loss"] - b["val_loss"] for a, b in zip(tolerant.epochs, tolerant.epochs[1:])]
    assert all(g < 0.05 for g in gains[-recipe.patience:])
    # the restored state is the lowest loss seen, even where that epoch's gain was too small to reset patience
    assert tolerant.best_epoch == len(tolerant.epochs)
    assert nn.functional.mse_loss(module(x[160:]), y[160:]).item() == pytest.approx(tolerant.best_val_loss, rel=1e-6)


def test_bf16_steps_train_as_well_and_say_so():
    (_, plain), (_, bf16) = run(), run(replace(RECIPE, precision="bf16"))
    assert bf16.precision == "bf16"
    assert bf16.best_val_loss == pytest.approx(plain.best_val_loss, rel=0.1)  # bf16 rounding, same training
    assert bf16.epochs != plain.epochs  # the steps really ran in bf16


@pytest.fixture
def bf16_cpu(monkeypatch):
    """A CPU that computes bf16 natively (AVX512-BF16), whatever this machine has."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)


@pytest.fixture
def plain_cpu(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)


@pytest.mark.parametrize("cpu", ["bf16_cpu", "plain_cpu"])
def test_the_default_precision_is_fp32_whatever_the_cpu(cpu, request):
    """The aligner recipe's `auto` trained FC/AE in bf16 on AVX512-BF16 CPUs and in fp32 elsewhere, so one cell
    was two different fits depending on the host. Every recipe and the text trainer now default to fp32."""
    request.getfixturevalue(cpu)
    from embedstore.study.cells import Cell
    from embedstore.study.context import training_precisions
    from embedstore.text_training.options import TrainOptions
    from embedstore.text_training.precision import amp_dtype

    for kinds in RECIPES.values():
        for recipe in kinds.values():
            assert autocast_dtype(recipe.precision, "cpu") is None
    assert amp_dtype(TrainOptions().precision, torch.device("cpu")) is None
    _, history = run(replace(RECIPES["default"]["aligner"], lr=1e-2, max_epochs=1, min_steps=0, batch_size=32))
    assert history.precision == "fp32"
    config = type("Config", (), {"e2e": {}, "adapt": {}})()
    cell = Cell("ko", "t", "langalign-e2e", 100, 500, "fc", 0, "default", "mlp")
    assert training_precisions(config, cell) == {"aligner": "fp32", "head": "fp32", "text": "fp32"}
    # only asking for it changes the arithmetic: auto follows the (patched) CPU, bf16 is bf16 anywhere
    assert autocast_dtype("auto", "cpu") == (torch.bfloat16 if cpu == "bf16_cpu" else None)
    assert autocast_dtype("bf16", "cpu") is torch.bfloat16
    _, history = run(replace(RECIPE, precision="auto", max_epochs=1))
    assert history.precision == ("bf16" if cpu == "bf16_cpu" else "fp32")


def test_restored_module_is_in_eval_mode():
    module, _ = run(replace(RECIPE, max_epochs=1))
    assert not module.training


def test_progress_bar_runs():
    _, history = run(replace(RECIPE, max_epochs=2), progress=True)
    assert len(history.epochs) == 2


def test_split_is_seeded_disjoint_and_complete():
    train_idx, val_idx = split_indices(100, 0.1, seed=3)
    assert len(val_idx) == 10 and len(train_idx) == 90
    assert sorted(np.concatenate([train_idx, val_idx]).tolist()) == list(range(100))
    again = split_indices(100, 0.1, seed=3)
    assert np.array_equal(again[1], val_idx)
    assert not np.array_equal(split_indices(100, 0.1, seed=4)[1], val_idx)
    assert [len(part) for part in split_indices(3, 0.1, seed=0)] == [2, 1]
    with pytest.raises(ConfigError, match="at least 2 rows"):
        split_indices(1, 0.1, seed=0)


def test_min_steps_raises_the_epoch_cap_for_small_data():
    floor = replace(RECIPE, min_steps=40)  # 160 training rows / batch 32 = 5 steps per epoch
    assert floor.epoch_cap(160) == 8 and floor.epoch_cap(10_000) == 5  # never below max_epochs
    _, history = run(replace(floor, patience=100))
    assert len(history.epochs) == 8


def test_recipes_resolve_by_name_kind_and_fields():
    assert resolve_recipe("paper", "aligner").lr == 1e-5
    assert resolve_recipe("paper", "head").lr == 1e-4
    assert resolve_recipe("paper", "head").batch_size == 16 and resolve_recipe("paper", "head").patience == 10
    assert resolve_recipe(RECIPE, "head") is RECIPE
    assert resolve_recipe({"lr": 0.1, "batch_size": 4, "max_epochs": 1, "patience": 1, "weight_decay": 0.0},
                          "aligner") == Recipe(0.1, 4, 1, 1, 0.0)
    assert set(RECIPES) == {"paper", "default"}
    with pytest.raises(ConfigError, match="default, paper"):
        resolve_recipe("fast", "aligner")
    with pytest.raises(ConfigError, match="momentum"):
        resolve_recipe({"momentum": 0.9}, "aligner")


@pytest.mark.parametrize("field,value", [("lr", 0.0), ("batch_size", 0), ("patience", 0), ("val_fraction", 0.0),
                                         ("val_fraction", 1.0), ("weight_decay", -1.0), ("max_epochs", 0),
                                         ("min_steps", -1), ("min_delta", -1e-3), ("precision", "fp16")])
def test_recipe_rejects_out_of_range_values(field, value):
    with pytest.raises(ConfigError, match=field):
        replace(RECIPE, **{field: value})


def test_adamw_takes_the_fused_kernel_for_cpu_parameters_and_steps_as_the_loop_does():
    """Fused where torch has the kernel (floating parameters on CPU or CUDA), in groups too; the same update as
    torch's per-tensor loop up to float rounding."""
    torch.manual_seed(0)
    start = [torch.randn(64, 8), torch.randn(8)]
    grads = [[torch.randn_like(t) for t in start] for _ in range(3)]
    ends = []
    for make in (lambda ps: adamw([{"params": ps[:1], "weight_decay": 0.01}, {"params": ps[1:], "weight_decay": 0.0}],
                                  lr=1e-2),
                 lambda ps: torch.optim.AdamW([{"params": ps[:1], "weight_decay": 0.01},
                                               {"params": ps[1:], "weight_decay": 0.0}], lr=1e-2, foreach=False)):
        params = [nn.Parameter(t.clone()) for t in start]
        optimizer = make(params)
        for step in grads:
            for p, g in zip(params, step):
                p.grad = g.clone()
            optimizer.step()
        ends.append((optimizer.defaults.get("fused"), [p.detach() for p in params]))
    (fused, by_kernel), (_, by_loop) = ends
    assert fused is True
    for a, b in zip(by_kernel, by_loop):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert adamw([nn.Parameter(torch.zeros(2, dtype=torch.float64))], lr=1e-3).defaults["fused"] is True
    assert not adamw([nn.Parameter(torch.zeros(2, device="meta"))], lr=1e-3).defaults.get("fused")
