"""train-aligner → train-head → evaluate → predict through the real CLI, on the tiny model."""
import json
import os
import shutil
import subprocess

import pytest
from typer.testing import CliRunner

from embedstore.base.errors import ConfigError
from embedstore.cli.app import app
from embedstore.encoding.models import model_fingerprint
from embedstore.pipelines.pipeline import Pipeline
from embedstore.store import Store

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
               "--label-column", "apps", "--where", "fold=8,9", "--json", *common)
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["n"] == 24 and set(res) >= {"with_aligner", "without_aligner"}
    assert len(res["with_aligner"]["confusion"]) == 2
    # evaluate's figures are what the pipeline predicts on those rows, through the aligner and around it
    rows = [line.split("\t") for line in data.read_text().splitlines()[1:] if line.split("\t")[3] in ("8", "9")]
    texts, truth = [r[1] for r in rows], [r[2] for r in rows]
    pipe = Pipeline.load(tmp_path / "pipe", store=tmp_path / "s.zarr", model=tiny_model_dir)
    for name, through in (("with_aligner", True), ("without_aligner", False)):
        predicted = pipe.predict(texts, use_aligner=through)
        assert res[name]["accuracy"] == sum(p == t for p, t in zip(predicted, truth)) / len(truth)
    r = invoke("predict", "--pipeline", tmp_path / "pipe", "a brand new formula text", "--json", *common)
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


def head_args(data, out, *extra):
    return ["train-head", "--train", data, "--text-column", "en", "--label-column", "apps", "--out", out, *extra]


def test_train_head_refuses_an_aligner_fitted_on_another_layer(tiny_model_dir, tmp_path):
    data = make_files(tmp_path)
    common = ["--model", tiny_model_dir, "--store", tmp_path / "s.zarr"]
    r = invoke("train-aligner", "--pairs", data, "--target-column", "ko", "--layer", "2", "--out", tmp_path / "al",
               *common)
    assert r.exit_code == 0, r.output
    r = invoke(*head_args(data, tmp_path / "pipe", "--aligner", tmp_path / "al", "--layer", "1", *common))
    assert r.exit_code == 1
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1
    assert "aligner was fitted on vectors of" in r.stderr and "layer=2" in r.stderr and "layer=1" in r.stderr
    assert not (tmp_path / "pipe").exists()


def test_train_head_finds_vectors_encoded_with_the_same_max_length(tiny_model_dir, tmp_path):
    data = make_files(tmp_path)
    store = tmp_path / "s.zarr"
    common = ["--model", tiny_model_dir, "--store", store, "--max-length", "256"]
    r = invoke("encode", data, "--column", "en", "--json", *common)
    assert r.exit_code == 0, r.output
    r = invoke(*head_args(data, tmp_path / "pipe", "--json", *common))
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["store_key"]["max_length"] == 256
    r = invoke("predict", "--pipeline", tmp_path / "pipe", "the page and paragraph number 0", "--json",
               "--store", store, "--model", tiny_model_dir)
    assert r.exit_code == 0, r.output
    keys = Store.open(store).info()["keys"]
    assert [(k["max_length"], k["rows"]) for k in keys] == [(256, 120)]  # nothing re-encoded under another key


def test_a_pipeline_refuses_a_model_that_now_resolves_to_other_weights(tiny_model_dir, tmp_path):
    data, model = make_files(tmp_path), tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    r = invoke(*head_args(data, tmp_path / "pipe", "--model", model, "--store", tmp_path / "s.zarr"))
    assert r.exit_code == 0, r.output
    before = model_fingerprint(model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "initializer_range": 0.5}))
    after = model_fingerprint(model)
    assert after != before
    r = invoke("predict", "--pipeline", tmp_path / "pipe", "a text", "--model", model, "--store", tmp_path / "s.zarr")
    assert r.exit_code == 1 and r.stderr.count("\n") == 1
    assert before in r.stderr and after in r.stderr and "pipeline.json" in r.stderr


