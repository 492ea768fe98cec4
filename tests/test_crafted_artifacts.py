"""Issue 28 item 10: artifacts are data read from disk. A crafted exported head or ONNX export config is a
one-line ConfigError naming the file and field (never a raw KeyError, ValueError or IndexError), an exported head
with a NaN weight is refused (it predicted class 0 for everything), and a scikit-learn head restores only learned
attributes (its JSON could name any attribute for `setattr`)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from embedstore.base.errors import ConfigError, InputError
from embedstore.estimators.heads import load_head, make_head
from embedstore.export.head import load_exported_head, save_exported_head
from embedstore.export.layers import DenseStep

pytestmark = pytest.mark.fault('crafted artifacts: exported heads and pipelines, sklearn attributes')

RNG = np.random.default_rng(0)
STEPS = [DenseStep(RNG.normal(size=(4, 6)).astype(np.float32), np.zeros(4, np.float32), "ReLU"),
         DenseStep(RNG.normal(size=(2, 4)).astype(np.float32), np.zeros(2, np.float32))]


def exported(tmp_path, steps=STEPS, **config):
    directory = tmp_path / "head"
    save_exported_head(directory, steps, ["a", "b"])
    if config:
        path = directory / "head.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **config}))
    return directory


@pytest.mark.parametrize("config, message", [
    ({"classes": None}, "classes"), ({"classes": []}, "classes"), ({"classes": ["a", "a"]}, "classes"),
    ({"classes": [["a"], "b"]}, "classes"), ({"classes": ["a", "b", "c"]}, "2 outputs for 3 classes"),
    ({"activations": ["Softmax", "Identity"]}, r"activations\[0\]"),
    ({"activations": [7, "Identity"]}, r"activations\[0\]"),
])
def test_a_crafted_exported_head_config_is_a_one_line_config_error(tmp_path, config, message):
    with pytest.raises(ConfigError, match=message) as e:
        load_exported_head(exported(tmp_path, **config))
    assert "\n" not in str(e.value) and "head" in str(e.value)


def test_exported_head_layers_that_do_not_chain_are_refused(tmp_path):
    steps = [STEPS[0], DenseStep(RNG.normal(size=(2, 5)).astype(np.float32), np.zeros(2, np.float32))]
    with pytest.raises(ConfigError, match="layer 1: weight .* do not chain"):
        load_exported_head(exported(tmp_path, steps))


def test_an_exported_head_with_a_nan_weight_is_refused(tmp_path):
    weight = STEPS[1].weight.copy()
    weight[0, 1] = np.nan
    with pytest.raises(ConfigError, match="layer 1: holds NaN or infinite values"):
        load_exported_head(exported(tmp_path, [STEPS[0], DenseStep(weight, STEPS[1].bias)]))


@pytest.mark.parametrize("config, message", [
    ({"prefix": 3}, "prefix"), ({"prefix": None}, "prefix"), ({"max_length": "long"}, "max_length"),
    ({"max_length": 0}, "max_length"), ({"classes": {"a": 1}}, "classes"), ({}, "not a loadable ONNX export"),
])
def test_a_crafted_onnx_export_is_a_one_line_config_error(tmp_path, config, message):
    pytest.importorskip("onnxruntime")
    from embedstore.export.onnx_graph import CONFIG_FILE, GRAPH_FILE, ONNX_FORMAT, OnnxPipeline
    base = {"format": ONNX_FORMAT, "prefix": "", "max_length": 32, "classes": ["a", "b"]}
    (tmp_path / CONFIG_FILE).write_text(json.dumps({**base, **config}))
    (tmp_path / GRAPH_FILE).write_bytes(b"not a graph")
    with pytest.raises(ConfigError, match=message) as e:
        OnnxPipeline.load(tmp_path)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["predict_proba", "__class__", "_private_", "classes_", "not an identifier_"])
def test_a_sklearn_head_restores_only_learned_attributes(tmp_path, name):
    x = RNG.normal(size=(40, 4)).astype(np.float32)
    y = np.where(x[:, 0] > 0, "a", "b")
    make_head("sklearn:linear_model.LogisticRegression").fit(x, y).save(tmp_path / "h")
    assert list(load_head(tmp_path / "h").predict(x[:3])) == list(make_head(
        "sklearn:linear_model.LogisticRegression").fit(x, y).predict(x[:3]))
    path = tmp_path / "h" / "config.json"
    config = json.loads(path.read_text())
    config["state"]["json_attrs_"][name] = 1
    path.write_text(json.dumps(config))
    with pytest.raises(InputError, match="is not a learned attribute"):
        load_head(tmp_path / "h").predict(x[:3])
