"""The paper's grid for one language and task, from cached vectors: how long does the whole study take?

    python benchmarks/sweep.py [--dim 384] [--workers 2] [--repeats 1]

Grid (the paper's Table 3 shape, 1 seed, default recipe): 3 baselines (english, translated, translate-test)
+ LangAlign with FC and AE aligners × 4 pair sizes (5k-20k) × 7 task sizes (1k-50k) = 77 cells. Target (issue 27):
<= 3 minutes on 2 cores. Vectors are synthetic but shaped like real ones (d = 384, 8 classes, the target
language a rotation of English plus noise), written straight into a store under a real store key, so the
sweep runs exactly the code a real study runs. The baseline measured in the same run is the same grid with
the aligner cache disabled (every cell refits its aligner), which is what a naive sweep would do; it is only
timed on a sample of cells and extrapolated, because running it whole is what the cache exists to avoid.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from safetensors.numpy import save_file

from embedstore.base.paired_verdict import outcome
from embedstore.study.cells import expand, load_config
from embedstore.study.context import StudyContext
from embedstore.encoding.engine_choice import cpu_name, fp32_peak, vector_extensions
from embedstore.estimators.aligners import load_aligner
from embedstore.encoding.options import EncodeOptions
from embedstore.study.execution import worker_threads
from embedstore.study.experiments import run_cell
from embedstore.data.hashing import text_ids
from embedstore.encoding.models import resolve_model
from embedstore.store import Store
from embedstore.study.sweep import run_sweep

TASK_SIZES = ["1k", "2k", "5k", "10k", "20k", "30k", "50k"]
PAIR_SIZES = ["5k", "10k", "15k", "20k"]
N_TASK, N_TEST, N_PAIRS, N_CLASSES = 50_000, 5_000, 20_000, 8
TARGET_S = 180  # issue 27: the paper's grid for one language and task in <= 3 minutes


def fake_model(root: Path, dim: int) -> Path:
    """A directory resolve_model accepts (config + weights to fingerprint); nothing here is ever run."""
    path = root / "synthetic-encoder"
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": dim, "num_hidden_layers": 12}))
    save_file({"w": np.zeros(4, np.float32)}, str(path / "model.safetensors"))
    return path


def write_data(root: Path, dim: int, model: Path, store: Path) -> None:
    rng = np.random.default_rng(0)
    rotation, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    centers = rng.normal(size=(N_CLASSES, dim)) * 0.6
    n = N_TASK + N_TEST + N_PAIRS
    labels = rng.integers(0, N_CLASSES, n)
    en = centers[labels] + rng.normal(size=(n, dim))
    ko = en @ rotation + 0.3 * rng.normal(size=(n, dim)) + 0.5
    en_texts, ko_texts = [f"en sentence {i}" for i in range(n)], [f"ko sentence {i}" for i in range(n)]
    role = np.array(["train"] * N_TASK + ["test"] * N_TEST + ["pairs"] * N_PAIRS)
    lines = ["en\tko\tlabel\trole"] + [f"{e}\t{k}\t{lab}\t{r}" for e, k, lab, r in zip(en_texts, ko_texts, labels, role)]
    (root / "data.tsv").write_text("\n".join(lines) + "\n")
    key = EncodeOptions(model=str(model)).key(resolve_model(str(model)))
    with Store.open(store).writer() as w:
        kw = w.key(key, dim, {"synthetic": True}, chunk_rows=4096)
        kw.append(text_ids(en_texts + ko_texts), np.concatenate([en, ko]).astype(np.float32))


def write_config(root: Path, model: Path, store: Path, name: str) -> Path:
    src = lambda text, role, extra: (f'{{ file = "{root / "data.tsv"}", text = "{text}", {extra} '  # noqa: E731
                                     f'where = {{ role = "{role}" }} }}')
    cfg = root / f"{name}.toml"
    cfg.write_text(f"""
