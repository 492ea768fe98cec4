"""How long fitting takes, and why the `default` recipe replaced the paper's for everyday runs.

Two measurements on synthetic unit-norm "sentence embeddings" (no encoder or data files needed):

1. recipe comparison: FCAligner under `paper` vs `default` on one data set, printing validation MSE and seconds;
2. fit times: every aligner on `--pairs` pairs and both heads on `--vectors` vectors, for each `--dims`, as medians
   over `--repeats` runs (`--torch-repeats` for the trained aligners, which are slow), with PASS/FAIL against
   the targets: closed-form aligners <= 1 s, FCAligner (default recipe) <= 60 s;
3. zero-pair fits and retrieval (issue 14): every aligner that needs no pairs fitted on `--mono` unpaired vectors
   per side (target <= 30 s each), and P@1 NN + CSLS retrieval and margin mining over `--mono` × `--mono`
   (target <= 5 s), next to the one similarity matmul they cannot avoid (the same run's baseline).

Run: python benchmarks/train.py [--skip-compare] [--skip-fit] [--skip-unsupervised] [--quick] [--dims 384 768] ...
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from embedstore.analysis.mining import mine
from embedstore.base.retrieval import retrieval, unit_rows
from embedstore.estimators.aligners import ALIGNERS, TorchAligner, make_aligner
from embedstore.estimators.aligners.inputs import is_seeded
from embedstore.estimators.heads import HEADS, make_head
from embedstore.estimators.training import RECIPES

TARGET_SECONDS = {"linear": 1.0, "procrustes": 1.0, "meanshift": 1.0, "fc": 60.0}
#: Issue 14: any zero-pair fit on 10k vectors per side, and retrieval over 10k × 10k.
UNSUPERVISED_FIT_SECONDS = 30.0
RETRIEVAL_SECONDS = 5.0


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def synthetic_pairs(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm pairs shaped like a multilingual encoder's output.

    A shared component makes vectors anisotropic (mean cosine ~0.7, as for e5); content variance decays over
    directions (variance of the i-th ~ 1/i, as sentence-embedding spectra do) instead of being isotropic, which
    would be unrealistically hard for the FC aligner's 256-wide bottleneck; each language adds its own offset,
    and the target side distorts the content linearly and adds noise (pairs end up with cosine ~0.9).
    """
    rng = np.random.default_rng(seed)

    def gauss(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape) / np.sqrt(d)  # rows of norm ~1

    common, lang_src, lang_tgt = 1.5 * gauss(d), 0.5 * gauss(d), 0.5 * gauss(d)
    distortion = 0.5 * gauss(d, d)
    spectrum = 1 / np.sqrt(np.arange(1, d + 1))
    basis, _ = np.linalg.qr(rng.standard_normal((d, d)))
    content = (gauss(n, d) * spectrum * np.sqrt(d / np.sum(spectrum**2))) @ basis
    src = _unit(common + lang_src + content)
    tgt = _unit(common + lang_tgt + content + content @ distortion + 0.1 * gauss(n, d))
    return src.astype(np.float32), tgt.astype(np.float32)


