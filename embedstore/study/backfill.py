"""Bringing finished cells' records up to what this version records, without trusting a re-run blindly.

A study's records outlive the code that wrote them: a later version keeps more per cell (the head refitted at C
one decade either side, with per-row predictions; a LangAlign cell's validation score), and a sweep never redoes a
finished cell. `backfill` re-runs the finished cells whose records lack those fields, from the store (the aligners
and heads kept beside the results are reused, so most cells take seconds), and adds the new fields only where the
re-run reproduces the record's own test predictions row for row (a record without per-row predictions: its
accuracy and confusion matrix): then the fields describe the very fit the record does. A cell that does not
reproduce (say, a refitted aligner that came out otherwise) keeps its record as it was, and the summary names it
and why. The updated record is appended, like a sweep's (the last record of a cell wins), so a kill loses nothing
and a re-run carries on.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

from embedstore.base.progress import make_progress
from embedstore.base.provenance import stamp
from embedstore.encoding.models import ModelSpec
from embedstore.estimators.aligners import is_trained
from embedstore.study import predictions
from embedstore.study.cells import Cell, SweepConfig, expand
from embedstore.study.context import StudyContext
from embedstore.study.experiments import run_cell
from embedstore.study.methods import TABLE
from embedstore.study.predictions import PredictionReader, RowPredictions
from embedstore.study.sweep import appending

FIELDS = ("head_regularisation", "validation")
"""The metrics a record may lack because an older version wrote it: the head's refits at C/10 and C×10
(`experiments.regularisation_neighbours`) and, for LangAlign cells, the validation score
(`experiments.validation_score`)."""


@dataclass(frozen=True)
class BackfillSummary:
    """What a backfill did: the cells whose records it brought up to date, those whose re-run did not reproduce
    their record (with the first difference), and how many it did not reach (interrupted)."""

    updated: tuple[Cell, ...]
    not_reproduced: tuple[tuple[Cell, str], ...]
    not_reached: int
    interrupted: bool

    def __str__(self) -> str:
        lines = [f"backfill: {len(self.updated)} finished records brought up to date, {len(self.not_reproduced)} "
                 "left as they were (their re-run did not reproduce them)"
                 + (f", {self.not_reached} not reached (interrupted: run again to go on)" if self.interrupted else "")]
        lines += [f"not reproduced: {cell.describe()}: {why}" for cell, why in self.not_reproduced]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"updated": [cell.id for cell in self.updated],
                "not_reproduced": [{"id": cell.id, "cell": cell.describe(), "why": why}
                                   for cell, why in self.not_reproduced],
                "not_reached": self.not_reached, "interrupted": self.interrupted}


def missing(record: dict[str, Any], config: SweepConfig) -> tuple[str, ...]:
    """Which of `FIELDS` this finished record lacks and a re-run from cached vectors would give it: the refits
    where its head has a C, the validation score where it is a LangAlign cell of a task with translations of its
    training rows (`experiments.VALIDATION_SPLIT`). Only cells that run from cached vectors alone (no fine-tuned
    or adapted encoder) are re-run."""
    runner = TABLE[record["cell"]["method"]].runner
    metrics = record.get("metrics", {})
    if runner not in ("baseline", "langalign"):
        return ()
    lacking = []
    if "head_regularisation" not in metrics and metrics.get("head", {}).get("C") is not None:
        lacking.append("head_regularisation")
    roles = config.tasks.get(record["cell"]["task"], {})
    if runner == "langalign" and "validation" not in metrics and {"en_train", "translated_train"} <= set(roles):
        lacking.append("validation")
    return tuple(lacking)


def backfill(config: SweepConfig, spec: ModelSpec | None = None, *, progress: bool = True) -> BackfillSummary:
    """Re-run every finished cell of `config` (same context) whose record lacks one of `FIELDS`, cheapest first
    (`_cost`), and append each reproduced record with the fields added.
    The store must hold the cells' vectors (`experiments.prepare`). `spec`: the model as the study's driver
    resolved it (None: resolved here), for the context ids and every re-run cell. Holds the results file's writer
    lock throughout, so no sweep appends to it meanwhile; Ctrl-C stops after the cell at hand, keeping every
    record appended so far."""
    cells = {cell.id: cell for cell in expand(config)}
    spec = config.encoding.resolve() if spec is None else spec
    context = StudyContext(config, spec.fingerprint)
    updated: list[Cell] = []
    not_reproduced: list[tuple[Cell, str]] = []
    with appending(config.results) as (records, append):
        todo = [(cells[r["cell_id"]], r) for r in records
                if r.get("kind", "cell") == "cell" and r["status"] == "ok" and r["cell_id"] in cells
                and r.get("context") == context(cells[r["cell_id"]]) and missing(r, config)]
        todo.sort(key=lambda item: _cost(item[0], config))
        reader = PredictionReader(config.results)
        interrupted = False
        columns = (TextColumn("[bold]{task.description}"), BarColumn(bar_width=24), MofNCompleteColumn(),
                   TimeElapsedColumn())
        with make_progress(*columns, enabled=progress, stderr=True) as bar:
            task = bar.add_task(f"{config.name}: backfill", total=len(todo))
            try:
                for cell, record in todo:
                    t0 = time.perf_counter()
                    outcome = run_cell(cell, config, spec)
                    why = differs(record, outcome, reader(record))
                    if why:
                        not_reproduced.append((cell, why))
                    else:
                        append(_updated(config, record, outcome, time.perf_counter() - t0))
                        updated.append(cell)
                    bar.update(task, advance=1)
            except KeyboardInterrupt:
                interrupted = True
    return BackfillSummary(tuple(updated), tuple(not_reproduced), len(todo) - len(updated) - len(not_reproduced),
                           interrupted)


def _cost(cell: Cell, config: SweepConfig) -> tuple[bool, bool]:
    """Cells that train no aligner first (seconds each), then the arm the config's claims name, then the rest."""
    named = config.claims.get("langalign")
    is_named = named is not None and (cell.method, cell.aligner, cell.pair_size) == ("langalign", named.aligner,
                                                                                     named.pair_size)
    return cell.aligner is not None and is_trained(cell.aligner), not is_named


