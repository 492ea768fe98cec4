"""Fuzzing `pipeline.json` (issue 13, item 8): any manifest, valid JSON or not, loads into a pipeline or is refused
with one line of the project's own error type. Settings: `fuzz_profiles`."""
import json
import shutil

import fuzz_profiles  # noqa: F401  (the hypothesis profile)
from hypothesis import given, strategies as st
import pytest

from embedstore.base.errors import EmbedstoreError
from embedstore.pipelines.pipeline import Pipeline
from test_steps_cli import saved_pipeline  # noqa: F401  (the module-scoped fixture: a pipeline with an aligner)

pytestmark = pytest.mark.fault('fuzz: random pipeline manifests (some valid)')

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
    | st.sampled_from(["pipeline", "aligner", "head", "../head", "/", "mean", "float32"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10)


def load_or_refuse(directory, model):
    try:
        Pipeline.load(directory, model=model)
    except EmbedstoreError as e:
        assert "\n" not in str(e), str(e)


def fresh_copy(saved_pipeline, root):  # noqa: F811
    pipe = root / "pipe"
    if pipe.exists():
        shutil.rmtree(pipe)
    shutil.copytree(saved_pipeline, pipe)
    return pipe


@given(field=st.sampled_from(["kind", "store", "encoding", "aligner", "head", "seed", "share", "sizes",
                              "store_key", "model_fingerprint", "model", "unknown"]),
       inner=st.sampled_from([None, "model", "fingerprint", "layers", "pooling", "max_length", "prefix", "dtype"]),
       value=json_values)
def test_fuzz_manifest_fields(saved_pipeline, tiny_model_dir, tmp_path_factory, field, inner, value):  # noqa: F811
    """One field of a valid manifest (or of its encoding options) replaced by any JSON value."""
    pipe = fresh_copy(saved_pipeline, tmp_path_factory.mktemp("p"))
    manifest = json.loads((pipe / "pipeline.json").read_text())
    if field == "encoding" and inner is not None:
        manifest["encoding"][inner] = value
    else:
        manifest[field] = value
    (pipe / "pipeline.json").write_text(json.dumps(manifest))
    load_or_refuse(pipe, tiny_model_dir)


@given(text=st.text(max_size=100) | json_values.map(json.dumps), named_model=st.booleans())
def test_fuzz_manifest_text(saved_pipeline, tiny_model_dir, tmp_path_factory, text, named_model):  # noqa: F811
    pipe = fresh_copy(saved_pipeline, tmp_path_factory.mktemp("p"))
    (pipe / "pipeline.json").write_text(text)
    load_or_refuse(pipe, tiny_model_dir if named_model else None)