@pytest.fixture(scope="module")
def saved_pipeline(tiny_model_dir, tmp_path_factory):
    """A pipeline with an aligner, both fitted on layer 2 of the tiny model."""
    tmp = tmp_path_factory.mktemp("saved")
    data = make_files(tmp)
    common = ["--model", tiny_model_dir, "--store", tmp / "s.zarr", "--layer", "2"]
    r = invoke("train-aligner", "--pairs", data, "--target-column", "ko", "--where", "fold=0,1,2,3,4,5", "--out",
               tmp / "al", *common)
    assert r.exit_code == 0, r.output
    r = invoke(*head_args(data, tmp / "pipe", "--aligner", tmp / "al", *common))
    assert r.exit_code == 0, r.output
    return tmp / "pipe"


def test_a_saved_pipeline_loads_with_its_encoding_options(saved_pipeline, tiny_model_dir):
    pipe = Pipeline.load(saved_pipeline, model=tiny_model_dir)
    assert pipe.key.layer == 2 and pipe.encode_options.layers == (2,)
    assert pipe.encode_options.fingerprint == model_fingerprint(tiny_model_dir)


def test_a_pipeline_refuses_an_aligner_fitted_under_another_key(saved_pipeline, tiny_model_dir, tmp_path):
    pipe = tmp_path / "pipe"
    shutil.copytree(saved_pipeline, pipe)
    config_path = pipe / "aligner" / "config.json"
    config = json.loads(config_path.read_text())
    config["provenance"]["store_key"]["layer"] = 1
    config_path.write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=r"aligner was fitted on vectors of .*layer=1.*; these vectors are .*layer=2"):
        Pipeline.load(pipe, model=tiny_model_dir)


@pytest.mark.parametrize("edit, message", [
    (lambda m: "{not json", r"pipeline.json: not valid JSON"),
    (lambda m: json.dumps([m]), r"pipeline.json: expected a JSON object, got list"),
    (lambda m: json.dumps({**m, "stor": "x"}), r"pipeline.json: stor: unknown key \(did you mean 'store'\?\)"),
    (lambda m: json.dumps({k: v for k, v in m.items() if k != "encoding"}), r"pipeline.json: encoding: missing"),
    (lambda m: json.dumps({**m, "seed": "0"}), r"pipeline.json: seed: '0'; expected int"),
    (lambda m: json.dumps({**m, "aligner": "../elsewhere"}), r"pipeline.json: aligner: '../elsewhere'; expected"),
    (lambda m: json.dumps({**m, "encoding": {**m["encoding"], "layers": [1, 2]}}),
     r"pipeline.json: encoding.layers: \[1, 2\]; expected exactly one layer"),
    (lambda m: json.dumps({**m, "encoding": {**m["encoding"], "pooling": "avg"}}),
     r"pipeline.json: encoding.pooling: 'avg' is not supported"),
    (lambda m: json.dumps({**m, "encoding": {**m["encoding"], "layer": 2}}),
     r"pipeline.json: encoding.layer: unknown key"),
    (lambda m: json.dumps({**m, "encoding": {k: v for k, v in m["encoding"].items() if k != "fingerprint"}}),
     r"pipeline.json: encoding.fingerprint: missing"),
    (lambda m: json.dumps({**m, "store_key": "x"}), r"pipeline.json: store_key: 'x'; expected dict"),
])
def test_a_pipeline_manifest_is_validated_field_by_field(saved_pipeline, tiny_model_dir, tmp_path, edit, message):
    pipe = tmp_path / "pipe"
    shutil.copytree(saved_pipeline, pipe)
    manifest = json.loads((pipe / "pipeline.json").read_text())
    (pipe / "pipeline.json").write_text(edit(manifest))
    with pytest.raises(ConfigError, match=message):
        Pipeline.load(pipe, model=tiny_model_dir)