def differs(record: dict[str, Any], outcome: dict[str, Any], kept: RowPredictions | None) -> str | None:
    """How a re-run's result differs from the record's (None: it reproduces it): the per-row predictions where
    the record kept them, else the accuracy and the confusion matrix."""
    metrics = outcome["metrics"]
    if kept is not None:
        if outcome.get("predictions") is None:
            return "the re-run kept no per-row predictions"
        again = RowPredictions.from_payload(outcome["predictions"])
        if again.test_ids != kept.test_ids:
            return "the re-run was scored on other test rows"
        decoded = [np.asarray(rows.labels)[codes] for rows in (kept, again) for codes in (rows.truth, rows.predicted)]
        if not np.array_equal(decoded[0], decoded[2]):
            return "the re-run's test rows have other true labels"
        changed = int(np.sum(decoded[1] != decoded[3]))
        if changed:
            return f"the re-run predicts {changed:,} of {decoded[1].size:,} test rows otherwise"
        return None
    for key in ("accuracy", "confusion"):
        if metrics.get(key) != record["metrics"].get(key):
            return f"the re-run's {key} is {metrics.get(key)!r}, the record's {record['metrics'].get(key)!r}"
    return None


def _updated(config: SweepConfig, record: dict[str, Any], outcome: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The record with the re-run's `FIELDS` added (its own figures untouched: the re-run reproduced them), the
    re-run's per-row predictions (the same rows and predictions, now with the refits') saved under the record's
    name, and the backfill in its provenance."""
    fields = missing(record, config)
    new = copy.deepcopy(record)
    new["metrics"].update({name: outcome["metrics"][name] for name in fields if name in outcome["metrics"]})
    if outcome.get("predictions") is not None:
        new["predictions"] = predictions.write(config.results, record["cell_id"], record["context"],
                                               outcome["predictions"])
    new["provenance"]["backfilled"] = {"fields": [name for name in fields if name in outcome["metrics"]],
                                       "seconds": round(seconds, 3), **stamp()}
    return new
