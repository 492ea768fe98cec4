"""Issue 28 item 8 (and the `mine` items of 10): every command refuses an output it could not write before it
encodes or trains; `mine` never overwrites an input, and names its output columns after the columns it read."""
from __future__ import annotations

import csv
import dataclasses

import pytest

from embedstore.base.errors import ConfigError
from embedstore.study.run import run_study

from test_frontier_cli import invoke, pair_file
from test_steps_cli import read_only_dir  # noqa: F401 - a fixture
from test_sweep import make_config


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
