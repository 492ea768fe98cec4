"""`embedstore export` on the tiny model: the exported sentence-transformers model and ONNX graph give the
pipeline's vectors (within 1e-5) and its very predictions, on texts the export never saw. The pipelines are
trained from Parquet and a `datasets` directory through the CLI, so those inputs are exercised end to end."""
import json
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from embedstore.base.errors import ConfigError
from embedstore.cli.app import app
from embedstore.estimators.aligners import make_aligner
from embedstore.estimators.heads import make_head
from embedstore.estimators.training import Recipe
from embedstore.export.head import load_exported_head, save_exported_head
from embedstore.export.layers import dense_steps
from embedstore.pipelines.pipeline import Pipeline

pytest.importorskip("sentence_transformers")
pytest.importorskip("onnxruntime")

TOPICS = {"calc": ["cell", "formula", "sheet", "column"], "writer": ["page", "paragraph", "font", "document"]}
NEW_TEXTS = ["수식을 셀에 넣는 방법", "a page with a new font", "the formula in column B", "문단 서식",
             "sheet", "the document and its paragraph styles, fonts and page numbers, at some length"]

LONG_TEXTS = ["the formula in a cell of the sheet " * 40, "문단 서식과 페이지 번호 " * 60 + "끝",
              "x" * 3000 + " tail"]

FAST = Recipe(lr=1e-3, batch_size=32, max_epochs=2, patience=1, weight_decay=0.0)


def table():
    rows = {"en": [], "ko": [], "apps": [], "fold": []}
    for i in range(120):
        label = "calc" if i % 2 else "writer"
        words = TOPICS[label]
        en = f"the {words[i % 4]} and {words[(i + 1) % 4]} number {i}"
        for key, value in (("en", en), ("ko", f"{en} (ko)"), ("apps", label), ("fold", i % 10)):
            rows[key].append(value)
    return pa.table(rows)


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def train(tmp_path, tiny_model_dir, data, arch, reverse, extra=()):
    common = ["--model", tiny_model_dir, "--store", tmp_path / "s.zarr", *extra]
    r = invoke("train-aligner", "--pairs", data, "--target-column", "ko", "--arch", arch, "--where",
               "fold=0,1,2,3,4,5", "--out", tmp_path / "al", "--json", *(["--reverse"] if reverse else []), *common)
    assert r.exit_code == 0, r.output
    r = invoke("train-head", "--train", data, "--text-column", "en", "--label-column", "apps", "--aligner",
               tmp_path / "al", "--out", tmp_path / "pipe", "--json", *common)
    assert r.exit_code == 0, r.output
    return Pipeline.load(tmp_path / "pipe", store=tmp_path / "s.zarr", model=tiny_model_dir)


def expected(pipe, texts=NEW_TEXTS):
    x = pipe.vectors(texts)
    if pipe.aligner_at_test:
        x = pipe.aligner.transform(x)
    return x, pipe.predict(texts)


@pytest.mark.parametrize("arch, reverse, extra", [
    ("procrustes", True, ()),                       # reverse: target text into English space, a Dense layer
    ("fc", False, ("--layer", "1", "--prefix", "query: ")),  # identity-trained FC kept at test; a middle layer;
                                                              # e5's prefix, which becomes the default prompt
])
def test_sentence_transformers_export_serves_the_pipelines_vectors_and_predictions(
        tiny_model_dir, tmp_path, arch, reverse, extra):
    from sentence_transformers import SentenceTransformer

    pq.write_table(table(), tmp_path / "data.parquet")
    pipe = train(tmp_path, tiny_model_dir, tmp_path / "data.parquet", arch, reverse, extra)
    r = invoke("export", tmp_path / "st", "--pipeline", tmp_path / "pipe", "--format", "sentence-transformers",
               "--model", tiny_model_dir, "--json")
    assert r.exit_code == 0, r.output
    record = json.loads(r.stdout)
    assert record["aligner_in_model"] and record["check"]["max_vector_difference"] <= 1e-5
    assert record["check"]["prompt"] == pipe.key.prefix
    vectors, labels = expected(pipe)
    model = SentenceTransformer(str(tmp_path / "st"), device="cpu", local_files_only=True)
    served = model.encode(NEW_TEXTS, convert_to_numpy=True)
    assert np.abs(served - vectors).max() <= 1e-5
    assert load_exported_head(tmp_path / "st" / "head").predict(served) == labels


