"""What a user types and reads (issue 29.4): whole model names when piped, predict reading stdin, a CUDA device
on a CPU build of torch refused in one line."""
from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from embedstore.cli.app import app

runner = CliRunner()
LONG_NAME = "a-model-name-long-enough-to-be-cut-short-by-an-eighty-column-table+and-its-suffix"


def test_store_info_keeps_model_names_whole_when_piped(tiny_model_dir, tmp_path):
    model = tmp_path / LONG_NAME
    shutil.copytree(tiny_model_dir, model)
    texts = tmp_path / "t.txt"
    texts.write_text("first sentence\nsecond sentence\n")
    store = tmp_path / "s.zarr"
    r = runner.invoke(app, ["encode", str(texts), "--model", str(model), "--store", str(store), "--backend", "torch"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["store", "info", str(store)])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[1].split("\t")[0] == "model" and lines[2].split("\t")[0] == LONG_NAME


def test_predict_reads_texts_from_stdin(tiny_model_dir, tmp_path):
    rows = "".join(f"the {w} number {i}\t{'calc' if i % 2 else 'writer'}\n"
                   for i, w in enumerate(["cell", "page", "formula", "font"] * 5))
    data = tmp_path / "d.tsv"
    data.write_text("text\tlabel\n" + rows)
    common = ["--model", str(tiny_model_dir), "--store", str(tmp_path / "s.zarr")]
    r = runner.invoke(app, ["train-head", "--train", str(data), "--out", str(tmp_path / "pipe"), *common])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["predict", "--pipeline", str(tmp_path / "pipe"), "-", "--json", *common],
                      input="a formula in a cell\n\nthe font of a page\n")
    assert r.exit_code == 0, r.output
    assert [p["text"] for p in json.loads(r.stdout)] == ["a formula in a cell", "the font of a page"]


def test_a_cuda_device_on_a_cpu_torch_is_one_line():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this torch has a CUDA device")
    from embedstore.base.errors import ConfigError
    from embedstore.encoding.models import resolve_device

    with pytest.raises(ConfigError, match=r"device: 'cuda:0': this torch .* expected cpu or auto") as caught:
        resolve_device("cuda:0")
    assert "\n" not in str(caught.value)


def test_cache_list_and_prune(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDSTORE_CACHE", str(tmp_path))
    graph = tmp_path / "onnx" / "m.fp32.abc"
    graph.mkdir(parents=True)
    (graph / "model.onnx").write_bytes(b"x" * 3000)
    (tmp_path / "models" / "m").mkdir(parents=True)
    (tmp_path / "models" / "m" / "config.json").write_text("{}")
    (tmp_path / "store.zarr").mkdir()
    (tmp_path / "store.zarr" / "zarr.json").write_text("{}")
    r = runner.invoke(app, ["cache", "list", "--json"])
    assert r.exit_code == 0, r.output
    assert {(e["kind"], e["path"]) for e in json.loads(r.stdout)} == {
        ("ONNX graph", str(graph)), ("model", str(tmp_path / "models" / "m")), ("store", str(tmp_path / "store.zarr"))}
    r = runner.invoke(app, ["cache", "prune", "--dry-run"])
    assert r.exit_code == 0 and graph.exists() and "would remove" in r.output
    r = runner.invoke(app, ["cache", "prune"])
    assert r.exit_code == 0, r.output
    assert not graph.exists() and (tmp_path / "models" / "m").exists() and (tmp_path / "store.zarr").exists()
    r = runner.invoke(app, ["cache", "prune", "--kind", "stores"])
    assert r.exit_code == 1 and "never pruned" in r.output
