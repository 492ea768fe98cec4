"""Studies: `sweep`, `report`, `demo`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from embedstore.api import EmbedstoreError

from .common import STORE, compute_options, console, model_flag, model_option, note_settings, print_json, user_errors


@user_errors
@compute_options()
def sweep(
    config: Path = typer.Argument(..., help="A sweep config (TOML), e.g. configs/sample-ko.toml (the bundled "
                                  "sample) or configs/shared-topic-ko.toml."),
    workers: int = typer.Option(2, help="Parallel processes for --executor local (1 runs in this process)."),
    executor: str = typer.Option("local", help="Where cells run: local (processes here) or ray (Ray tasks; "
                                               "needs pip install 'embedstore\\[ray]')."),
    address: Optional[str] = typer.Option(None, help="--executor ray: the cluster (auto, HOST:PORT, ray://HOST:PORT); "
                                                     "default RAY_ADDRESS, else a local Ray for this sweep."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the cells that would run; run nothing."),
    backfill: bool = typer.Option(False, "--backfill", help="First re-run finished cells whose records lack what "
                                  "this version records (head refits at C/10 and C×10, LangAlign's validation "
                                  "score); a record is updated only where the re-run reproduces its test "
                                  "predictions."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON (with --dry-run: the cells)."),
) -> None:
    """Run a grid of cells from cached vectors; finished cells are skipped, each result is appended at once."""
    from dataclasses import asdict

    from embedstore.api import sweep as run

    note_settings()
    study = run(config, workers=workers, executor=executor, address=address, dry_run=dry_run, backfill=backfill,
                progress=not as_json)
    backfilled = study.backfilled
    if backfilled is not None and not as_json:
        console.print(str(backfilled), highlight=False, markup=False)
    if backfilled is not None and backfilled.interrupted:
        if as_json:
            print_json({"backfill": backfilled.to_dict()})
        raise typer.Exit(130)
    if dry_run:
        summary = study.summary
        finished = {cell.id for cell in summary.skipped}
        if as_json:
            return print_json([{**asdict(cell), "id": cell.id, "finished": cell.id in finished}
                               for cell in summary.cells])
        for cell in summary.cells:
            console.print(f"{'done' if cell.id in finished else 'todo'}  {cell.describe()}", highlight=False,
                          markup=False, soft_wrap=True)
    if as_json and not dry_run:
        print_json({**study.summary.to_dict(),
                    "encoded": study.encoded.to_dict() if study.encoded is not None else None,
                    "backfill": backfilled.to_dict() if backfilled is not None else None})
    elif study.encoded is not None:
        report = study.encoded
        console.print(f"vectors: {report.unique:,} texts, {report.encoded:,} newly encoded ({report.seconds:.1f} s)")
    summary = study.summary
    if not as_json:
        console.print(str(summary), highlight=False)
    if summary.interrupted:
        raise typer.Exit(130)
    if summary.errors:
        raise EmbedstoreError(f"{len(summary.errors)} of {len(summary.to_run)} cells failed; their records in "
                              f"{summary.results} hold the errors; run the same command again to retry them")


@user_errors
def report(
    results: Path = typer.Argument(..., help="A results file written by `embedstore sweep`."),
    out: Path = typer.Option(None, "--out", "-o", help="Output directory (default: <results dir>/report)."),
    metric: str = typer.Option("accuracy", help="accuracy or macro_f1."),
    cosine: Optional[Path] = typer.Option(None, help="Cosine records (from `analyze cosine --out`) for the bar plot."),
    as_json: bool = typer.Option(False, "--json", help="Print the files written (and the table) as JSON."),
) -> None:
    """Markdown table shaped like the paper's Table 3 (mean ± 95% CI over seeds), CSV and PNG plots."""
    from embedstore.api import report as run

    files = run(results, out=out, metric=metric, cosine=cosine)
    if as_json:
        return print_json(_report_files(files))
    console.print(files.markdown, highlight=False, soft_wrap=True)  # never wrap a markdown table
    console.print(f"wrote {files.table_md}, {files.table_csv}" + "".join(f", {p}" for p in files.plots))


@user_errors
@compute_options()
def demo(
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output directory (default: cache/demo)."),
    workers: int = typer.Option(2, help="Parallel processes for the cells."),
    fc: bool = typer.Option(False, "--fc", help="Add the paper's FC aligner (trained: minutes more on a CPU)."),
    model: Optional[str] = model_flag(),
    store: Optional[str] = STORE,
    as_json: bool = typer.Option(False, "--json", help="Print the summary, the report's files and the timing as JSON."),
) -> None:
    """The paper's study in miniature on the bundled en-ko data with the default model: encode → aligners →
    heads → evaluation; prints the table and writes the plots. A second run reuses everything."""
    from embedstore.api import demo as run

    result = run(out, model=model_option(model), store=store, workers=workers, fc=fc, progress=not as_json,
                 since_process_start=True)  # the time line counts Python's start and the imports too
    if as_json:
        return print_json({"config": str(result.config), **result.summary.to_dict(),
                           "report": _report_files(result.report), "encoded": result.encoded, "engine": result.engine,
                           "steps": result.steps, "seconds": result.seconds})
    console.print(result.report.markdown, highlight=False, soft_wrap=True)  # never wrap a markdown table
    console.print(str(result.summary), highlight=False)
    console.print(f"config {result.config}; plots: " + ", ".join(str(p) for p in result.report.plots),
                  highlight=False)
    console.print(result.timing(), highlight=False)


def _report_files(files) -> dict:
    return {"markdown": files.markdown, "table_md": str(files.table_md), "table_csv": str(files.table_csv),
            "plots": [str(p) for p in files.plots]}