def test_a_manifest_names_the_weights_once_and_old_manifests_still_load(saved_pipeline, tiny_model_dir, tmp_path):
    """Issue 30.4: the fingerprint lives in `encoding` alone; a manifest written before (with `embedstore`,
    `model_fingerprint` and `store_key` copies) loads as it did."""
    manifest = json.loads((saved_pipeline / "pipeline.json").read_text())
    assert json.dumps(manifest).count(manifest["encoding"]["fingerprint"]) == 1
    assert {"embedstore_version", "hostname", "written_at"} <= set(manifest) and "embedstore" not in manifest
    pipe = tmp_path / "pipe"
    shutil.copytree(saved_pipeline, pipe)
    key = Pipeline.load(pipe, model=tiny_model_dir).key
    old = {k: v for k, v in manifest.items() if k not in ("embedstore_version", "hostname", "written_at")}
    old.update(embedstore="0.1.0", model_fingerprint=key.fingerprint, store_key=key.to_dict())
    (pipe / "pipeline.json").write_text(json.dumps(old))
    assert Pipeline.load(pipe, model=tiny_model_dir).key == key


def test_a_pipeline_never_writes_to_the_store_its_manifest_names(saved_pipeline, tiny_model_dir, tmp_path):
    """Issue 13 D5: `store` in pipeline.json is provenance; predict uses the store the user names (or the default)."""
    pipe, elsewhere, mine = tmp_path / "pipe", tmp_path / "elsewhere" / "planted.zarr", tmp_path / "mine.zarr"
    shutil.copytree(saved_pipeline, pipe)
    manifest = json.loads((pipe / "pipeline.json").read_text())
    (pipe / "pipeline.json").write_text(json.dumps({**manifest, "store": str(elsewhere)}))
    r = invoke("predict", "--pipeline", pipe, "a new page text", "--json", "--model", tiny_model_dir, "--store", mine)
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "elsewhere").exists()
    assert Store.open(mine).info()["keys"][0]["rows"] == 1


