"""`embedstore analyze ...` end to end on the tiny model, and the real e5-small signal on LibreOffice en-ko."""
import hashlib
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from embedstore.cli.analyze_cmds import analyze_app
from embedstore.estimators.aligners import make_aligner
from embedstore.analysis.runs import SplitOptions, run_cosine, run_gradients
from embedstore.data.tasks import Source
from embedstore.encoding.options import EncodeOptions
from embedstore.study.report_data import COSINE_FIELDS

runner = CliRunner()
#: The real test's vectors are kept across sessions, as conftest keeps e5-small: the store is content-addressed
#: (keyed by model fingerprint), so reused vectors equal a fresh encode's, and a re-run encodes nothing.
TOPICS = {"calc": ["cell", "formula", "sheet", "column"], "writer": ["page", "paragraph", "font", "document"]}
KO = {"cell": "셀", "formula": "수식", "sheet": "시트", "column": "열", "page": "페이지", "paragraph": "단락",
      "font": "글꼴", "document": "문서"}


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    rows = []
    for i in range(40):
        label = "calc" if i % 2 else "writer"
        a, b = TOPICS[label][i % 4], TOPICS[label][(i + 1) % 4]
        rows.append((f"the {a} and {b} number {i}", f"{KO[a]} 및 {KO[b]} 번호 {i}", label, str(i % 10)))
    path = tmp_path_factory.mktemp("analyze") / "pairs.tsv"
    path.write_text("en\tko\tapps\tfold\n" + "".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def common(tiny_model_dir, tmp_path_factory):
    return ["--model", str(tiny_model_dir), "--store", str(tmp_path_factory.mktemp("store") / "s.zarr")]


def invoke(*args):
    return runner.invoke(analyze_app, [str(a) for a in args])


def test_cosine_json_record_has_report_fields_retrieval_collapse_and_provenance(pairs, common, tmp_path):
    out = tmp_path / "cosine.jsonl"
    for seed in (0, 1):
        r = invoke("cosine", pairs, "--test-fraction", 0.25, "--seed", seed, "--out", out, "--json", *common)
        assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert rec["kind"] == "cosine" and rec["language"] == "ko" and rec["aligner"] == "procrustes"
    assert all(isinstance(rec[f], float) for f in COSINE_FIELDS) and rec["rows"] == 10 and rec["pair_size"] == 30
    # one P@1 per quantity: the collapse check reads the same retrieval as the table
    assert rec["collapse"]["p1"] == rec["retrieval"]["aligned"]["forward"]["nn"]["p@1"]
    assert rec["collapse"]["identity_p1"] == rec["retrieval"]["raw"]["forward"]["nn"]["p@1"]
    assert isinstance(rec["collapse"]["collapsed"], bool)
    prov = rec["provenance"]
    assert prov["input"]["sha256"] == hashlib.sha256(pairs.read_bytes()).hexdigest()
    assert prov["fit_rows"] == 30 and prov["test_rows"] == 10 and prov["seed"] == 1
    assert prov["model_fingerprint"] and prov["store_key"]["layer"] == 2 and prov["embedstore_version"]
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [w["seed"] for w in written] == [0, 1] and written[1] == rec


def test_the_pairs_are_read_as_every_command_reads_rows_with_where(pairs, common):
    """The analyses read their pairs as the one rows value (`data.tasks.Source`): `--where` keeps rows before the
    split divides them, and the record names the columns and filters it read; a filter keeping nothing is one
    line naming the file."""
    r = invoke("retrieval", pairs, "--where", "fold=0,1,2,3,4,5,6,7", "--test-folds", "6-7", "--json", *common)
    assert r.exit_code == 0, r.output
    prov = json.loads(r.stdout)["provenance"]
    assert prov["input"]["rows"] == 32 and prov["test_rows"] == 8 and prov["fit_rows"] == 24  # folds 8-9 left out
    assert prov["input"]["text"] == "en" and prov["input"]["target"] == "ko"
    assert prov["input"]["where"] == {"fold": [str(f) for f in range(8)]} == prov["config"]["where"]
    r = invoke("gradients", pairs, "--label-column", "apps", "--where", "fold=0,1,2,3,4", "--test-fraction", 0.25,
               "--json", *common)
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert rec["provenance"]["input"]["rows"] == 20 and rec["provenance"]["input"]["label"] == "apps"
    r = invoke("cosine", pairs, "--where", "fold=42", *common)
    assert r.exit_code == 1 and r.stderr.count("\n") == 1 and f"{pairs}: no rows pass the filters" in r.stderr


def test_analyses_fit_an_aligner_on_the_rows_and_seed_train_aligner_would_give_it(pairs, common):
    """The analyses built aligners without `seed_pairs` (a seeded self-learner took every fit row for a pair) and
    without their seed (RCSLS and self-learning fitted with random_state=0 whatever --seed said)."""
    r = invoke("retrieval", pairs, "--test-fraction", 0.25, "--arch", "selflearn_seeded", "--size", 10, "--seed", 2,
               "--json", *common)
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    params, prov = rec["provenance"]["aligner_params"], rec["provenance"]
    assert params["seed_pairs"] == rec["pair_size"] == prov["fit_pairs"] == 10 and params["seed"] == 2
    assert prov["fit_rows"] == 10 + 2 * 10  # 10 pairs, and the other 20 fit rows split into unpaired halves
    r = invoke("retrieval", pairs, "--test-fraction", 0.25, "--arch", "selflearn", "--seed", 2, "--json", *common)
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert rec["pair_size"] == 0 and rec["provenance"]["aligner_params"]["seed"] == 2


def test_a_loaded_aligner_is_scored_only_on_rows_it_was_not_fitted_on(pairs, common, tmp_path):
    """`analyze retrieval --aligner` scored an aligner on the pairs it was fitted on and called them held out."""
    from embedstore.cli.app import app

    fitted = tmp_path / "al"
    r = runner.invoke(app, [str(a) for a in ("train-aligner", "--pairs", pairs, "--target-column", "ko", "--where",
                                             "fold=0,1,2,3,4,5", "--out", fitted, "--json", *common)])
    assert r.exit_code == 0, r.output
    r = invoke("retrieval", pairs, "--aligner", fitted, "--test-folds", "4-9", "--json", *common)
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert rec["held_out"] == {"checked": True, "dropped_as_fit_pairs": 8}  # folds 4 and 5: 4 rows each
    assert rec["provenance"]["test_rows"] == 16 and "8 rows dropped as the aligner's fit pairs" in rec["provenance"]["split"]
    r = invoke("retrieval", pairs, "--aligner", fitted, "--test-folds", "0-5", *common)
    assert r.exit_code == 1 and "24 of the 24 held-out rows" in r.output and len(r.output.strip().splitlines()) == 1
    bare = tmp_path / "bare"  # saved through the Python API: no pair hashes, so the record says it could not check
    make_aligner("procrustes").fit(*np.random.default_rng(0).standard_normal((2, 20, 32))).save(bare)
    r = invoke("retrieval", pairs, "--aligner", bare, "--test-folds", "8-9", *common)
    assert r.exit_code == 0, r.output
    assert "records no pair hashes" in r.output


def test_retrieval_table_with_fold_split_and_sizes(pairs, common):
    r = invoke("retrieval", pairs, "--fit-folds", "0-5", "--test-folds", "8-9", "--size", 10, "--test-size", 6,
               *common)
    assert r.exit_code == 0, r.output
    assert "10 fit rows, 6 held-out rows" in r.stdout
    assert "CSLS" in r.stdout and "aligned en→ko" in r.stdout and "p@5" in r.stdout
    assert "collapsed" in r.stdout.lower()


def test_layers_reports_every_hidden_layer_by_default(pairs, common):
    r = invoke("layers", pairs, "--arch", "linear", "--json", *common)
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert [row["layer"] for row in rec["layers"]] == [0, 1, 2]  # embeddings + 2 layers of the tiny model
    assert all(set(row) >= {"cosine", "retrieval", "collapse"} for row in rec["layers"])
    assert len({row["cosine"]["en_tr"] for row in rec["layers"]}) == 3  # each layer's own vectors
    r = invoke("layers", pairs, "--layers", "0,-1", *common)
    assert r.exit_code == 0, r.output
    assert "per layer" in r.stdout


def test_gradients_with_and_without_an_aligner(pairs, common):
    for arch in ("procrustes", "none"):
        r = invoke("gradients", pairs, "--label-column", "apps", "--arch", arch, "--batch-size", 4, "--json", *common)
        assert r.exit_code == 0, r.output
        rec = json.loads(r.stdout)
        assert rec["rows"] == 8 and rec["parameters"]["n"] == 2 and rec["representation"]["n"] == 8
        assert rec["map"] == {"procrustes": "ProcrustesAligner.to_torch()",
                              "none": "identity-initialised linear map (no aligner)"}[arch]
        assert rec["alignment_loss"] > 0 and rec["task_loss"] > 0
        assert rec["parameters"]["alignment_grad_norm"] > 0 and rec["parameters"]["task_grad_norm"] > 0
        assert set(rec["head_accuracy"]) == {"english_aligned", "target"}
    r = invoke("gradients", pairs, "--label-column", "apps", *common)
    assert r.exit_code == 0, r.output
    assert "mean cosine" in r.stdout and "representation z" in r.stdout and "head accuracy" in r.stdout


def test_a_saved_aligner_is_loaded_and_arch_plus_aligner_is_refused(pairs, common, tmp_path):
    rng = np.random.default_rng(0)
    saved = make_aligner("meanshift").fit(rng.standard_normal((5, 32)), rng.standard_normal((5, 32)))
    saved.save(tmp_path / "al")
    r = invoke("cosine", pairs, "--aligner", tmp_path / "al", "--json", *common)
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert rec["aligner"] == "meanshift" and rec["pair_size"] is None
    assert rec["provenance"]["aligner_dir"] == str((tmp_path / "al").resolve())
    assert rec["provenance"]["fit_rows"] == 0 and rec["rows"] == rec["provenance"]["test_rows"] == 8
    r = invoke("cosine", pairs, "--aligner", tmp_path / "al", "--arch", "fc", *common)
    assert r.exit_code == 1 and "use one" in r.stderr


@pytest.mark.parametrize("args,message", [
    (["--source-column", "english"], "no column 'english'; columns present: en, ko, apps, fold"),
    (["--arch", "svd"], "aligner 'svd' is unknown"),
    (["--test-folds", "8-9", "--fit-folds", "7-9"], "folds 8, 9 of column 'fold' are both fit and test folds"),
    (["--size", "many"], "size 'many' is not understood"),
])
def test_bad_options_exit_1_with_one_line_naming_the_problem(pairs, common, args, message):
    r = invoke("cosine", pairs, *args, *common)
    assert r.exit_code == 1
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1
    assert message in r.stderr


# --------------------------------------------------------------------------------------------- real signal


@pytest.mark.real
def test_procrustes_lifts_en_ko_retrieval_and_cosine_on_held_out_libreoffice_rows(real_sample, e5_small_dir, e5_store):
    """Procrustes on 600 pairs of folds 0-5, reported on 200 rows of folds 8-9 (e5-small, last layer), of the real
    tests' rows of the bundled sample, whose vectors `e5_store` holds (a 384-d Procrustes map is already well
    determined by 600 pairs)."""
    pairs_file = real_sample
    kwargs = dict(split=SplitOptions(fit_folds="0-5", test_folds="8-9", size=600, test_size=200),
                  store=e5_store, options=EncodeOptions(model=str(e5_small_dir)), seed=0)
    rec = run_cosine(Source(pairs_file, "en", target="ko"), arch="procrustes", **kwargs)
    raw, aligned = rec["retrieval"]["raw"], rec["retrieval"]["aligned"]
    print(f"\nen-ko held-out {rec['rows']} rows, Procrustes on {rec['pair_size']} pairs "
          f"({rec['provenance']['encoded_now']} texts encoded)")
    print(f"cosine: en-ko {rec['en_tr']:.3f} (shuffled {rec['shuffled_en_tr']:.3f}), aligned-ko "
          f"{rec['aligned_tr']:.3f} (shuffled {rec['shuffled']:.3f}), aligned-en {rec['aligned_en']:.3f}")
    for name, r in (("raw", raw), ("aligned", aligned)):
        print(f"{name:8s} " + "  ".join(f"{d} {m.upper()} P@1 {r[d][m]['p@1']:.3f} P@5 {r[d][m]['p@5']:.3f}"
                                        for d in ("forward", "backward") for m in ("nn", "csls")))
    assert aligned["forward"]["nn"]["p@1"] > raw["forward"]["nn"]["p@1"]
    assert rec["aligned_tr"] > rec["en_tr"]
    # centering lifts every aligned cosine (shuffled too); the map must also widen the margin of true pairs
    assert rec["aligned_tr"] - rec["shuffled"] > rec["en_tr"] - rec["shuffled_en_tr"]
    assert not rec["collapse"]["collapsed"]

    # the same rows (already in the store): do alignment and the apps task pull the same way?
    grad = run_gradients(Source(pairs_file, "en", label="apps", target="ko"), arch="procrustes", **kwargs)
    assert grad["provenance"]["encoded_now"] == 0
    print(f"gradient cosine (alignment vs apps task): parameters {grad['parameters']['mean']:+.3f} "
          f"± {grad['parameters']['std']:.3f}, representation {grad['representation']['mean']:+.3f} "
          f"± {grad['representation']['std']:.3f}; head accuracy aligned en "
          f"{grad['head_accuracy']['english_aligned']:.3f}, ko {grad['head_accuracy']['target']:.3f}")
    assert grad["map"] == "ProcrustesAligner.to_torch()" and grad["rows"] > 150
    assert grad["parameters"]["alignment_grad_norm"] > 0 and grad["parameters"]["task_grad_norm"] > 0
