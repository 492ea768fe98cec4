"""A saved estimator is data (issue 13, D5/D7): loading checks config.json field by field and every array
against `dim`, and any bytes in either file give an estimator or an `InputError`, never another exception."""
import json
import shutil
from dataclasses import replace

import fuzz_profiles  # noqa: F401  (the hypothesis profile)
import numpy as np
import pytest
from hypothesis import given, strategies as st
from safetensors.numpy import load_file, save_file

from embedstore.base.errors import EmbedstoreError, InputError
from embedstore.estimators.aligners import load_aligner, make_aligner
from embedstore.estimators.heads import LinearHead, load_head
from embedstore.estimators.training import RECIPES

D = 4


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A saved procrustes aligner (learned arrays) and a saved linear head (network weights), dim 4."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, D)).astype(np.float32)
    root = tmp_path_factory.mktemp("saved")
    make_aligner("procrustes").fit(x, x @ np.eye(D, dtype=np.float32)[::-1]).save(root / "aligner")
    LinearHead(recipe=replace(RECIPES["default"]["head"], max_epochs=1)).fit(x, np.arange(40) % 2).save(root / "head")
    return root


def copy_of(saved, name, tmp_path):
    out = tmp_path / name
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(saved / name, out)
    return out


def edit_config(directory, edit):
    path = directory / "config.json"
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))


def edit_arrays(directory, edit):
    path = directory / "model.safetensors"
    arrays = load_file(path)
    edit(arrays)
    save_file(arrays, path)


LOADERS = {"aligner": load_aligner, "head": load_head}


@pytest.mark.parametrize("name, edit, message", [
    ("aligner", lambda c: {**c, "dim": D + 1}, r"W_: shape \(4, 4\); expected .*dim 5"),
    ("head", lambda c: {**c, "dim": D + 1}, r"network weights do not fit a LinearHead of dim 5"),
    ("aligner", lambda c: {**c, "dim": "4"}, r"dim: '4'; expected a JSON integer"),
    ("aligner", lambda c: {**c, "dim": True}, r"dim: True; expected a JSON integer"),
    ("head", lambda c: {**c, "state": {**c["state"], "injected_": 1}}, r"state: unknown key 'injected_'"),
    ("head", lambda c: {**c, "state": {"history_": c["state"]["history_"]}}, r"state: lacks 'classes_'"),
    ("aligner", lambda c: {**c, "state": {"W_": 0}}, r"state: unknown key 'W_'"),
    ("aligner", lambda c: {**c, "params": {**c["params"], "reverse": "no"}}, r"params.reverse: 'no'; expected bool"),
    ("head", lambda c: {**c, "params": {**c["params"], "recipe": {"__recipe__": {"lr": -1}}}}, r"params:"),
    ("head", lambda c: {**c, "extra": 1}, r"extra: unknown key; allowed: format, "),
    ("head", lambda c: {**c, "format_version": True}, r"format_version True"),
])
@pytest.mark.fault('crafted or random saved estimators (the fuzzed ones partly valid)')
def test_a_config_that_does_not_fit_is_refused(saved, tmp_path, name, edit, message):
    directory = copy_of(saved, name, tmp_path)
    edit_config(directory, edit)
    with pytest.raises(InputError, match=message):
        LOADERS[name](directory)


@pytest.mark.parametrize("name, edit, message", [
    ("aligner", lambda a: a.update(W_=a["W_"].astype(np.float64)), r"W_: dtype float64; expected float32"),
    ("aligner", lambda a: a.update(W_=a["W_"][:, :2].copy()), r"W_: shape \(4, 2\)"),
    ("aligner", lambda a: a.update(mu_src_=np.full(D, np.nan, np.float32)), r"mu_src_: holds NaN"),
    ("aligner", lambda a: a.update(extra=np.zeros(D, np.float32)), r"unknown array 'extra'"),
    ("head", lambda a: a.update({k: v[:1].copy() for k, v in a.items()}), r"network weights do not fit"),
])
@pytest.mark.fault('crafted or random saved estimators (the fuzzed ones partly valid)')
def test_arrays_that_do_not_fit_are_refused(saved, tmp_path, name, edit, message):
    directory = copy_of(saved, name, tmp_path)
    edit_arrays(directory, edit)
    with pytest.raises(InputError, match=message):
        LOADERS[name](directory)


@pytest.mark.parametrize("name", ["aligner", "head"])
@pytest.mark.fault('crafted or random saved estimators (the fuzzed ones partly valid)')
def test_a_truncated_safetensors_file_is_one_line(saved, tmp_path, name):
    directory = copy_of(saved, name, tmp_path)
    path = directory / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(InputError, match=r"model.safetensors is not a readable safetensors file") as caught:
        LOADERS[name](directory)
    assert "\n" not in str(caught.value)


def test_a_saved_estimator_still_loads(saved, tmp_path):
    assert load_aligner(copy_of(saved, "aligner", tmp_path)).dim_ == D
    assert list(load_head(copy_of(saved, "head", tmp_path)).classes_) == [0, 1]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
FIELDS = ["format", "format_version", "class", "params", "dim", "state", "provenance"]


def load_or_refuse(name, directory):
    try:
        LOADERS[name](directory)
    except EmbedstoreError as e:
        assert "\n" not in str(e)


@given(name=st.sampled_from(["aligner", "head"]), field=st.sampled_from(FIELDS + ["W_", "classes_", "recipe"]),
       value=json_values)
@pytest.mark.fault('crafted or random saved estimators (the fuzzed ones partly valid)')
def test_fuzz_config_fields(saved, tmp_path, name, field, value):
    """One field (or one parameter / state value) of a valid config.json replaced by any JSON value."""
    directory = copy_of(saved, name, tmp_path)

    def edit(config):
        for part in ("params", "state"):
            if field in config[part]:
                config[part][field] = value
                return config
        return {**config, field: value}

    edit_config(directory, edit)
    load_or_refuse(name, directory)


@given(name=st.sampled_from(["aligner", "head"]), text=st.text(max_size=200) | json_values.map(json.dumps))
@pytest.mark.fault('crafted or random saved estimators (the fuzzed ones partly valid)')
def test_fuzz_config_text(saved, tmp_path, name, text):
    directory = copy_of(saved, name, tmp_path)
    (directory / "config.json").write_text(text)
    load_or_refuse(name, directory)


@given(name=st.sampled_from(["aligner", "head"]), cut=st.integers(0, 10_000),
       flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4))
@pytest.mark.fault('crafted or random saved estimators (the fuzzed ones partly valid)')
def test_fuzz_safetensors_bytes(saved, tmp_path, name, cut, flips):
    """A valid weights file cut short and with some bytes overwritten (header and data alike)."""
    directory = copy_of(saved, name, tmp_path)
    path = directory / "model.safetensors"
    data = bytearray(path.read_bytes())
    for at, byte in flips:
        data[at % len(data)] = byte
    path.write_bytes(bytes(data[: len(data) - cut % len(data)]) if cut else bytes(data))
    load_or_refuse(name, directory)
