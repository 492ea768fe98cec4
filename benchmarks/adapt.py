"""Wall time of each encoder adaptation (`embedstore adapt` lora, simcse, align) per 1k training texts, against
one epoch of a full fine-tune (`tune`, every LM weight trainable) measured in the same run.

    python benchmarks/adapt.py [--rows 200] [--max-length 128] [--threads 2] [--quick] [--model DIR]

All on the default e5-small and the bundled LibreOffice help sample (single-app rows): LoRA on the English rows
and their labels, SimCSE on the English texts, align on the (English, Korean) pairs. Timed: the training steps
of one epoch (the history's train_seconds: no model loading, tokenization or validation), divided by the rows
trained and scaled to 1k. Every method runs at the same max length and batch 16 so the rows cost the same; the
methods' own learning rates do not change the time. SimCSE and align run two forward passes per row (two views,
or both sides of a pair), LoRA one, with gradients for the adapters alone.

The issue sets no speed target; the ratio to the full fine-tune is the figure to read (PASS/FAIL is not
printed). --quick: 48 rows, max length 64, to check that the benchmark runs.
"""
from __future__ import annotations

import argparse
import tempfile
from importlib.resources import files
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from embedstore.data.texts import read_table
from embedstore.encoding.models import DEFAULT_MODEL
from embedstore.text_training.adapt import AdaptRecipe, adapt, method_options
from embedstore.data.tasks import Source
from embedstore.text_training.options import TrainOptions
from embedstore.text_training.tune import tune


def sample_rows(n: int, out: Path) -> Path:
    """The first `n` single-app rows of the bundled sample as one TSV: en, ko, label."""
    table = read_table(Path(str(files("embedstore") / "data" / "libreoffice_help.en-ko.sample.tsv")),
                       ["en", "ko", "apps"])
    rows = [i for i, app in enumerate(table["apps"]) if "," not in app][:n]
    out.write_text("en\tko\tlabel\n" + "".join(f"{table['en'][i]}\t{table['ko'][i]}\t{table['apps'][i]}\n"
                                                for i in rows), encoding="utf-8")
    return out


def per_1k(result) -> float:
    seconds = result.history["epochs"][1]["train_seconds"]
    return 1000 * seconds / result.provenance["data"]["train"]["rows"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="48 rows, max length 64: checks that it runs")
    ap.add_argument("--model", default=DEFAULT_MODEL, help="model name or directory (default: e5-small)")
    args = ap.parse_args()
    rows, max_length = (48, 64) if args.quick else (args.rows, args.max_length)
    torch.set_num_threads(args.threads)
    console = Console()
    common = {"epochs": 1, "batch_size": 16, "max_length": max_length, "device": "cpu"}

    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = sample_rows(rows, Path(tmp) / "rows.tsv")
        full = tune(Source(data, "en", label="label"), Path(tmp) / "tune", model=args.model,
                    options=TrainOptions(**common), progress=True)
        timings["full fine-tune (tune)"] = per_1k(full)
        sources = {"lora": Source(data, "en", label="label"), "simcse": Source(data, "en"),
                   "align": Source(data, "en", target="ko")}
        for method, source in sources.items():
            result = adapt(AdaptRecipe(method), source, Path(tmp) / method, model=args.model,
                           options=method_options(method, **common), progress=True)
            timings[f"adapt {method}"] = per_1k(result)

    baseline = timings["full fine-tune (tune)"]
    table = Table(title=f"{rows} rows of the bundled sample, {args.model}, batch 16, max length {max_length}, "
                        f"{args.threads} threads: training steps of one epoch per 1k texts")
    for col in ("method", "s / 1k texts", "vs full fine-tune"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for name, seconds in timings.items():
        table.add_row(name, f"{seconds:.1f}", f"{seconds / baseline:.2f}x")
    console.print(table)


if __name__ == "__main__":
    main()
