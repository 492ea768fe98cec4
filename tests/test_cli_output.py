"""What the CLI prints when its output is not a terminal (a pipe, a file, CI logs): markdown tables whole."""
import json
from dataclasses import asdict

from typer.testing import CliRunner

from embedstore.cli.app import app
from embedstore.study.cells import Cell


def test_report_tables_are_not_wrapped_when_output_is_not_a_terminal(tmp_path, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)  # rich's width for a non-terminal is then 80 columns
    records = []
    for size in (100, 200, 500, 1000, 2000, None):  # one column each: a table wider than 80 columns
        for seed, value in enumerate([0.51, 0.62, 0.73]):
            cell = Cell("ko", "topic", "english", size, None, None, seed, "default")
            records.append({"cell": asdict(cell), "cell_id": cell.id, "status": "ok",
                            "metrics": {"accuracy": value, "macro_f1": value - 0.1},
                            "provenance": {"model_fingerprint": "fp", "store_key": "k", "model": "tiny"}})
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in records))
    r = CliRunner().invoke(app, ["report", str(results), "--out", str(tmp_path / "report")])
    assert r.exit_code == 0, r.output
    rows = [line for line in r.stdout.splitlines() if line.startswith("|")]
    assert rows and max(map(len, rows)) > 80  # the table is wider than the wrap width
    assert all(line.rstrip().endswith("|") for line in rows), r.stdout
