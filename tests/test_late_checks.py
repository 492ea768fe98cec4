"""Issue 28 item 8 (and the `mine` items of 10): every command refuses an output it could not write before it
encodes or trains; `mine` never overwrites an input, and names its output columns after the columns it read."""
from __future__ import annotations

import csv
import dataclasses

import pytest

from embedstore.base.errors import ConfigError
from embedstore.study.run import run_study

from test_frontier_cli import invoke, pair_file
from test_steps_cli import read_only_dir, saved_pipeline  # noqa: F401 - fixtures
from test_sweep import make_config

pytestmark = pytest.mark.fault('unwritable or clashing outputs and inputs the model cannot take')


def test_mine_refuses_an_unwritable_out_before_encoding(tiny_model_dir, tmp_path, read_only_dir):
    data, store = pair_file(tmp_path), tmp_path / "s.zarr"
    r = invoke("mine", data, data, "--out", read_only_dir / "mined.tsv", "--model", tiny_model_dir, "--store", store)
    assert r.exit_code == 1 and r.stderr.count("\n") == 1
    assert r.stderr.startswith(f"error: {read_only_dir / 'mined.tsv'}: cannot write in {read_only_dir}")
    assert not store.exists()  # nothing was encoded


@pytest.mark.parametrize("name", ["cosine.json", "cosine.jsonl"])
@pytest.mark.parametrize("command", ["cosine", "retrieval", "layers", "gradients"])
def test_analyze_refuses_an_unwritable_out_before_encoding(tiny_model_dir, tmp_path, read_only_dir, name, command):
    data, store = pair_file(tmp_path), tmp_path / "s.zarr"
    extra = ["--label-column", "fold"] if command == "gradients" else []
    r = invoke("analyze", command, data, *extra, "--out", read_only_dir / name, "--model", tiny_model_dir,
               "--store", store)
    assert r.exit_code == 1 and r.stderr.count("\n") == 1, r.output
    assert str(read_only_dir / name) in r.stderr and not store.exists()


def test_analyze_refuses_a_jsonl_out_it_cannot_append_to(tiny_model_dir, tmp_path, monkeypatch):
    import builtins
    data, store, out = pair_file(tmp_path), tmp_path / "s.zarr", tmp_path / "runs.jsonl"
    out.write_text('{"kind": "cosine"}\n')
    real_open = builtins.open

    def refusing(file, mode="r", *args, **kwargs):  # a file the user may read but not write (root ignores 0444)
        if str(file) == str(out) and "a" in mode:
            raise PermissionError(13, "Permission denied", str(out))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refusing)
    r = invoke("analyze", "cosine", data, "--out", out, "--model", tiny_model_dir, "--store", store)
    assert r.exit_code == 1 and "cannot append" in r.stderr and not store.exists()


def test_a_sweep_refuses_an_unwritable_results_file_before_encoding(tmp_path, read_only_dir):
    config = dataclasses.replace(make_config(tmp_path), results=read_only_dir / "results.jsonl")
    with pytest.raises(ConfigError, match="cannot write in"):
        run_study(config, workers=1, progress=False)
    assert not (tmp_path / "store.zarr").exists()


def test_a_sweep_refuses_a_foreign_results_file_before_encoding(tmp_path):
    config = make_config(tmp_path)
    config.results.parent.mkdir(parents=True, exist_ok=True)
    config.results.write_bytes(b"a report\nnot ours\n")
    with pytest.raises(Exception, match="not a JSON object"):
        run_study(config, workers=1, progress=False)
    assert config.results.read_bytes() == b"a report\nnot ours\n" and not (tmp_path / "store.zarr").exists()


def test_mine_refuses_an_out_that_is_one_of_its_inputs(tiny_model_dir, tmp_path):
    data = pair_file(tmp_path)
    before = data.read_bytes()
    r = invoke("mine", data, data, "--out", data, "--model", tiny_model_dir, "--store", tmp_path / "s.zarr")
    assert r.exit_code == 1 and "is also an input file" in r.stderr
    assert data.read_bytes() == before


def test_mine_names_its_columns_after_the_columns_it_read(tiny_model_dir, tmp_path):
    rows = [(f"the cell formula number {i}", f"单元格公式编号 {i}") for i in range(40)]
    data = tmp_path / "zh.tsv"
    data.write_text("en\tzh\n" + "".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "mined.tsv"
    r = invoke("mine", data, data, "--target-column", "zh", "--out", out, "--model", tiny_model_dir,
               "--store", tmp_path / "s.zarr")
    assert r.exit_code == 0, r.output
    with open(out, encoding="utf-8") as f:
        header = next(csv.reader(f, delimiter="\t"))
    assert header == ["en", "zh", "margin"]
    txt = tmp_path / "a.txt"
    txt.write_text("one\ntwo\n")
    r = invoke("mine", txt, txt, "--source-column", "text", "--target-column", "text", "--out", tmp_path / "m.tsv",
               "--model", tiny_model_dir, "--store", tmp_path / "s.zarr")
    assert r.exit_code == 1 and "--names SOURCE,TARGET" in r.stderr


def test_evaluate_against_labels_the_head_never_saw_says_so(saved_pipeline, tiny_model_dir, tmp_path):
    """Issue 28 item 10: it reported accuracy 0 without a word."""
    import json
    rows = [(f"the cell number {i}", f"셀 번호 {i}", "calc" if i % 2 else "unknown") for i in range(12)]
    data = tmp_path / "test.tsv"
    data.write_text("en\tko\tapps\n" + "".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    common = ["--pipeline", saved_pipeline, "--test", data, "--text-column", "ko", "--label-column", "apps",
              "--model", tiny_model_dir, "--store", tmp_path / "s.zarr"]
    with pytest.warns(UserWarning, match=r"6 test rows carry labels the head never saw \(unknown\)"):
        r = invoke("evaluate", *common, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["labels_the_head_never_saw"] == {"unknown": 6}
    data.write_text("en\tko\tapps\n" + "".join(f"{a}\t{b}\tother\n" for a, b, _ in rows), encoding="utf-8")
    r = invoke("evaluate", *common)
    assert r.exit_code == 1 and "none of the test labels (other) is a class the head was trained on" in r.stderr


def test_a_max_length_beyond_the_models_positions_is_refused_before_encoding(tiny_model_dir, tmp_path):
    """Issue 28 item 10: it was accepted until the forward pass (the tiny XLM-R allows 512 tokens)."""
    texts = tmp_path / "t.txt"
    texts.write_text("one\ntwo\n")
    store = tmp_path / "s.zarr"
    r = invoke("encode", texts, "--model", tiny_model_dir, "--store", store, "--max-length", 600)
    assert r.exit_code == 1 and r.stderr.count("\n") == 1
    assert "max_length: 600 tokens" in r.stderr and "expected at most 512" in r.stderr and not store.exists()
    r = invoke("encode", texts, "--model", tiny_model_dir, "--store", store, "--max-length", 512)
    assert r.exit_code == 0, r.output
