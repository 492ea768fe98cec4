"""Distributed encode throughput: 1 rank against 2 ranks under torchrun, one CPU thread each.

    python benchmarks/distributed.py [--texts 1500] [--repeats 3] [--model DIR] [--batch-size 32] [--chunk-rows 64]

Both runs are the command users run, `torchrun --standalone --nproc-per-node R -m embedstore encode ...`,
on the same texts (the bundled LibreOffice help sample, English then Korean) into fresh stores, with
OMP_NUM_THREADS=1 per rank so that 2 ranks use 2 cores against 1 rank's one. With one rank torchrun sets
WORLD_SIZE=1, so that run is the plain single-process encode: the baseline a user would otherwise have.
Throughput counts the encoding phase (the report's seconds minus model loading, which every rank does once
in parallel and which does not grow with the corpus); the wall time of each launch is printed too.
Runs alternate (1, 2, 1, 2, ...) so that a change in machine load hits both alike; medians over --repeats.
Target: 2 ranks >= 1.7x the texts/s of 1 rank. Other processes on the machine share its cores and can
lower the measured speedup; the load average before each run is printed.

Small corpora need small --chunk-rows: ranks get whole chunks, and with few chunks per rank (the first ones
holding the longest texts) the work cannot be split evenly.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.resources import files
from pathlib import Path
from typing import NamedTuple

import numpy as np
from rich.console import Console
from rich.table import Table

from embedstore.encoding.models import DEFAULT_MODEL, resolve_model
from embedstore.store import Store
from embedstore.data.texts import read_texts

TARGET = 1.7


def sample_texts(n: int) -> list[str]:
    path = Path(str(files("embedstore") / "data" / "libreoffice_help.en-ko.sample.tsv"))
    return (read_texts(path, "en") + read_texts(path, "ko"))[:n]


class Launch(NamedTuple):
    """One torchrun launch: the encoding phase is timed apart from model loading (see the module docstring)."""

    encoded: int
    encode_s: float
    load_s: float
    wall_s: float

    @property
    def rate(self) -> float:
        return self.encoded / self.encode_s


def run(ranks: int, model: Path, data: Path, store: Path, args: argparse.Namespace) -> Launch:
    cmd = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc-per-node", str(ranks),
           "-m", "embedstore", "encode", str(data), "--model", str(model), "--store", str(store),
           "--device", "cpu", "--batch-size", str(args.batch_size), "--chunk-rows", str(args.chunk_rows), "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode:
        sys.exit(f"{ranks}-rank run failed:\n{done.stderr[-3000:]}")
    report = json.loads(done.stdout)
    return Launch(report["encoded"], report["seconds"] - report["load_seconds"], report["load_seconds"], wall)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--texts", type=int, default=1500)
    ap.add_argument("--repeats", type=int, default=3, help="runs per rank count (medians are reported)")
    ap.add_argument("--model", default=DEFAULT_MODEL, help="registry name or local model directory")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--chunk-rows", type=int, default=64)
    args = ap.parse_args()
    console = Console()
    spec = resolve_model(args.model)  # built once here, not concurrently by every rank
    texts = sample_texts(args.texts)

    runs: dict[int, list[Launch]] = {1: [], 2: []}
    diff = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "texts.txt"
        data.write_text("\n".join(texts) + "\n")
        for r in range(args.repeats):
            stores = {}
            for ranks in (1, 2):
                console.print(f"run {r + 1}/{args.repeats}, {ranks} rank(s): load average {os.getloadavg()[0]:.2f}")
                stores[ranks] = Path(tmp) / f"run{r}-r{ranks}.zarr"
                runs[ranks].append(run(ranks, spec.path, data, stores[ranks], args))
            one, two = Store.open(stores[1]), Store.open(stores[2])
            diff = max([diff] + [float(np.abs(one.get(k, texts) - two.get(k, texts)).max()) for k in one.keys()])

    def median(ranks: int, field: str) -> float:
        return statistics.median(getattr(launch, field) for launch in runs[ranks])

    rate = {ranks: median(ranks, "rate") for ranks in runs}
    table = Table(title=f"{runs[1][0].encoded} texts, {spec.name}, batch {args.batch_size}, chunk rows {args.chunk_rows}, "
                        f"{os.cpu_count()} CPUs, 1 thread per rank, median of {args.repeats}")
    for col in ("ranks", "encode s", "texts/s", "model load s", "launch wall s"):
        table.add_column(col, justify="right")
    for ranks in runs:
        table.add_row(str(ranks), f"{median(ranks, 'encode_s'):.1f}", f"{rate[ranks]:.1f}",
                      f"{median(ranks, 'load_s'):.1f}", f"{median(ranks, 'wall_s'):.1f}")
    console.print(table)
    speedup = rate[2] / rate[1]
    console.print(f"speedup 2 ranks vs 1 (median texts/s): {speedup:.2f}x, target >= {TARGET}x: "
                  f"{'PASS' if speedup >= TARGET else 'FAIL'}")
    console.print(f"max |difference| between the two stores' vectors: {diff:.1e}")


if __name__ == "__main__":
    main()