def test_onnx_export_serves_the_pipelines_vectors_and_predictions(tiny_model_dir, tmp_path):
    from embedstore.export.onnx_graph import OnnxPipeline

    save_dir = tmp_path / "ds"
    pytest.importorskip("datasets").Dataset(table()).save_to_disk(str(save_dir))
    pipe = train(tmp_path, tiny_model_dir, save_dir, "meanshift", True, ("--pooling", "max"))
    r = invoke("export", tmp_path / "onnx", "--pipeline", tmp_path / "pipe", "--format", "onnx", "--model",
               tiny_model_dir, "--json")
    assert r.exit_code == 0, r.output
    vectors, labels = expected(pipe)
    served = OnnxPipeline.load(tmp_path / "onnx")
    got_vectors, proba = served.run(NEW_TEXTS, batch_size=3)
    assert np.abs(got_vectors - vectors).max() <= 1e-5
    assert np.abs(proba - pipe.predict_proba(NEW_TEXTS)).max() <= 1e-5
    assert served.predict(NEW_TEXTS) == labels
    # and `embedstore predict --file` reads the same Parquet/datasets inputs
    r = invoke("predict", "--pipeline", tmp_path / "pipe", "--file", save_dir, "--column", "ko", "--json",
               "--model", tiny_model_dir, "--store", tmp_path / "s.zarr")
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.stdout)) == 120


def test_the_onnx_pipeline_cuts_and_truncates_long_texts_as_encode_does(tiny_model_dir, tmp_path, monkeypatch,
                                                                         capsys):
    """Issue 30.2: a max length of 24 tokens and texts far longer (a 3,000-character word too): the served
    pipeline tokenizes, cuts and batches with encode's own code, so it gives the pipeline's vectors; the graph's
    sha256 is recorded and verified on load. The export holds one copy of the model (issue 30.3): the reference, the
    trace and the check all run the one `load_once` shares, loaded once."""
    import embedstore.encoding.models as models
    from embedstore.encoding.onnx_runtime import GraphDamaged
    from embedstore.export.onnx_graph import OnnxPipeline

    pq.write_table(table(), tmp_path / "data.parquet")
    pipe = train(tmp_path, tiny_model_dir, tmp_path / "data.parquet", "procrustes", False, ("--max-length", "24"))
    models.unload()
    loads, load = [], models.load_model
    with monkeypatch.context() as counted:
        counted.setattr(models, "load_model", lambda *a, **k: loads.append(a) or load(*a, **k))
        r = invoke("export", tmp_path / "onnx", "--pipeline", tmp_path / "pipe", "--format", "onnx", "--model",
                   tiny_model_dir, "--json")
    assert r.exit_code == 0, r.output
    assert len(loads) == 1
    texts = [*NEW_TEXTS, *LONG_TEXTS]
    vectors, labels = expected(pipe, texts)
    served = OnnxPipeline.load(tmp_path / "onnx")
    got_vectors, proba = served.run(texts)
    assert np.abs(got_vectors - vectors).max() <= 1e-5 and served.predict(texts) == labels
    # a long input is read a chunk at a time, as encode reads it, with a bar on stderr (issue 29.3)
    capsys.readouterr()
    with monkeypatch.context() as patched:
        patched.setattr("embedstore.encoding.encode.CHUNK_TEXTS", 3)
        chunked, chunked_proba = served.run(texts, progress=True)
    assert np.abs(chunked - vectors).max() <= 1e-5 and np.abs(chunked_proba - proba).max() <= 1e-5
    out, err = capsys.readouterr()
    assert out == "" and f"predicting: {len(texts)}/{len(texts)} texts (100%)" in err
    graph = tmp_path / "onnx" / "model.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    with pytest.raises(GraphDamaged, match=r"model\.onnx: its bytes do not match the sha256"):
        OnnxPipeline.load(tmp_path / "onnx")


