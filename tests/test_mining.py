"""`embedstore mine`: margin scoring finds true pairs among shuffled sides, and the file it writes is a pair file."""
import numpy as np
import pytest

from embedstore.analysis.mining import mine, precision
from embedstore.base.errors import ConfigError


def shuffled_translations(n: int = 400, d: int = 32, noise: float = 0.3, seed: int = 0):
    rng = np.random.default_rng(seed)
    hub = rng.standard_normal(d) * 3  # a shared component, as sentence encoders have
    x = rng.standard_normal((n, d)) + hub
    y = x + noise * rng.standard_normal((n, d))
    order = rng.permutation(n)
    return x.astype(np.float32), y[order].astype(np.float32), order


def test_mutual_margin_pairs_are_mostly_the_true_ones_and_sorted_by_margin():
    x, y, order = shuffled_translations()
    mined = mine(x, y)
    truth = np.argsort(order)  # y row j holds the translation of x row order[j]
    correct = truth[mined.source] == mined.target
    assert len(mined.source) > 300 and correct.mean() > 0.95
    assert np.all(np.diff(mined.margin) <= 0)
    assert len(set(mined.source)) == len(mined.source) and len(set(mined.target)) == len(mined.target)


def test_a_margin_threshold_trades_recall_for_precision():
    x, y, order = shuffled_translations(noise=1.2, seed=1)
    texts_x = [f"x{i}" for i in range(len(x))]
    texts_y = [f"y{j}" for j in range(len(y))]
    truth = {f"x{order[j]}": {f"y{j}"} for j in range(len(y))}
    every = mine(x, y)
    loose = precision(every, texts_x, texts_y, truth)
    strict = precision(mine(x, y, min_margin=float(np.median(every.margin))), texts_x, texts_y, truth)
    assert 0 < strict["mined"] < loose["mined"] and strict["precision"] > loose["precision"]
    assert 0 < loose["recall"] <= 1 and loose["correct"] == round(loose["precision"] * loose["mined"])
    with pytest.raises(ConfigError, match="k 0"):
        mine(x, y, k=0)
