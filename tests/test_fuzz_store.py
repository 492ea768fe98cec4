"""Fuzzing a store group's attributes as `Store` reads them (issue 13, item 8): whatever a group's `zarr.json`
says in `attributes`, `Store.info()`, `keys()` and `get()` answer or raise the project's own error type.
Settings: `fuzz_profiles`."""
import json
import shutil

import fuzz_profiles  # noqa: F401  (the hypothesis profile)
import numpy as np
import pytest
from hypothesis import given, strategies as st

from embedstore.base.errors import EmbedstoreError
from embedstore.data.hashing import text_ids
from embedstore.store import Store, StoreKey

pytestmark = pytest.mark.fault('fuzz: random store attributes (some valid)')

TEXTS = [f"text {i}" for i in range(5)]
KEY = StoreKey(model="m", fingerprint="0" * 16, pooling="mean", layer=1, max_length=8, prefix="")


@pytest.fixture(scope="module")
def saved_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "s.zarr"
    store = Store.open(path)
    with store.writer() as w:
        w.key(KEY, 3, {"by": "test"}, chunk_rows=4).append(text_ids(TEXTS), np.ones((5, 3), np.float32))
    return path


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10)


def read_everything(path) -> None:
    store = Store.open(path)
    for call in (store.info, store.keys, lambda: store.get(KEY, TEXTS), lambda: store.rows(KEY)):
        try:
            call()
        except EmbedstoreError as e:
            assert "\n" not in str(e), str(e)


def edited(saved_store, root, edit):
    path = root / "s.zarr"
    if path.exists():
        shutil.rmtree(path)
    shutil.copytree(saved_store, path)
    meta = path / KEY.group_name / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"] = edit(doc["attributes"])
    meta.write_text(json.dumps(doc))
    return path


@given(field=st.sampled_from(["key", "dim", "dtype", "provenance", "committed_rows"]),
       inner=st.sampled_from([None, "model", "fingerprint", "pooling", "layer", "max_length", "prefix", "dtype"]),
       value=json_values)
def test_fuzz_group_attributes(saved_store, tmp_path_factory, field, inner, value):
    """One attribute of a valid group (or one field of its key) replaced by any JSON value."""
    def edit(attrs):
        if field == "key" and inner is not None:
            attrs["key"][inner] = value
        else:
            attrs[field] = value
        return attrs

    read_everything(edited(saved_store, tmp_path_factory.mktemp("s"), edit))


@given(value=json_values)
def test_fuzz_whole_attributes(saved_store, tmp_path_factory, value):
    read_everything(edited(saved_store, tmp_path_factory.mktemp("s"), lambda attrs: value))
