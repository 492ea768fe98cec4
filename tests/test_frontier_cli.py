"""Zero- and few-pair aligners and `embedstore mine` through the real CLI, on the tiny model."""
import csv
import json

import pytest
from typer.testing import CliRunner

from embedstore.cli.app import app
from embedstore.estimators.aligners import load_aligner

runner = CliRunner()


def pair_file(tmp_path, n=80):
    rows = [(f"the cell formula number {i}", f"셀 수식 번호 {i}", str(i % 10)) for i in range(n)]
    path = tmp_path / "pairs.tsv"
    path.write_text("en\tko\tfold\n" + "".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    return path


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_train_aligner_feeds_zero_pair_aligners_unpaired_halves_and_seeded_ones_their_budget(tiny_model_dir, tmp_path):
    data = pair_file(tmp_path)
    common = ["--model", tiny_model_dir, "--store", tmp_path / "s.zarr", "--json"]
    r = invoke("train-aligner", "--pairs", data, "--target-column", "ko", "--arch", "lsar", "--out", tmp_path / "a",
               *common)
    assert r.exit_code == 0, r.output
    sizes = json.loads(r.stdout)["sizes"]
    assert sizes == {"pairs": 0, "source_texts": 40, "target_texts": 40, "available": 80}
    assert load_aligner(tmp_path / "a").diagnostics()["n_source"] == 40
    r = invoke("train-aligner", "--pairs", data, "--target-column", "ko", "--arch", "selflearn_seeded", "--size",
               "20", "--out", tmp_path / "b", *common)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["sizes"] == {"pairs": 20, "source_texts": 50, "target_texts": 50, "available": 80}
    assert load_aligner(tmp_path / "b").seed_pairs == 20


def test_train_aligner_fits_with_the_seed_it_records(tiny_model_dir, tmp_path):
    """`--arch rcsls --seed 3` fitted with random_state=0 and recorded seed 3; the seed named is the seed used."""
    data = pair_file(tmp_path)
    common = ["--model", tiny_model_dir, "--store", tmp_path / "s.zarr", "--json"]
    for arch in ("rcsls", "selflearn"):
        r = invoke("train-aligner", "--pairs", data, "--target-column", "ko", "--arch", arch, "--seed", 3,
                   "--out", tmp_path / arch, *common)
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["seed"] == 3 and load_aligner(tmp_path / arch).seed == 3


def test_mine_writes_a_pair_file_with_margins_atomically(tiny_model_dir, tmp_path):
    data = pair_file(tmp_path)
    common = ["--model", tiny_model_dir, "--store", tmp_path / "s.zarr"]
    out = tmp_path / "mined.tsv"
    r = invoke("mine", data, data, "--source-column", "en", "--target-column", "ko", "--out", out, "--json", *common)
    assert r.exit_code == 0, r.output
    record = json.loads(r.stdout)
    with open(out, encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    assert len(rows) == record["pairs"] > 0 and set(rows[0]) == {"en", "ko", "margin"}
    margins = [float(r["margin"]) for r in rows]
    assert margins == sorted(margins, reverse=True)
    r = invoke("train-aligner", "--pairs", out, "--target-column", "ko", "--out", tmp_path / "al", *common)
    assert r.exit_code == 0, r.output  # the mined file is a pair file
    r = invoke("mine", data, data, "--out", tmp_path / "mined.txt", *common)
    assert r.exit_code == 1 and "must end in .tsv or .jsonl" in r.output
    assert not (tmp_path / "mined.txt").exists()


@pytest.mark.filterwarnings("ignore::embedstore.estimators.aligners.CollapseWarning")  # a tiny model
def test_train_aligner_checks_collapse_on_every_pair_it_did_not_fit(tiny_model_dir, tmp_path):
    """The collapse check ran on a tenth of the fit pairs (50 of 500) and passed FC where `analyze retrieval`
    said collapsed: it now runs on all the file's pairs the aligner never saw, in the head's space too."""
    data = pair_file(tmp_path)
    common = ["--model", tiny_model_dir, "--store", tmp_path / "s.zarr", "--json"]
    r = invoke("train-aligner", "--pairs", data, "--target-column", "ko", "--arch", "fc", "--size", 30,
               "--out", tmp_path / "fc", *common)
    assert r.exit_code == 0, r.output
    held_out = json.loads(r.stdout)["held_out"]
    assert held_out["pairs"] == 50 and set(held_out["p1"]) == {"raw", "aligned", "head_space"}
    assert set(held_out["p1"]["head_space"]) == {"nn", "csls"}
    assert held_out["collapse_head_space"]["identity_p1"] == held_out["p1"]["raw"]["nn"]
    assert held_out["collapse"]["p1"] == held_out["p1"]["aligned"]["nn"]
    r = invoke("train-aligner", "--pairs", data, "--target-column", "ko", "--size", 30, "--check-size", 12,
               "--out", tmp_path / "pr", *common)
    assert r.exit_code == 0, r.output
    held_out = json.loads(r.stdout)["held_out"]
    assert held_out["pairs"] == 12 and "head_space" not in held_out["p1"]  # Procrustes leaves target text alone
    r = invoke("train-aligner", "--pairs", data, "--target-column", "ko", "--out", tmp_path / "all", *common)
    assert r.exit_code == 0, r.output
    assert "no held-out pairs" in json.loads(r.stdout)["held_out"]["note"]
