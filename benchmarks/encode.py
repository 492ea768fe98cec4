"""Encode throughput against the bare forward pass, a naive input-order loop, and a re-run.

    python benchmarks/encode.py [--texts 2000] [--repeats 3] [--threads 2]

All three paths run the same model (the default e5-small) over the same real sentences (the bundled
LibreOffice help sample) in the same process, so the ratios are comparable:
  bare   the model's forward pass over pre-tokenized, length-sorted, pre-padded batches (the limit)
  naive  tokenize + pad + forward + mean-pool, batches in input order
  encode embedstore's encode into a fresh store (tokenize, sort, forward, pool, write, commit)
  rerun  encode again into the finished store (everything present)
Targets: encode >= 0.95x bare; rerun <= 2% of encode. The model is loaded once before timing (load time
is printed separately), because throughput is about the texts, not the one-time load.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from importlib.resources import files
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from embedstore.encoding.options import EncodeOptions

from embedstore.encoding.encode import encode
from embedstore.encoding.encoder import pool
from embedstore.encoding.models import DEFAULT_MODEL, load_model, resolve_model
from embedstore.data.texts import read_texts

BATCH = 32


def sample_texts(n: int) -> list[str]:
    path = files("embedstore") / "data" / "libreoffice_help.en-ko.sample.tsv"
    texts = read_texts(Path(str(path)), "en") + read_texts(Path(str(path)), "ko")
    return texts[:n]


def bare_forward(model, batches: list[dict]) -> float:
    t0 = time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            model(**batch)
    return time.perf_counter() - t0


def naive_loop(model, tokenizer, texts: list[str]) -> float:
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(texts), BATCH):
            enc = tokenizer(texts[i:i + BATCH], padding=True, truncation=True, max_length=512, return_tensors="pt")
            pool(model(**enc).last_hidden_state, enc["attention_mask"], "mean")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--texts", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    console = Console()

    spec = resolve_model(DEFAULT_MODEL)
    t0 = time.perf_counter()
    model, tokenizer = load_model(spec, torch.device("cpu"))
    load_s = time.perf_counter() - t0
    texts = [spec.prefix + t for t in sample_texts(args.texts)]
    raw = sample_texts(args.texts)
    enc = tokenizer(texts, truncation=True, max_length=512)
    lengths = np.array([len(x) for x in enc["input_ids"]])
    tokens = int(lengths.sum())
    order = np.argsort(-lengths, kind="stable")
    batches = [tokenizer.pad({k: [enc[k][i] for i in order[j:j + BATCH]] for k in enc}, return_tensors="pt")
               for j in range(0, len(order), BATCH)]

    options = EncodeOptions(batch_size=BATCH, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        encode(raw[:64], store=Path(tmp) / "warm.zarr", options=options)  # loads and caches the model once
        times: dict[str, list[float]] = {"bare": [], "naive": [], "encode": [], "rerun": []}
        for r in range(args.repeats):
            times["bare"].append(bare_forward(model, batches))
            times["naive"].append(naive_loop(model, tokenizer, texts))
            store = Path(tmp) / f"run{r}.zarr"
            times["encode"].append(encode(raw, store=store, options=options).seconds)
            times["rerun"].append(encode(raw, store=store, options=options).seconds)
            console.print(f"run {r + 1}/{args.repeats}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()))

    med = {k: statistics.median(v) for k, v in times.items()}
    table = Table(title=f"{len(raw)} texts, {tokens:,} tokens, e5-small, {args.threads} threads, "
                        f"median of {args.repeats} (model load {load_s:.2f}s, not timed)")
    for col in ("path", "seconds", "texts/s", "tokens/s", "vs bare", "target"):
        table.add_column(col, justify="left" if col in ("path", "target") else "right")
    for name in ("bare", "naive", "encode"):
        ratio = med["bare"] / med[name]
        target = ""
        if name == "encode":
            target = ("PASS" if ratio >= 0.95 else "FAIL") + " (>= 0.95x)"
        table.add_row(name, f"{med[name]:.2f}", f"{len(raw) / med[name]:.1f}", f"{tokens / med[name]:,.0f}",
                      f"{ratio:.3f}x", target)
    rerun_share = med["rerun"] / med["encode"]
    table.add_row("rerun", f"{med['rerun']:.3f}", "", "", f"{100 * rerun_share:.2f}% of encode",
                  ("PASS" if rerun_share <= 0.02 else "FAIL") + " (<= 2%)")
    console.print(table)


if __name__ == "__main__":
    main()
