"""Exports ready to ship (issue 29.5): a filled model card beside each export (data, aligner, head, the exact
prompt, the evaluation with its intervals, the check), the ONNX graph's inputs, outputs and prefix in its own
metadata, `embedstore.export(...)` and `embedstore.export_pipeline` at the top level, and `--push-to-hub` against a
local fake of the hub API."""
import json

import pytest
from typer.testing import CliRunner

from embedstore.cli.app import app

pytest.importorskip("sentence_transformers")
pytest.importorskip("onnxruntime")
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def pipeline(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("card")
    rows = "".join(f"the {w} number {i}\t{w} {i} (ko)\t{'calc' if w in ('cell', 'formula') else 'writer'}\t{i % 10}\n"
                   for i, w in enumerate(["cell", "page", "formula", "font"] * 15))
    data = tmp / "d.tsv"
    data.write_text("en\tko\tapps\tfold\n" + rows)
    common = ["--model", tiny_model_dir, "--store", tmp / "s.zarr", "--prefix", "query: "]
    r = invoke("train-aligner", "--pairs", data, "--target-column", "ko", "--arch", "procrustes", "--reverse",
               "--where", "fold=0,1,2,3,4,5", "--out", tmp / "al", *common)
    assert r.exit_code == 0, r.output
    r = invoke("train-head", "--train", data, "--text-column", "en", "--label-column", "apps", "--aligner",
               tmp / "al", "--where", "fold=6,7", "--out", tmp / "pipe", *common)
    assert r.exit_code == 0, r.output
    r = invoke("evaluate", "--pipeline", tmp / "pipe", "--test", data, "--text-column", "ko", "--label-column",
               "apps", "--where", "fold=8,9", "--out", tmp / "eval.json", "--model", tiny_model_dir, "--store",
               tmp / "s.zarr")
    assert r.exit_code == 0, r.output
    return tmp, data


def test_the_sentence_transformers_export_carries_a_filled_card(pipeline, tiny_model_dir):
    tmp, data = pipeline
    r = invoke("export", tmp / "st", "--pipeline", tmp / "pipe", "--format", "sentence-transformers", "--model",
               tiny_model_dir, "--metrics", tmp / "eval.json")
    assert r.exit_code == 0, r.output
    card = (tmp / "st" / "README.md").read_text()
    evaluation = json.loads((tmp / "eval.json").read_text())
    primary = evaluation["primary"]
    assert evaluation["method"] == "reverse" and primary == "with_aligner"
    assert "'query: '" in card and str(data) in card and "procrustes (reverse" in card
    assert f"{evaluation[primary]['accuracy']:.4f}" in card and "probe texts" in card
    assert "encode_document(" not in card and "{{" not in card  # not sentence-transformers' template


#: mteb 2.x's ModelMeta fields (mteb/models/model_meta.py; pydantic, extra="forbid": no field more, none less).
MTEB_FIELDS = {"loader", "loader_kwargs", "name", "revision", "release_date", "languages", "n_parameters",
               "memory_usage_mb", "max_tokens", "embed_dim", "license", "open_weights", "public_training_code",
               "public_training_data", "framework", "reference", "similarity_fn_name", "use_instructions",
               "training_datasets", "adapted_from", "superseded_by", "modalities", "is_cross_encoder", "citation",
               "contacts"}


def test_the_sentence_transformers_export_carries_mteb_model_metadata(pipeline, tiny_model_dir):
    """Exported from Python as the issue asked: `embedstore.export(...)`, the package called (it is also the home of
    `embedstore.export.<module>`), which is the API's `export_pipeline`."""
    from sentence_transformers import SentenceTransformer

    import embedstore
    from embedstore import export
    from embedstore.export.head import load_exported_head  # the subpackage's modules still import

    tmp, data = pipeline
    out = tmp / "st-mteb"
    returned = embedstore.export(tmp / "pipe", out, format="sentence-transformers", model=tiny_model_dir,
                                 progress=False)
    assert export is embedstore.export and load_exported_head is embedstore.export.head.load_exported_head
    assert returned == {**json.loads((out / "embedstore-export.json").read_text()), "out": str(out)}
    meta = json.loads((out / "mteb_model_meta.json").read_text())
    assert set(meta) == MTEB_FIELDS
    model = SentenceTransformer(str(out), device="cpu", local_files_only=True)
    assert meta["embed_dim"] == model.get_embedding_dimension()
    assert meta["n_parameters"] == sum(p.numel() for p in model.parameters())
    assert meta["max_tokens"] == model.max_seq_length and meta["similarity_fn_name"] == "cosine"
    assert meta["languages"] == ["eng-Latn", "kor-Hang"]  # English task rows, the pairs' target column 'ko'
    assert meta["name"] == "local/pipe" and "/" in meta["name"]  # MTEB's 'organization/model_name'
    record = json.loads((out / "embedstore-export.json").read_text())
    assert meta["use_instructions"] is True  # the 'query: ' prompt
    assert meta["adapted_from"] == record["pipeline_manifest"]["encoding"]["model"] and meta["adapted_from"]
    assert meta["training_datasets"] == [data.name] and meta["framework"] == ["Sentence Transformers", "PyTorch"]
    assert "mteb_model_meta.json" in (out / "README.md").read_text()


def test_the_onnx_graph_says_how_to_feed_it(pipeline, tiny_model_dir):
    import onnx

    tmp, _ = pipeline
    r = invoke("export", tmp / "onnx", "--pipeline", tmp / "pipe", "--format", "onnx", "--model", tiny_model_dir)
    assert r.exit_code == 0, r.output
    for step in ("loading the pipeline", "tracing the pipeline into an ONNX graph", "checking the ONNX graph"):
        assert step in r.output  # a line on stderr as each step of minutes starts
    meta = {p.key: p.value for p in onnx.load(str(tmp / "onnx" / "model.onnx")).metadata_props}
    assert meta["embedstore.prefix"] == "query: " and meta["embedstore.inputs"].startswith("input_ids,attention_mask")
    assert json.loads(meta["embedstore.classes"]) == ["calc", "writer"]
    assert "input_ids" in (tmp / "onnx" / "README.md").read_text() and "No evaluation was given" in \
        (tmp / "onnx" / "README.md").read_text()


def test_push_to_hub_uploads_the_export_to_the_repo_and_revision(pipeline, tiny_model_dir, monkeypatch):
    import huggingface_hub

    import embedstore

    import inspect

    calls = []
    real = huggingface_hub.HfApi

    def as_the_real_api_takes(name, *args, **kw):
        """Every call must bind to the installed huggingface_hub's own signature (a renamed keyword fails here)."""
        inspect.signature(getattr(real, name)).bind(None, *args, **kw)

    class FakeHub:
        def __init__(self, *args, **kw):
            as_the_real_api_takes("__init__", *args, **kw)
            calls.append(("token", kw.get("token")))

        def create_repo(self, repo, **kw):
            as_the_real_api_takes("create_repo", repo, **kw)
            calls.append(("create_repo", repo))

        def create_branch(self, repo, **kw):
            as_the_real_api_takes("create_branch", repo, **kw)
            calls.append(("create_branch", repo, kw.get("branch")))

        def upload_folder(self, **kw):
            from pathlib import Path

            as_the_real_api_takes("upload_folder", **kw)
            calls.append(("upload", kw["repo_id"], kw.get("revision"),
                          sorted(p.name for p in Path(kw["folder_path"]).iterdir())))
            return type("Commit", (), {"commit_url": f"https://hub.example/{kw['repo_id']}/commit/1"})()

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHub)
    tmp, _ = pipeline
    r = invoke("export", tmp / "pushed", "--pipeline", tmp / "pipe", "--format", "sentence-transformers", "--model",
               tiny_model_dir, "--push-to-hub", "me/langalign-ko", "--revision", "v1", "--token", "t0k")
    assert r.exit_code == 0, r.output
    assert calls[0] == ("token", "t0k") and ("create_branch", "me/langalign-ko", "v1") in calls
    upload = [c for c in calls if c[0] == "upload"][0]
    assert upload[1:3] == ("me/langalign-ko", "v1") and {"README.md", "modules.json", "head"} <= set(upload[3])
    assert "https://hub.example/me/langalign-ko/commit/1" in r.output
    assert embedstore.export_pipeline is embedstore.api.export_pipeline  # the API's, at the top level


def test_the_card_s_accuracy_interval_is_wilson_s():
    from embedstore.base.stats import wilson

    low, high = wilson(0.5, 100)  # the textbook value: 0.5 over 100 rows -> [0.4038, 0.5962]
    assert abs(low - 0.4038) < 1e-4 and abs(high - 0.5962) < 1e-4