name = "{name}"
results = "{name}.jsonl"
store = "{store}"
model = "{model}"
[grid]
languages = ["ko"]
tasks = ["synthetic"]
methods = ["english", "translated", "translate-test", "langalign"]
task_sizes = {json.dumps(TASK_SIZES)}
pair_sizes = {json.dumps(PAIR_SIZES)}
aligners = ["fc", "ae"]
seeds = [0]
[tasks.synthetic]
en_train = {src("en", "train", 'label = "label",')}
translated_train = {src("ko", "train", 'label = "label",')}
test = {src("ko", "test", 'label = "label",')}
en_test = {src("en", "test", 'label = "label",')}
pairs = {src("en", "pairs", 'target = "ko",')}
""")
    return cfg


def training_tflop(aligner_dir: Path) -> float:
    """The weight products a saved torch aligner's fit ran (its history's epochs × steps × batch rows, the last
    batch of an epoch counted whole; per row each Linear's forward, weight gradient and, past the first layer,
    input gradient: 2·in·out FLOP each): what the fit cannot do in less than this over the machine's fp32 peak."""
    aligner = load_aligner(aligner_dir)
    history = aligner.history_
    rows = len(history["epochs"]) * history["steps_per_epoch"] * history["recipe"]["batch_size"]
    shapes = [m.weight.shape for m in aligner.module_.modules() if isinstance(m, torch.nn.Linear)]
    per_row = sum(2 * out * inp * (2 if i == 0 else 3) for i, (out, inp) in enumerate(shapes))
    return rows * per_row / 1e12


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1, help="whole-grid runs (each from an empty results file)")
    args = ap.parse_args()
    console = Console()
    console.print(f"CPU: {cpu_name()}; vector extensions: {' '.join(vector_extensions()) or 'none found'}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model, store = fake_model(root, args.dim), root / "store.zarr"
        write_data(root, args.dim, model, store)
        walls, fits = [], []
        for r in range(args.repeats):
            config = load_config(write_config(root, model, store, f"grid{r}"))
            cells = expand(config)
            t0 = time.perf_counter()
            spec = config.encoding.resolve()
            summary = run_sweep(config, partial(run_cell, spec=spec), StudyContext(config, spec.fingerprint),
                                workers=args.workers, progress=True)
            walls.append(time.perf_counter() - t0)
            records = [json.loads(line) for line in config.results.read_text().splitlines()]
            fitted = [rec["provenance"]["sizes"] for rec in records
                      if not rec["provenance"]["sizes"].get("aligner_reused", True)]
            fits = [sizes["aligner_fit_seconds"] for sizes in fitted]
            tflop = sum(training_tflop(config.results.with_suffix(".aligners") / sizes["aligner_id"])
                        for sizes in fitted)
            console.print(f"run {r + 1}: {len(cells)} cells, {len(summary.ok)} ok, {len(summary.errors)} failed, "
                          f"{walls[-1]:.1f} s")
        wall = statistics.median(walls)
        median_fit = statistics.median(fits) if fits else 0.0
        n_aligner_cells = sum(1 for c in cells if c.aligner)
        naive = wall + median_fit * (n_aligner_cells - len(fits)) / args.workers
    console.print(f"[bold]paper grid, 1 language × 1 task, d={args.dim}, {args.workers} workers:[/bold] {len(cells)} cells "
                  f"in {wall:.1f} s (median of {args.repeats}) — target {TARGET_S} s: {outcome(wall, TARGET_S, at_least=False)}")
    console.print(f"aligner fits: {len(fits)} (median {median_fit:.1f} s each) for {n_aligner_cells} aligner cells; "
                  f"refitting per cell would take ~{naive:.0f} s ({naive / wall:.1f}x this run)")
    # the floor the fits alone set: their weight products at the fp32 rate one worker's thread reaches here
    threads = worker_threads(args.workers)
    peak = fp32_peak([(args.dim, args.dim), (args.dim, 1024), (1024, args.dim)], threads)
    floor = tflop * 1e3 / (peak * args.workers)
    console.print(f"aligner training: {tflop:.1f} TFLOP of weight products in {len(fits)} fits; at this machine's "
                  f"measured fp32 peak ({peak:.0f} GFLOP/s a worker, {threads} thread each) they alone need >= "
                  f"{floor:.0f} s of the wall on {args.workers} workers ({floor / TARGET_S:.0%} of the target)")


if __name__ == "__main__":
    main()
