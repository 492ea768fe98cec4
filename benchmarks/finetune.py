"""Why the store exists: a task head fit on cached vectors against one end-to-end epoch over the same rows.

    python benchmarks/finetune.py [--rows 500] [--max-length 128] [--repeats 3] [--threads 2]

Both paths use the same English rows (the bundled LibreOffice help sample, single-app rows, label = app) and
the default e5-small, in one process:
  cached  LinearHead().fit on vectors from `embed` (the encode is done first and not timed: the store pays
          it once for every later experiment); median over --repeats fits, and per epoch (fit / epochs run)
  e2e     one epoch of `tune` with the LM trainable (batch 16, AdamW; the training steps only, from the
          history's train_seconds, without model loading, tokenization or validation). `finetune` runs the
          same loop with a d x d aligner added, which costs nothing next to the LM.
Goal: the cached path >= 100x faster than the end-to-end epoch.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from importlib.resources import files
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from embedstore.encoding.options import EncodeOptions

from embedstore.encoding.encode import embed
from embedstore.data.tasks import Source
from embedstore.text_training.options import TrainOptions
from embedstore.text_training.tune import tune
from embedstore.estimators.heads import LinearHead
from embedstore.encoding.models import DEFAULT_MODEL
from embedstore.data.texts import read_table

GOAL = 100.0


def sample_rows(n: int, out: Path) -> tuple[list[str], list[str], Path]:
    """The first `n` single-app English rows of the bundled sample, also written as a task file for `tune`."""
    table = read_table(Path(str(files("embedstore") / "data" / "libreoffice_help.en-ko.sample.tsv")), ["en", "apps"])
    rows = [i for i, app in enumerate(table["apps"]) if "," not in app][:n]
    texts, labels = [table["en"][i] for i in rows], [table["apps"][i] for i in rows]
    out.write_text("text\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in zip(texts, labels)), encoding="utf-8")
    return texts, labels, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=500)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    console = Console()

    with tempfile.TemporaryDirectory() as tmp:
        texts, labels, task = sample_rows(args.rows, Path(tmp) / "task.tsv")
        options = EncodeOptions(model=DEFAULT_MODEL, max_length=args.max_length, device="cpu")
        t0 = time.perf_counter()
        vectors = embed(texts, store=Path(tmp) / "store.zarr", options=options)
        encode_s = time.perf_counter() - t0

        fits, per_epoch = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            head = LinearHead().fit(vectors, labels)
            fits.append(time.perf_counter() - t0)
            per_epoch.append(fits[-1] / len(head.history_["epochs"]))
            console.print(f"head fit: {fits[-1]:.3f} s, {len(head.history_['epochs'])} epochs")

        result = tune(Source(task, "text", label="label"), Path(tmp) / "tuned", model=DEFAULT_MODEL,
                      options=TrainOptions(epochs=1, max_length=args.max_length, device="cpu"), progress=True)
        e2e_s = result.history["epochs"][1]["train_seconds"]

    fit_s, epoch_s = statistics.median(fits), statistics.median(per_epoch)
    table = Table(title=f"{len(texts)} English rows ({result.provenance['data']['train']['rows']} "
                        f"trained per epoch after the 10% validation split), e5-small, max_length {args.max_length}, "
                        f"{args.threads} threads; encode {encode_s:.1f} s (not timed)")
    for col in ("path", "seconds", "e2e epoch / this", f"goal >= {GOAL:.0f}x"):
        table.add_column(col, justify="left" if col == "path" else "right")
    table.add_row("e2e: one epoch, LM trainable", f"{e2e_s:.2f}", "1x", "")
    for name, seconds in ((f"cached: whole head fit (median of {args.repeats})", fit_s),
                          ("cached: one head epoch", epoch_s)):
        ratio = e2e_s / seconds
        table.add_row(name, f"{seconds:.4f}", f"{ratio:,.0f}x", "PASS" if ratio >= GOAL else "FAIL")
    console.print(table)


if __name__ == "__main__":
    main()
