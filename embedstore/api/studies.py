"""Studies: `sweep` (a grid of cells from cached vectors), `report` (its tables and plots), `demo` (the
paper's study in miniature on the bundled data)."""
from __future__ import annotations

from pathlib import Path

from embedstore.api.commands import command
from embedstore.api.values import PathLike, store_path
from embedstore.base.progress import watched


@command("sweep")
def sweep(config: PathLike, *, workers: int = 2, executor: str = "local", address: str | None = None,
          dry_run: bool = False, backfill: bool = False, progress: bool | None = None):
    """`embedstore sweep`: encode what the store lacks, then run every unfinished cell of the config (TOML) on
    `executor` ("local": `workers` processes; "ray": the cluster at `address`); each result is appended as it
    finishes. With `backfill`, first re-run the finished cells whose records lack what this version records
    (the heads' refits at C/10 and C×10, LangAlign's validation score), adding it only where the re-run
    reproduces the record's test predictions (`embedstore.study.backfill`). Returns the `StudyResult` (its
    `summary` says what ran, was skipped, failed; `backfilled` what the backfill did)."""
    from embedstore.study.cells import load_config
    from embedstore.study.run import make_executor, run_study

    progress = watched(progress)
    return run_study(load_config(config), executor=make_executor(executor, workers=workers, address=address),
                     dry_run=dry_run, backfill=backfill, progress=progress)


@command("report")
def report(results: PathLike, *, out: PathLike | None = None, metric: str = "accuracy",
           cosine: PathLike | None = None):
    """`embedstore report`: the results file's table shaped like the paper's Table 3 (mean ± 95% CI over seeds)
    as markdown and CSV, and PNG plots, in `out` (default: <results dir>/report); returns what was written
    (`ReportFiles`, with the markdown)."""
    from embedstore.study.report import build_report

    results = Path(results)
    return build_report(results, Path(out) if out is not None else results.parent / "report", metric=metric,
                        cosine_path=cosine)


@command("demo")
def demo(out: PathLike | None = None, *, model: PathLike | None = None, store: PathLike | None = None,
         workers: int = 2, fc: bool = False, progress: bool | None = None, since_process_start: bool = False):
    """`embedstore demo`: encode → aligners (procrustes and linear; with `fc` the paper's FC too) → heads →
    evaluation on the bundled en-ko sample with `model` (None: the project's), the report in `out` (default
    cache/demo); a second run reuses everything. Returns the `DemoResult`, its time counted from this call or, with
    `since_process_start` (the CLI: what its user waited for), from the process's start."""
    from embedstore.base.clock import process_started
    from embedstore.study.demo import run_demo

    progress = watched(progress)
    return run_demo(Path(out) if out is not None else None, model=None if model is None else str(model),
                    store=store_path(store), workers=workers,
                    aligners=("procrustes", "linear", "fc") if fc else ("procrustes", "linear"), progress=progress,
                    started=process_started() if since_process_start else None)
