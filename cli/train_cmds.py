"""Steps 2 and 3 on files: `train-aligner`, `train-head`, `evaluate`, `predict`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from embedstore.encoding.options import EncodeOptions
from embedstore.estimators.aligners import ALIGNERS, DEFAULT_ALIGNER
from embedstore.estimators.heads import DEFAULT_HEAD, HEADS
from embedstore.estimators.training import DEFAULT_RECIPE, RECIPES
from embedstore.data.selection import parse_size
from embedstore.data.tasks import Source, parse_where

from .common import console, encoding_options, print_json, user_errors

STORE = typer.Option(None, "--store", "-s", help="Vector store (default: cache/store.zarr).")
_RECIPE = typer.Option(DEFAULT_RECIPE, help=" | ".join(RECIPES) + ": the optimisation settings of trained estimators.")
PIPELINE_MODEL = typer.Option(None, "--model", "-m", help="The model directory, when the pipeline recorded its model "
                              "as a path (paths in a pipeline are not followed; the fingerprint must match).")
WHERE = typer.Option([], "--where", help="Row filter COLUMN=V1,V2 (repeatable), e.g. fold=0,1,2,3,4,5.")


def _store(store: Optional[Path]) -> Path:
    from embedstore.encoding.options import default_store

    return store or default_store()


@user_errors
@encoding_options()
def train_aligner(
    pairs: Path = typer.Option(..., "--pairs", help="Parallel file (TSV/CSV/JSONL) with source and target columns."),
    source_column: str = typer.Option("en", help="English (source) column."),
    target_column: str = typer.Option(..., help="Translation (target) column, e.g. ko."),
    arch: str = typer.Option(DEFAULT_ALIGNER, help=" | ".join(ALIGNERS) + "."),
    size: str = typer.Option("all", help="Pairs to use: 15k, 5000, all."),
    reverse: bool = typer.Option(False, "--reverse", help="Map target-language vectors into English space."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory for the aligner."),
    where: list[str] = WHERE, seed: int = typer.Option(0), recipe: str = _RECIPE,
    store: Optional[Path] = STORE, as_json: bool = typer.Option(False, "--json"), *, encoding: EncodeOptions,
) -> None:
    """Step 2: fit an aligner on parallel pairs."""
    from embedstore.pipelines.steps import train_aligner as run

    src = Source(file=pairs, text=source_column, target=target_column, where=parse_where(where))
    record = run(src, arch=arch, out=out, size=parse_size(size), reverse=reverse, seed=seed, recipe=recipe,
                 store=_store(store), options=encoding, progress=not as_json)
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
    if diag.get("collapsed"):
        console.print("[red]warning:[/red] the aligner collapsed (outputs near the target mean); "
                      "retrieval is near zero even if cosine looks fine: train longer or use procrustes")


@user_errors
@encoding_options()
def train_head(
    train: Path = typer.Option(..., "--train", help="English task data with text and label columns."),
    text_column: str = typer.Option("text"), label_column: str = typer.Option("label"),
    size: str = typer.Option("all", help="Training rows: 20k, 1000, all."),
    aligner: Optional[Path] = typer.Option(None, "--aligner", help="An aligner directory from train-aligner."),
    share: bool = typer.Option(False, "--share", help="Allow task rows that were aligner pairs (data-share ablation)."),
    head: str = typer.Option(DEFAULT_HEAD, help=" | ".join(HEADS) + "."),
    out: Path = typer.Option(..., "--out", "-o", help="Output pipeline directory."),
    where: list[str] = WHERE, seed: int = typer.Option(0), recipe: str = _RECIPE,
    store: Optional[Path] = STORE, as_json: bool = typer.Option(False, "--json"), *, encoding: EncodeOptions,
) -> None:
    """Step 3: train a task head (behind the aligner when given) → a pipeline directory."""
    from embedstore.pipelines.steps import train_head as run

    src = Source(file=train, text=text_column, label=label_column, where=parse_where(where))
    record = run(src, out=out, size=parse_size(size), head=head, aligner_dir=aligner, share=share, seed=seed,
                 recipe=recipe, store=_store(store), options=encoding, progress=not as_json)
    if as_json:
        return print_json(record)
    s = record["sizes"]
    console.print(f"{head} head on {s['train']:,} rows ({s['dropped_as_aligner_pairs']:,} dropped as aligner pairs) "
                  f"in {record['seconds']:.1f} s → pipeline {out}")


def _metrics_table(title: str, m: dict) -> Table:
    table = Table(title=f"{title}: accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f}, n={m['n']:,}")
    for col in ("class", "precision", "recall", "f1", "support"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for label, c in m["per_class"].items():
        table.add_row(label, f"{c['precision']:.3f}", f"{c['recall']:.3f}", f"{c['f1']:.3f}", str(c["support"]))
    return table


@user_errors
def evaluate(
    pipeline: Path = typer.Option(..., "--pipeline", "-p", help="Pipeline directory from train-head."),
    test: Path = typer.Option(..., "--test", help="Labelled target-language rows."),
    text_column: str = typer.Option("text"), label_column: str = typer.Option("label"),
    where: list[str] = WHERE, out: Optional[Path] = typer.Option(None, "--out", help="Write the result JSON here."),
    as_json: bool = typer.Option(False, "--json"), store: Optional[Path] = STORE, model: Optional[str] = PIPELINE_MODEL,
) -> None:
    """Accuracy, macro-F1, per class and the confusion matrix, with and without the aligner."""
    from embedstore.base.atomic import check_writable, write_json
    from embedstore.pipelines.steps import evaluate as run

    if out:
        check_writable(out)  # before the model loads, not after the evaluation
    result = run(pipeline, Source(file=test, text=text_column, label=label_column, where=parse_where(where)),
                 store=_store(store), model=model, progress=not as_json)
    if out:
        write_json(out, result, indent=2)
    if as_json:
        return print_json(result)
    for name in ("with_aligner", "without_aligner"):
        if name in result:
            m = result[name]
            primary = " (what predict uses)" if name == result["primary"] else ""
            console.print(_metrics_table(name.replace("_", " ") + primary, m))
            console.print(f"confusion ({name.replace('_', ' ')}; rows = truth, columns = predicted, order "
                          f"{', '.join(m['labels'])}):")
            for label, row in zip(m["labels"], m["confusion"]):
                console.print(f"  {label:>10} " + " ".join(f"{v:5d}" for v in row))


@user_errors
def predict(
    pipeline: Path = typer.Option(..., "--pipeline", "-p", help="Pipeline directory from train-head."),
    texts: list[str] = typer.Argument(None, help="Texts to classify (or use --file)."),
    file: Optional[Path] = typer.Option(None, "--file", "-f", help="A TSV/CSV/JSONL/txt file of texts."),
    column: str = typer.Option("text", help="Text column of --file."),
    as_json: bool = typer.Option(False, "--json", help="Labels and probabilities as JSON."),
    store: Optional[Path] = STORE, model: Optional[str] = PIPELINE_MODEL,
) -> None:
    """Labels and probabilities for new target-language texts (encoding what the store lacks)."""
    from embedstore.base.errors import ConfigError
    from embedstore.pipelines.pipeline import Pipeline
    from embedstore.data.texts import read_texts

    items = list(texts or []) + (read_texts(file, column) if file else [])
    if not items:
        raise ConfigError("predict: give texts as arguments or --file FILE")
    results = Pipeline.load(pipeline, store=_store(store), model=model).predict(items)
    if as_json:
        return print_json(results)
    for r in results:
        console.print(f"{r['label']}\t{r['probabilities'][r['label']]:.3f}\t{r['text']}", highlight=False)