def synthetic_task(n: int, d: int, n_classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm vectors labelled by a random linear teacher (a learnable, not trivially separable task)."""
    rng = np.random.default_rng(seed)
    x = _unit(rng.standard_normal((n, d)) + 2.0 * rng.standard_normal(d)).astype(np.float32)
    logits = (x - x.mean(axis=0)) @ rng.standard_normal((d, n_classes))
    logits *= 3.0 / logits.std()  # ~82% of labels follow the teacher (measured), the rest is Gumbel noise
    return x, np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)


def compare_recipes(args: argparse.Namespace, console: Console) -> None:
    x, y = synthetic_pairs(args.compare_pairs, args.compare_dim, args.seed)
    table = Table(title=f"FCAligner: paper vs default recipe ({args.compare_pairs:,} pairs, d={args.compare_dim}, "
                        f"{torch.get_num_threads()} threads)")
    for column in ("recipe", "lr", "batch", "val MSE EN→TR", "identity MSE", "val loss (objective)",
                   "P@1 (identity)", "epochs (best)", "stopped early", "seconds"):
        table.add_column(column, justify="right")
    paper = RECIPES["paper"]["aligner"]
    recipes = {"paper": replace(paper, max_epochs=min(paper.max_epochs, args.paper_max_epochs)),
               "default": RECIPES["default"]["aligner"]}
    for name, recipe in recipes.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a collapsed fit is a result here, shown in the table
            started = time.perf_counter()
            aligner = make_aligner("fc", recipe=recipe, seed=args.seed).fit(x, y)
            seconds = time.perf_counter() - started
        history = aligner.history_
        capped = "*" if name == "paper" and not history["stopped_early"] and recipe.max_epochs < paper.max_epochs else ""
        table.add_row(name, f"{recipe.lr:g}", str(recipe.batch_size), f"{aligner.val_mse_:.3g}",
                      f"{aligner.identity_val_mse_:.3g}", f"{history['best_val_loss']:.3g}",
                      f"{aligner.val_retrieval_p1_:.3f} ({aligner.identity_retrieval_p1_:.3f})",
                      f"{len(history['epochs'])}{capped} ({history['best_epoch']})",
                      str(history["stopped_early"]), f"{seconds:.1f}")
    console.print(table)
    console.print(f"* paper recipe capped at --paper-max-epochs {args.paper_max_epochs} (recipe allows "
                  f"{paper.max_epochs}) to bound the run")


def _median_seconds(fit: Callable[[], object], repeats: int) -> tuple[float, object]:
    times, fitted = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        fitted = fit()
        times.append(time.perf_counter() - started)
    return statistics.median(times), fitted


def fit_times(args: argparse.Namespace, console: Console) -> None:
    table = Table(title=f"fit seconds: aligners on {args.pairs:,} pairs, heads on {args.vectors:,} vectors, "
                        f"{torch.get_num_threads()} threads, default recipe")
    table.caption = (f"median of {args.repeats} runs; fc/ae: {args.torch_repeats} run(s) each, as one fit takes "
                     "minutes on CPU")
    for column in ("d", "estimator", "runs", "median s", "target", "result", "notes"):
        table.add_column(column, justify="right")
    for d in args.dims:
        x, y = synthetic_pairs(args.pairs, d, args.seed)
        for arch in args.aligners:
            runs = args.torch_repeats if issubclass(ALIGNERS[arch], TorchAligner) else args.repeats
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                seconds, aligner = _median_seconds(lambda a=arch, x=x, y=y: make_aligner(a).fit(x, y), runs)
            notes = ""
            if isinstance(aligner, TorchAligner):
                h = aligner.history_
                notes = (f"{len(h['epochs'])} epochs, val MSE {aligner.val_mse_:.3g} (identity "
                         f"{aligner.identity_val_mse_:.3g}), P@1 {aligner.val_retrieval_p1_:.2f}"
                         f"{', COLLAPSED' if aligner.collapsed_ else ''}")
            target = TARGET_SECONDS.get(arch)
            verdict = "" if target is None else ("PASS" if seconds <= target else "FAIL")
            table.add_row(str(d), arch, str(runs), f"{seconds:.2f}", "" if target is None else f"<= {target:g}",
                          verdict, notes)
        xs, labels = synthetic_task(args.vectors, d, seed=args.seed)
        for kind in args.heads:
            seconds, head = _median_seconds(lambda k=kind, x=xs, y=labels: make_head(k).fit(x, y), args.repeats)
            h = head.history_
            table.add_row(str(d), f"{kind} head", str(args.repeats), f"{seconds:.2f}", "", "",
                          f"{len(h['epochs'])} epochs, train accuracy {head.score(xs, labels):.3f} (teacher ~0.82)")
        console.print(table)  # reprinted after each dimension so a long run shows progress


def unsupervised_times(args: argparse.Namespace, console: Console) -> None:
    """Zero-pair fits on unrelated halves (as the sweep feeds them) and retrieval over n × n held-out pairs."""
    n, d = args.mono, args.dims[0]
    x, y = synthetic_pairs(2 * n, d, args.seed)
    src, tgt = x[:n], y[n:]  # no row of one side is the translation of a row of the other
    table = Table(title=f"zero-pair fits on {n:,} unpaired vectors per side and retrieval over {n:,} × {n:,}, d={d}, "
                        f"{torch.get_num_threads()} threads")
    for column in ("step", "runs", "median s", "vs one matmul", "target", "result", "notes"):
        table.add_column(column, justify="right")
    q, k = unit_rows(x[:n]), unit_rows(y[:n])
    matmul, _ = _median_seconds(lambda: q @ k.T, args.repeats)
    table.add_row("baseline: one n × n similarity matmul", str(args.repeats), f"{matmul:.2f}", "1.00x", "", "", "")

    def row(step: str, seconds: float, target: float, notes: str) -> None:
        table.add_row(step, str(args.repeats), f"{seconds:.2f}", f"{seconds / matmul:.1f}x", f"<= {target:g}",
                      "PASS" if seconds <= target else "FAIL", notes)

    for arch, cls in ALIGNERS.items():
        if cls.paired or cls.trains or is_seeded(cls):  # a seeded aligner needs its pairs: not zero-pair
            continue
        seconds, aligner = _median_seconds(lambda a=arch: make_aligner(a).fit(src, tgt), args.repeats)
        p1 = retrieval(aligner.transform(x[:n]), y[:n], ks=(1,))["forward"]
        row(f"fit {arch}", seconds, UNSUPERVISED_FIT_SECONDS,
            f"held-out P@1 NN {p1['nn']['p@1']:.3f}, CSLS {p1['csls']['p@1']:.3f}")
    seconds, result = _median_seconds(lambda: retrieval(x[:n], y[:n], ks=(1,)), args.repeats)
    row("retrieval P@1 NN + CSLS, both ways", seconds, RETRIEVAL_SECONDS,
        f"forward P@1 NN {result['forward']['nn']['p@1']:.3f}")
    seconds, mined = _median_seconds(lambda: mine(x[:n], y[:n]), args.repeats)
    row("mine (ratio margin, k=4, both ways)", seconds, RETRIEVAL_SECONDS,
        f"{len(mined.source):,} mutual pairs, {np.mean(mined.source == mined.target):.3f} correct")
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[384, 768])
    parser.add_argument("--pairs", type=int, default=15_000, help="aligner training pairs")
    parser.add_argument("--vectors", type=int, default=20_000, help="head training vectors")
    parser.add_argument("--repeats", type=int, default=3, help="runs per closed-form aligner and head (median)")
    parser.add_argument("--torch-repeats", type=int, default=1, help="runs per trained aligner (fc, ae)")
    parser.add_argument("--aligners", nargs="*", choices=list(ALIGNERS), default=list(ALIGNERS))
    parser.add_argument("--heads", nargs="*", choices=list(HEADS), default=list(HEADS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compare-pairs", type=int, default=4_000)
    parser.add_argument("--compare-dim", type=int, default=128)
    parser.add_argument("--paper-max-epochs", type=int, default=100,
                        help="cap on the paper recipe's epochs in the comparison (lr 1e-5 converges slowly)")
    parser.add_argument("--skip-compare", action="store_true")
    parser.add_argument("--skip-fit", action="store_true")
    parser.add_argument("--skip-unsupervised", action="store_true")
    parser.add_argument("--mono", type=int, default=10_000, help="vectors per side for zero-pair fits and retrieval")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes that check the benchmark runs (its PASS/FAIL then mean little)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.dims, args.pairs, args.vectors, args.mono, args.repeats = [args.dims[0]], 2_000, 2_000, 2_000, 1
        args.compare_pairs, args.paper_max_epochs = 1_000, 3
    torch.set_num_threads(args.threads)
    console = Console(width=200)  # wide tables stay readable when output is piped to a file
    if not args.skip_compare:
        compare_recipes(args, console)
    if not args.skip_fit:
        fit_times(args, console)
    if not args.skip_unsupervised:
        unsupervised_times(args, console)


if __name__ == "__main__":
    main()