def test_export_refuses_a_non_empty_output_and_an_unknown_format(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    r = invoke("export", tmp_path / "out", "--pipeline", tmp_path / "nothing", "--format", "onnx")
    assert r.exit_code == 1 and "exists and is not empty" in r.output
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
    r = invoke("export", tmp_path / "new", "--pipeline", tmp_path / "nothing", "--format", "tflite")
    assert r.exit_code == 1 and "format: 'tflite'; expected one of sentence-transformers, onnx" in r.output


@pytest.mark.parametrize("arch", ["linear", "procrustes", "meanshift", "fc", "ae"])
def test_every_aligner_becomes_dense_steps_equal_to_its_transform(arch):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 8)).astype(np.float32), rng.normal(size=(64, 8)).astype(np.float32)
    params = {"recipe": FAST} if arch in ("fc", "ae") else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # two epochs on noise collapse; the weights are replaced below
        aligner = make_aligner(arch, **params).fit(x, y)
    if arch in ("fc", "ae"):  # weights that make every layer of the network matter, at unit scale
        torch.manual_seed(0)
        for p in aligner.module_.parameters():
            nn.init.kaiming_normal_(p) if p.ndim == 2 else nn.init.normal_(p, 0, 0.1)
        assert aligner.transform(x).std(0).mean() > 0.1
    out = x
    for step in dense_steps(aligner.to_torch(), arch):
        out = step.apply(out)
    assert np.abs(out - aligner.transform(x)).max() <= 1e-5


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_an_exported_head_loads_back_with_numpy_and_predicts_as_the_head(tmp_path, kind):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(80, 8)).astype(np.float32)
    y = np.where(x[:, 0] > 0, "a", "b")
    head = make_head(kind, recipe=FAST).fit(x, y)
    save_exported_head(tmp_path / "head", dense_steps(head.module_, "head"), [str(c) for c in head.classes_])
    loaded = load_exported_head(tmp_path / "head")
    assert np.abs(loaded.predict_proba(x) - head.predict_proba(x)).max() <= 1e-5
    assert loaded.predict(x) == list(head.predict(x))


def test_a_module_without_a_dense_form_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"aligner: LayerNorm has no sentence-transformers Dense form; use "
                                          r"--format onnx"):
        dense_steps(nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)), "aligner")


@pytest.mark.parametrize("format, module", [("onnx", "embedstore.export.graph"),
                                            ("sentence-transformers", "embedstore.export.st")])
def test_an_export_holds_one_copy_of_the_model_at_most(tiny_model_dir, tmp_path, monkeypatch, format, module):
    """Issue 30.3: the check loads what was written, and by then the torch model (with the oneDNN-packed copy the
    reference was computed with) is let go: the process never holds two copies of the weights at once."""
    import gc
    import importlib

    from transformers import PreTrainedModel

    pq.write_table(table(), tmp_path / "data.parquet")
    train(tmp_path, tiny_model_dir, tmp_path / "data.parquet", "meanshift", False)
    target = importlib.import_module(module)
    check_close, alive = target.check_close, []

    def counting(*args, **kwargs):
        gc.collect()
        alive.append(sum(issubclass(type(o), PreTrainedModel) for o in gc.get_objects()))
        return check_close(*args, **kwargs)

    monkeypatch.setattr(target, "check_close", counting)
    r = invoke("export", tmp_path / "out", "--pipeline", tmp_path / "pipe", "--format", format, "--model",
               tiny_model_dir, "--json")
    assert r.exit_code == 0, r.output
    assert alive and max(alive) == (1 if format == "sentence-transformers" else 0), alive
