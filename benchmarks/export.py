"""Predict latency of an ONNX export (onnxruntime) against `embedstore predict` (the torch pipeline) on the same
texts, and whether their predictions agree.

A pipeline (Procrustes aligner on the bundled en-ko sample's folds 0-5, linear head on folds 6-7) is trained into
a temporary store with the model given (default: the offline e5-small), exported with `--format onnx`, and both
serve the Korean texts of folds 8-9: `Pipeline.predict` as `embedstore predict` runs it, on texts its store does
not hold (a fresh store each run, so it encodes them, as for new product traffic), and `OnnxPipeline.predict`.
Both are warmed up first (model loaded, one call), use the same thread count, and are timed as medians over
`--repeats` runs. Target (issue 17): the ONNX predictions equal the pipeline's (PASS/FAIL); the speed ratio is
reported, the issue sets no target for it.

Run: python benchmarks/export.py [--quick] [--model DIR] [--texts 600] [--repeats 3] [--threads 2]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

import embedstore
from embedstore.data.texts import read_table
from embedstore.encoding.models import DEFAULT_MODEL
from embedstore.export.export import export_pipeline
from embedstore.export.onnx_graph import OnnxPipeline
from embedstore.study.demo import sample_path


def median_seconds(run, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--texts", type=int, default=600, help="Korean test texts to predict.")
    parser.add_argument("--pairs", default="all", help="Aligner pairs (15k, 500, all).")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="200 texts, 500 pairs, 1 repeat: checks it runs.")
    args = parser.parse_args()
    if args.quick:
        args.texts, args.pairs, args.repeats = 200, "500", 1
    torch.set_num_threads(args.threads)
    data = sample_path()
    table = read_table(data, ["ko", "fold"])
    texts = [t for t, f in zip(table["ko"], table["fold"]) if f in ("8", "9")][: args.texts]
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        common = {"model": args.model, "store": tmp / "train.zarr"}
        embedstore.train_aligner(data, target_column="ko", arch="procrustes", size=args.pairs,
                                 where={"fold": [0, 1, 2, 3, 4, 5]}, out=tmp / "al", **common)
        embedstore.train_head(data, text_column="en", label_column="apps", where={"fold": [6, 7]},
                              aligner=tmp / "al", out=tmp / "pipe", **common)
        export = export_pipeline(tmp / "pipe", tmp / "onnx", format="onnx")
        served = OnnxPipeline.load(tmp / "onnx", threads=args.threads)
        fresh = iter(range(10**6))

        def torch_predict() -> list[dict]:  # what `embedstore predict` does for texts its store lacks
            store = tmp / f"predict-{next(fresh)}.zarr"
            return embedstore.load_pipeline(tmp / "pipe", store=store, model=args.model).predict_records(
                texts, progress=False)  # timed as the ONNX path is: without a bar

        torch_predict(), served.predict_records(texts[:8])  # warm-up: models loaded, first-call costs paid
        torch_s, torch_out = median_seconds(torch_predict, args.repeats)
        onnx_s, onnx_out = median_seconds(lambda: served.predict_records(texts), args.repeats)
    same = [a["label"] for a in torch_out] == [b["label"] for b in onnx_out]
    worst = max(abs(a["probabilities"][k] - b["probabilities"][k]) for a, b in zip(torch_out, onnx_out)
                for k in a["probabilities"])
    print(f"model {args.model}, {len(texts)} Korean texts, {args.threads} threads, median of {args.repeats}; "
          f"export check: vectors within {export['check']['max_vector_difference']:.1e} on probe texts")
    print(f"embedstore predict (torch, new texts): {torch_s:.2f} s ({len(texts) / torch_s:.1f} texts/s)")
    print(f"ONNX Runtime predict:                  {onnx_s:.2f} s ({len(texts) / onnx_s:.1f} texts/s), "
          f"{torch_s / onnx_s:.2f}x the torch pipeline's speed")
    print(f"predictions equal: {same} (largest probability difference {worst:.1e}) -> {'PASS' if same else 'FAIL'}")


if __name__ == "__main__":
    main()
