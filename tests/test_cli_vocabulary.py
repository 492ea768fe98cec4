"""One option vocabulary (issue 29.4): every command that runs an encoder takes `--device` and `--batch-size`
(and they reach its encodes), every command prints its result as JSON with `--json`, and `--device` says the same
thing everywhere."""
from __future__ import annotations

import typer
from typer.testing import CliRunner

from embedstore.cli.app import app

#: Commands that take a model but encode no text, and why.
ENCODES_NOTHING = {
    "models pull": "builds or downloads the model; runs it on nothing",
    "export": "runs the model on its probe texts only to check the export, on the CPU the exports are built for",
}


def commands() -> dict[str, dict[str, object]]:
    """Every leaf command by its full name → its options by each spelling."""
    group = typer.main.get_command(app)
    ctx = group.make_context("embedstore", [], resilient_parsing=True)
    found: dict[str, dict[str, object]] = {}

    def walk(command, path: list[str]) -> None:
        if hasattr(command, "list_commands"):
            for name in command.list_commands(ctx):
                walk(command.get_command(ctx, name), [*path, name])
            return
        found[" ".join(path)] = {opt: p for p in command.params if p.param_type_name == "option" for opt in p.opts}

    for name in group.list_commands(ctx):
        walk(group.get_command(ctx, name), [name])
    return found


def test_every_command_that_encodes_takes_device_and_batch_size_and_every_command_prints_json():
    found = commands()
    assert len(found) > 20 and set(ENCODES_NOTHING) <= set(found)
    encoding = [name for name, options in found.items() if "--model" in options and name not in ENCODES_NOTHING]
    assert {"encode", "train-aligner", "train-head", "evaluate", "predict", "mine", "demo", "analyze cosine"} <= \
        set(encoding)
    # a sweep's model is its config's: it takes no --model, and encodes all the same
    lacking = {name: [o for o in ("--device", "--batch-size") if o not in found[name]] for name in [*encoding, "sweep"]}
    assert not {n: o for n, o in lacking.items() if o}, lacking
    assert not [name for name, options in found.items() if "--json" not in options]
    helps = {name: " ".join(options["--device"].help.split()) for name, options in found.items() if "--device" in options}
    assert len(set(helps.values())) == 1, helps


def test_a_commands_device_and_batch_size_reach_its_encodes(tiny_model_dir, tmp_path, monkeypatch):
    from embedstore.encoding import encode as encode_module

    seen = []
    real = encode_module.encode_source
    monkeypatch.setattr(encode_module, "encode_source",
                        lambda source, **kw: seen.append(encode_module.compute_in_force(kw.get("compute")))
                        or real(source, **kw))
    pairs = tmp_path / "p.tsv"
    pairs.write_text("en\tko\n" + "".join(f"word {i}\t단어 {i}\n" for i in range(12)))
    r = CliRunner().invoke(app, ["train-aligner", "--pairs", str(pairs), "--target-column", "ko", "--out",
                                 str(tmp_path / "al"), "--model", str(tiny_model_dir), "--store",
                                 str(tmp_path / "s.zarr"), "--device", "cpu", "--batch-size", "5", "--json"])
    assert r.exit_code == 0, r.output
    assert seen and {(c.device, c.batch_size) for c in seen} == {("cpu", 5)}


def test_json_output_is_whole_json_on_stdout(tmp_path, monkeypatch):
    """Two of the commands that gained --json: what they print parses, and says what the human lines said."""
    import json
    from dataclasses import asdict

    from embedstore.study.cells import Cell

    monkeypatch.setenv("EMBEDSTORE_CACHE", str(tmp_path / "cache"))
    r = CliRunner().invoke(app, ["cache", "prune", "--dry-run", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"dry_run": True, "removed": [], "freed_bytes": 0}

    results = tmp_path / "results.jsonl"
    records = [{"cell": asdict(cell), "cell_id": cell.id, "status": "ok", "metrics": {"accuracy": acc},
                "provenance": {"model": "tiny"}}
               for cell, acc in ((Cell("ko", "topic", "english", 100, None, None, seed), 0.5 + seed / 10)
                                 for seed in range(2))]
    results.write_text("".join(json.dumps(r) + "\n" for r in records))
    r = CliRunner().invoke(app, ["report", str(results), "--out", str(tmp_path / "report"), "--json"])
    assert r.exit_code == 0, r.output
    printed = json.loads(r.stdout)
    assert printed["table_md"] == str(tmp_path / "report" / "table.md") and printed["plots"]
    assert "| english" in printed["markdown"]
