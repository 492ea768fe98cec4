"""train-aligner → train-head → evaluate → predict through the real CLI, on the tiny model."""
import json

from typer.testing import CliRunner

from embedstore.cli.app import app

runner = CliRunner()
TOPICS = {"calc": ["cell", "formula", "sheet", "column"], "writer": ["page", "paragraph", "font", "document"]}


def make_files(tmp_path):
    rows = []
    for i in range(120):
        label = "calc" if i % 2 else "writer"
        words = TOPICS[label]
        en = f"the {words[i % 4]} and {words[(i + 1) % 4]} number {i}"
        rows.append((en, f"{en} (ko)", label, str(i % 10)))
    path = tmp_path / "data.tsv"
    path.write_text("en\tko\tapps\tfold\n" + "".join("\t".join(r) + "\n" for r in rows))
    return path


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result


def test_pipeline_end_to_end(tiny_model_dir, tmp_path):
    data = make_files(tmp_path)
    common = ["--model", tiny_model_dir, "--store", tmp_path / "s.zarr"]
    r = invoke("train-aligner", "--pairs", data, "--target-column", "ko", "--arch", "procrustes", "--where",
               "fold=0,1,2,3,4,5", "--out", tmp_path / "al", "--json", *common)
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert rec["sizes"]["pairs"] == 72 and rec["model_fingerprint"] and rec["store_key"]["pooling"] == "mean"
    r = invoke("train-head", "--train", data, "--text-column", "en", "--label-column", "apps", "--aligner",
               tmp_path / "al", "--out", tmp_path / "pipe", "--json", *common)
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert rec["sizes"]["dropped_as_aligner_pairs"] == 72 and rec["sizes"]["train"] == 48  # disjoint by default
    r = invoke("evaluate", "--pipeline", tmp_path / "pipe", "--test", data, "--text-column", "ko",
               "--label-column", "apps", "--where", "fold=8,9", "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["n"] == 24 and set(res) >= {"with_aligner", "without_aligner"}
    assert 0 <= res["with_aligner"]["accuracy"] <= 1 and len(res["with_aligner"]["confusion"]) == 2
    r = invoke("predict", "--pipeline", tmp_path / "pipe", "a brand new formula text", "--json")
    assert r.exit_code == 0, r.output
    pred = json.loads(r.stdout)[0]
    assert pred["label"] in ("calc", "writer") and abs(sum(pred["probabilities"].values()) - 1) < 1e-5


def test_errors_are_one_line_and_nonzero(tiny_model_dir, tmp_path):
    data = make_files(tmp_path)
    r = invoke("train-aligner", "--pairs", data, "--target-column", "xx", "--out", tmp_path / "al",
               "--model", tiny_model_dir, "--store", tmp_path / "s.zarr")
    assert r.exit_code == 1 and "no column 'xx'; columns present: en, ko, apps, fold" in r.output
    assert not (tmp_path / "al").exists()
    r = invoke("train-aligner", "--pairs", data, "--target-column", "ko", "--size", "500", "--out",
               tmp_path / "al", "--model", tiny_model_dir, "--store", tmp_path / "s.zarr")
    assert r.exit_code == 1 and "asked for 500 rows" in r.output and "holds 120" in r.output
    r = invoke("predict", "--pipeline", tmp_path / "nothing", "x")
    assert r.exit_code == 1 and "not a pipeline directory" in r.output
