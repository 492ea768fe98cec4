"""One study from its config: encode every text once, run the cells, build the report.

`embedstore sweep` and `embedstore demo` are both this call; they differ only in what they print.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from embedstore import __version__
from embedstore.base.provenance import VERSION
from embedstore.base.atomic import write_json

from embedstore.base.errors import ConfigError
from embedstore.encoding.models import ModelSpec
from embedstore.encoding.report import EncodeReport
from embedstore.study.cells import SweepConfig, expand
from embedstore.study.backfill import BackfillSummary, backfill as run_backfill
from embedstore.study.context import StudyContext
from embedstore.study.experiments import prepare, run_cell, texts_needed
from embedstore.study.report import ReportFiles, build_report
from embedstore.study.execution import Executor, LocalExecutor
from embedstore.study.sweep import SweepSummary, check_results_writable, run_sweep

EXECUTORS: tuple[str, ...] = ("local", "ray")
"""Where `embedstore sweep` can run cells: this machine's processes, or Ray tasks on a cluster."""


@dataclass(frozen=True)
class StudyResult:
    """What a study did: the sweep's summary, what encoding it needed (None for a dry run) and the report
    (None when none was asked for)."""

    summary: SweepSummary
    encoded: EncodeReport | None
    report: ReportFiles | None
    #: What `backfill=True` did to finished records before the sweep ran (None: not asked).
    backfilled: BackfillSummary | None = None
    #: Wall seconds of each step ("encode", "cells", "report"): what a user waited for, and on what.
    seconds: dict[str, float] = field(default_factory=dict)


def make_executor(kind: str, *, workers: int = 2, address: str | None = None) -> Executor:
    """The executor `--executor KIND` names: "local" with `workers` processes, or "ray" on the cluster at
    `address` (None: `RAY_ADDRESS`, else a local cluster for this sweep)."""
    if kind == "local":
        if address is not None:
            raise ConfigError(f"--address {address}: only --executor ray connects to a cluster")
        return LocalExecutor(workers)
    if kind == "ray":
        from embedstore.study.ray_executor import RayExecutor

        return RayExecutor(address=address)
    raise ConfigError(f"--executor {kind!r}: expected one of {', '.join(EXECUTORS)}")


def run_study(config: SweepConfig, *, workers: int = 2, executor: Executor | None = None, dry_run: bool = False,
              report_dir: Path | None = None, progress: bool = True, backfill: bool = False,
              spec: ModelSpec | None = None) -> StudyResult:
    """Encode what the store lacks (once, in this process, so the cells never load the transformer), run every
    unfinished cell, and write the report into `report_dir` when given. A dry run encodes and runs nothing, but
    it does fingerprint the model (without the fingerprint it could not tell finished cells from stale ones)
    and reads every task file the cells use, as the real run does first: a typo in a task table (a file, a
    column, a role) fails the dry run with the error the real run would give. With `backfill`, finished cells
    whose records lack what this version records are re-run first (`study.backfill`), their records updated
    only where the re-run reproduces them. `spec`: the config's model as the caller already resolved it
    (`config.encoding.resolve()`; the demo resolves it first, to time a first build apart), else resolved here;
    either way once, for the encode, the context ids and every cell."""
    cells = expand(config)
    if dry_run:
        texts_needed(cells, config)
    else:
        check_results_writable(config.results)  # before anything is encoded, not after
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    spec = config.encoding.resolve() if spec is None else spec  # the encode, the context ids and every cell use it
    runner, context = partial(run_cell, spec=spec), StudyContext(config, spec.fingerprint)
    encoded = None if dry_run else prepare(cells, config, spec, progress=progress)
    seconds["encode"] = time.perf_counter() - t0
    backfilled = run_backfill(config, spec, progress=progress) if backfill and not dry_run else None
    if backfilled is not None and backfilled.interrupted:
        return StudyResult(run_sweep(config, runner, context, dry_run=True, progress=False),
                           encoded, None, backfilled=backfilled)
    summary = run_sweep(config, runner, context, workers=workers, executor=executor, dry_run=dry_run,
                        progress=progress)
    seconds["cells"] = time.perf_counter() - t0 - seconds["encode"]
    report = current_report(config.results, report_dir) if report_dir is not None and not dry_run else None
    seconds["report"] = time.perf_counter() - t0 - seconds["encode"] - seconds["cells"]
    return StudyResult(summary, encoded, report, backfilled, seconds)


REPORT_STAMP = ".report-of.json"
"""Beside a report: the digest of the results file it was built from (and by which embedstore), so an unchanged
study does not draw its tables and plots again."""


def current_report(results: Path, report_dir: Path) -> ReportFiles:
    """The report of `results` in `report_dir`: the one already there when it was built from these very results
    by this version of embedstore, else a new one. Why: a re-run of a finished study changes nothing, and the
    plots alone cost seconds. The digest covers every byte of the results, and the sweep writes a cell's
    predictions (what a verdict reads) only with a new record naming them, so any new cell builds it again."""
    digest = hashlib.sha256(results.read_bytes()).hexdigest()
    stamp = report_dir / REPORT_STAMP
    expected = {"results_sha256": digest, VERSION: __version__}
    if stamp.is_file():
        kept = json.loads(stamp.read_text(encoding="utf-8"))
        files = [report_dir / name for name in kept.get("files", [])]
        if {k: kept.get(k) for k in expected} == expected and all(f.is_file() for f in files):
            table_md = report_dir / "table.md"
            return ReportFiles(table_md.read_text(encoding="utf-8"), table_md, report_dir / "table.csv",
                               tuple(f for f in files if f.suffix == ".png"))
    report = build_report(results, report_dir)
    written = [report.table_md, report.table_csv, *report.plots]
    write_json(stamp, {**expected, "files": [f.name for f in written]})
    return report