def test_a_model_path_in_a_pipeline_is_not_followed(saved_pipeline, tiny_model_dir, tmp_path):
    """Issue 13 D5: a model recorded as a path is used only when the user names it again."""
    pipe = tmp_path / "pipe"
    shutil.copytree(saved_pipeline, pipe)
    r = invoke("predict", "--pipeline", pipe, "a text", "--store", tmp_path / "s.zarr")
    assert r.exit_code == 1 and r.stderr.count("\n") == 1
    assert f"encoding.model: '{tiny_model_dir}' is a path" in r.stderr and "not followed" in r.stderr
    assert not (tmp_path / "s.zarr").exists()


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory nobody may write in: a read-only tmpfs as root (permission bits do not stop root), else 0555."""
    path = tmp_path / "ro"
    path.mkdir()
    if os.geteuid() == 0:
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(path)],
                          capture_output=True).returncode != 0:
            pytest.skip("cannot mount a read-only tmpfs")
        yield path
        subprocess.run(["umount", str(path)], check=True)
    else:
        path.chmod(0o555)
        yield path
        path.chmod(0o755)


@pytest.mark.parametrize("step", ["train-aligner", "train-head"])
def test_a_read_only_output_is_refused_before_any_work(tiny_model_dir, tmp_path, read_only_dir, step):
    data, store = make_files(tmp_path), tmp_path / "s.zarr"
    common = ["--model", tiny_model_dir, "--store", store, "--out", read_only_dir / "out"]
    args = (["train-aligner", "--pairs", data, "--target-column", "ko"] if step == "train-aligner"
            else ["train-head", "--train", data, "--text-column", "en", "--label-column", "apps"])
    r = invoke(*args, *common)
    assert r.exit_code == 1 and r.stderr.count("\n") == 1
    assert r.stderr.startswith(f"error: {read_only_dir / 'out'}: cannot write in {read_only_dir}")
    assert not store.exists()  # refused before anything was encoded


@pytest.mark.parametrize("step", ["train-aligner", "train-head"])
def test_an_output_holding_other_files_is_not_replaced(tiny_model_dir, tmp_path, step):
    data, out = make_files(tmp_path), tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    args = (["train-aligner", "--pairs", data, "--target-column", "ko"] if step == "train-aligner"
            else ["train-head", "--train", data, "--text-column", "en", "--label-column", "apps"])
    r = invoke(*args, "--model", tiny_model_dir, "--store", tmp_path / "s.zarr", "--out", out)
    assert r.exit_code == 1 and "holds 'notes.txt', which is not part of" in r.stderr
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "my notes"


def test_evaluate_refuses_a_read_only_output_before_any_work(saved_pipeline, tiny_model_dir, tmp_path, read_only_dir):
    data, store = make_files(tmp_path), tmp_path / "s.zarr"
    r = invoke("evaluate", "--pipeline", saved_pipeline, "--test", data, "--text-column", "ko", "--label-column",
               "apps", "--model", tiny_model_dir, "--store", store, "--out", read_only_dir / "result.json")
    assert r.exit_code == 1 and r.stderr.count("\n") == 1
    assert r.stderr.startswith(f"error: {read_only_dir / 'result.json'}: cannot write in {read_only_dir}")
    assert not store.exists()  # refused before anything was encoded


def test_train_aligner_shows_the_target_side_encoding_too(tiny_model_dir, tmp_path, monkeypatch):
    import embedstore.pipelines.steps as steps

    data = make_files(tmp_path)
    shown: list[str] = []
    real_embed = steps.embed

    def recording_embed(texts, **kw):
        if kw.get("progress"):
            shown.extend(texts)
        return real_embed(texts, **kw)

    monkeypatch.setattr(steps, "embed", recording_embed)
    r = invoke("train-aligner", "--pairs", data, "--target-column", "ko", "--arch", "procrustes", "--out",
               tmp_path / "al", "--model", tiny_model_dir, "--store", tmp_path / "s.zarr")
    assert r.exit_code == 0, r.output
    korean = [line.split("\t")[1] for line in data.read_text().splitlines()[1:]]
    assert set(korean) <= set(shown)  # the progress the user sees covers the translations, not only English


def test_head_options_single_label_and_the_method_result_first(tiny_model_dir, tmp_path):
    """train-head takes the head family, its normalisation and main parameters and says whether it converged;
    --single-label drops comma-joined labels on both commands; evaluate prints the pipeline's own result first
    and labels the other way of applying the aligner a diagnostic (before: "with aligner" came first even for
    a forward closed-form aligner, whose method result is the one without it)."""
    data = make_files(tmp_path)
    text = data.read_text().splitlines()
    text[1] = text[1].replace("\twriter\t", "\tcalc,writer\t").replace("\tcalc\t", "\tcalc,writer\t")
    data.write_text("\n".join(text) + "\n")
    common = ["--model", tiny_model_dir, "--store", tmp_path / "s.zarr"]
    r = invoke("train-aligner", "--pairs", data, "--target-column", "ko", "--arch", "procrustes", "--where",
               "fold=0,1,2,3,4,5", "--out", tmp_path / "al", "--json", *common)
    assert r.exit_code == 0, r.output
    r = invoke("train-head", "--train", data, "--text-column", "en", "--label-column", "apps", "--aligner",
               tmp_path / "al", "--head", "logistic", "--normalize", "l2", "--C", "2.5", "--single-label",
               "--out", tmp_path / "pipe", *common)
    assert r.exit_code == 0, r.output
    assert "converged after" in r.output and "C 2.5" in r.output
    config = json.loads((tmp_path / "pipe" / "head" / "config.json").read_text())
    assert config["params"]["normalize"] == "l2" and config["params"]["C"] == 2.5
    assert set(config["state"]["classes_"]["__ndarray__"]) == {"calc", "writer"}  # the multi-label row dropped
    r = invoke("train-head", "--train", data, "--text-column", "en", "--label-column", "apps", "--head", "mlp",
               "--C", "1", "--out", tmp_path / "pipe2", *common)
    assert r.exit_code == 1 and "does not take C" in r.output
    r = invoke("evaluate", "--pipeline", tmp_path / "pipe", "--test", data, "--text-column", "ko",
               "--label-column", "apps", "--single-label", *common)
    assert r.exit_code == 0, r.output
    first, diagnostic = r.output.index("result: langalign"), r.output.index("diagnostic only (with aligner")
    assert first < diagnostic
    r = invoke("evaluate", "--pipeline", tmp_path / "pipe", "--test", data, "--text-column", "ko",
               "--label-column", "apps", "--single-label", "--json", *common)
    assert json.loads(r.stdout)["n"] == 119 and json.loads(r.stdout)["primary"] == "without_aligner"
    assert json.loads(r.stdout)["method"] == "langalign"  # the main result named for what it is
