"""Steps 2 and 3 on files: `train-aligner`, `train-head`, `evaluate`, `predict`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from embedstore.api import ALIGNERS, DEFAULT_ALIGNER, DEFAULT_HEAD, DEFAULT_RECIPE, NORMALIZATIONS, RECIPES, \
    ConfigError, EncodeOptions, head_kinds

from .common import PIPELINE_MODEL, STORE, WHERE, compute_options, console, encoding_options, print_json, user_errors

_RECIPE = typer.Option(DEFAULT_RECIPE, help=" | ".join(RECIPES) + ": the optimisation settings of trained estimators.")
SINGLE_LABEL = typer.Option(False, "--single-label", help="Drop rows whose label holds a comma (multi-label rows), "
                            "as a sweep task's single_label does.")


@user_errors
@encoding_options()
@compute_options()
def train_aligner(
    pairs: Path = typer.Option(..., "--pairs", help="Parallel file (TSV/CSV/JSONL/Parquet/Arrow or a datasets directory) with source and target columns."),
    source_column: str = typer.Option("en", help="English (source) column."),
    target_column: str = typer.Option(..., help="Translation (target) column, e.g. ko."),
    arch: str = typer.Option(DEFAULT_ALIGNER, help=" | ".join(ALIGNERS) + "."),
    size: str = typer.Option("all", help="Pairs to use: 15k, 5000, all."),
    reverse: bool = typer.Option(False, "--reverse", help="Map target-language vectors into English space."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory for the aligner."),
    where: list[str] = WHERE, seed: int = typer.Option(0), recipe: str = _RECIPE,
    check_size: str = typer.Option("all", help="Pairs of the file the aligner is not fitted on that retrieval and "
                                   "the collapse check run on: all, or a number (seeded sample)."),
    store: Optional[str] = STORE, as_json: bool = typer.Option(False, "--json"), *, encoding: EncodeOptions,
) -> None:
    """Step 2: fit an aligner on parallel pairs."""
    from embedstore.api import train_aligner as run

    record = run(pairs, target_column=target_column, source_column=source_column, arch=arch, out=out, size=size,
                 reverse=reverse, where=where, seed=seed, recipe=recipe, store=store, encoding=encoding,
                 progress=not as_json, check_size=check_size)
    if as_json:
        return print_json(record)
    diag = record["diagnostics"]
    sizes = record["sizes"]
    unpaired = (f" (+ unpaired texts: {sizes['source_texts'] - sizes['pairs']:,} source, "
                f"{sizes['target_texts'] - sizes['pairs']:,} target)") if sizes["source_texts"] != sizes["pairs"] else ""
    console.print(f"{arch}{' (reverse)' if reverse else ''} aligner on {sizes['pairs']:,} pairs{unpaired} "
                  f"in {record['seconds']:.1f} s → {out}")
    if diag:
        console.print("  " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in diag.items()))
    held_out = record["held_out"]
    checks = {k: held_out[k] for k in ("collapse", "collapse_head_space") if k in held_out}
    if checks:
        p1 = held_out["p1"]
        spaces = ", ".join(f"{space.replace('_', ' ')} {p1[space]['nn']:.3f} / {p1[space]['csls']:.3f}" for space in p1)
        console.print(f"  on {held_out['pairs']:,} held-out pairs, P@1 (NN / CSLS): {spaces}", highlight=False)
    else:
        console.print(f"  {held_out['note']}", highlight=False)
    if any(check["collapsed"] for check in checks.values()) or (not checks and diag.get("collapsed")):
        console.print("[red]warning:[/red] the aligner collapsed (outputs near the target mean, or retrieval far "
                      "below the raw vectors'), even if cosine looks fine: train longer or use procrustes")


@user_errors
@encoding_options()
@compute_options()
def train_head(
    train: Path = typer.Option(..., "--train", help="English task data with text and label columns."),
    text_column: str = typer.Option("text"), label_column: str = typer.Option("label"),
    size: str = typer.Option("all", help="Training rows: 20k, 1000, all."),
    aligner: Optional[Path] = typer.Option(None, "--aligner", help="An aligner directory from train-aligner."),
    share: bool = typer.Option(False, "--share", help="Allow task rows that were aligner pairs (data-share ablation)."),
    head: str = typer.Option(DEFAULT_HEAD, help=" | ".join(head_kinds()) + " (e.g. sklearn:svm.LinearSVC)."),
    normalize: Optional[str] = typer.Option(None, help=" | ".join(NORMALIZATIONS) + ": how the head prepares "
                                            "vectors (default: the head's own; logistic: standard)."),
    c: Optional[float] = typer.Option(None, "--C", help="logistic: inverse regularisation strength (default: "
                                      "chosen by cross-validation on the training rows)."),
    hidden: Optional[int] = typer.Option(None, "--hidden", help="mlp: hidden width (default: the vector dim)."),
    param: list[str] = typer.Option([], "--param", help="Another head parameter NAME=JSON (repeatable), e.g. "
                                    "max_iter=2000; for an sklearn: head, params={\"C\": 0.5}."),
    out: Path = typer.Option(..., "--out", "-o", help="Output pipeline directory."),
    where: list[str] = WHERE, single_label: bool = SINGLE_LABEL, seed: int = typer.Option(0), recipe: str = _RECIPE,
    store: Optional[str] = STORE, as_json: bool = typer.Option(False, "--json"), *, encoding: EncodeOptions,
) -> None:
    """Step 3: train a task head (behind the aligner when given) → a pipeline directory."""
    from embedstore.api import train_head as run

    record = run(train, out=out, text_column=text_column, label_column=label_column, size=size, aligner=aligner,
                 share=share, head=head, where=where, seed=seed, recipe=recipe, store=store, encoding=encoding,
                 progress=not as_json, head_params=_head_params(param, normalize=normalize, C=c, hidden=hidden),
                 single_label=single_label)
    if as_json:
        return print_json(record)
    s, fit = record["sizes"], record["head"]
    console.print(f"{head} head on {s['train']:,} rows ({s['dropped_as_aligner_pairs']:,} dropped as aligner pairs) "
                  f"in {record['seconds']:.1f} s → pipeline {out}")
    chosen = ", ".join(f"{k} {fit[k]:.4g}" for k in ("C", "weight_decay") if isinstance(fit.get(k), float))
    console.print(f"  {'converged' if fit.get('converged') else 'NOT converged'} after {fit.get('iterations')} "
                  f"iterations ({fit.get('criterion')}){'; ' + chosen if chosen else ''}")
    if fit.get("converged") is False:
        console.print("[red]warning:[/red] the head stopped at its cap, not by its convergence criterion: its "
                      "figures are set by the cap; raise it (logistic: --param max_iter=...) or standardise")


def _head_params(items: list[str], **named: object) -> dict:
    """The head's parameters from its named options and `--param NAME=JSON`; only those given are passed, so
    each head keeps its own defaults (and a parameter a head does not take is an error naming its parameters)."""
    import json

    params = {k: v for k, v in named.items() if v is not None}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            raise ConfigError(f"--param {item!r}: expected NAME=VALUE, e.g. max_iter=2000")
        try:
            params[name] = json.loads(value)
        except json.JSONDecodeError:
            params[name] = value  # a bare string, e.g. normalize=l2
    return params


def _metrics_table(title: str, m: dict) -> Table:
    table = Table(title=f"{title}: accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f}, n={m['n']:,}")
    for col in ("class", "precision", "recall", "f1", "support"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for label, c in m["per_class"].items():
        table.add_row(label, f"{c['precision']:.3f}", f"{c['recall']:.3f}", f"{c['f1']:.3f}", str(c["support"]))
    return table


@user_errors
@compute_options()
def evaluate(
    pipeline: Path = typer.Option(..., "--pipeline", "-p", help="Pipeline directory from train-head."),
    test: Path = typer.Option(..., "--test", help="Labelled target-language rows."),
    text_column: str = typer.Option("text"), label_column: str = typer.Option("label"),
    where: list[str] = WHERE, single_label: bool = SINGLE_LABEL,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the result JSON here."),
    as_json: bool = typer.Option(False, "--json"), store: Optional[str] = STORE, model: Optional[str] = PIPELINE_MODEL,
) -> None:
    """Accuracy, macro-F1, per class and the confusion matrix of the pipeline's method (what predict does);
    then, for a pipeline with an aligner, the other way of applying it, labelled as a diagnostic."""
    from embedstore.api import evaluate as run

    result = run(pipeline, test, text_column=text_column, label_column=label_column, where=where, store=store,
                 model=model, progress=not as_json, single_label=single_label, out=out)
    if as_json:
        return print_json(result)
    primary = result["primary"]
    others = [n for n in ("with_aligner", "without_aligner") if n in result and n != primary]
    for name in [primary, *others]:
        m, how = result[name], name.replace("_", " ")
        if name == primary:
            console.print(f"{result['method']}: {result['method_description']}", highlight=False, soft_wrap=True)
        title = (f"result: {result['method']} (what predict does)" if name == primary else
                 f"diagnostic only ({how}: not how this pipeline predicts)")
        console.print(_metrics_table(title, m))
        if name == primary:
            console.print(f"confusion (rows = truth, columns = predicted, order {', '.join(m['labels'])}):")
            for label, row in zip(m["labels"], m["confusion"]):
                console.print(f"  {label:>10} " + " ".join(f"{v:5d}" for v in row))


@user_errors
@compute_options()
def predict(
    pipeline: Path = typer.Option(..., "--pipeline", "-p", help="Pipeline directory from train-head."),
    texts: list[str] = typer.Argument(None, help="Texts to classify (or use --file); - reads one text per line "
                                      "from standard input."),
    file: Optional[Path] = typer.Option(None, "--file", "-f", help="A TSV/CSV/JSONL/txt/Parquet/Arrow file or datasets directory of texts."),
    column: str = typer.Option("text", "--text-column", "--column", help="Text column of --file."),
    where: list[str] = WHERE,
    as_json: bool = typer.Option(False, "--json", help="Labels and probabilities as JSON."),
    store: Optional[str] = STORE, model: Optional[str] = PIPELINE_MODEL,
) -> None:
    """Labels and probabilities for new target-language texts (encoding what the store lacks)."""
    from embedstore.api import predict as run

    if texts == ["-"]:
        import sys

        texts = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    for text in texts or []:  # `predict -p P data.tsv` would otherwise classify the string "data.tsv"
        if Path(text).exists():
            raise ConfigError(f"predict: {text!r} is a file; pass it with --file {text} (arguments are texts)")
    if not texts and file is None:
        raise ConfigError("predict: give texts as arguments or --file FILE")
    results = run(pipeline, texts or [], file=file, text_column=column, where=where, store=store, model=model,
                  progress=not as_json)  # on stderr: the results on stdout stay whole when piped
    if as_json:
        return print_json(results)
    for r in results:
        console.print(f"{r['label']}\t{r['probabilities'][r['label']]:.3f}\t{r['text']}", highlight=False)
