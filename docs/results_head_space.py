"""Retrieval in the head's space for the 10-seed help studies (issue 26 item 6): the records the page's retrieval
wording is written from.

    python docs/results_head_space.py --run --aligners DIR   # score the studies' saved aligners (resumable)
    python docs/make_results.py                              # the page, its closing note included

A LangAlign cell's FC (or any aligner applied to target text at test time) feeds its head A(en) for training
and A(tr) at test, so whether the head can transfer is decided by retrieval of A(en) against A(tr), not against raw
target vectors. For each LangAlign record of a study whose aligner is kept under DIR as the fit the record describes (`_fit_of`; a sweep keeps
its aligners beside its results, `<results>.aligners/<aligner_id>`), `embedstore analyze retrieval --aligner` scores it on the
study's own test fold, English side against target side: pairs the aligner never saw (it records its pairs'
hashes, and rows among them are dropped and counted). Procrustes, which leaves target vectors raw, is scored
beside it. One record per line in `docs/results/<study>.head-space.jsonl`, with the cell it belongs to.
"""
from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from repo_python import use_project_python

use_project_python()

from embedstore.analysis.runs import SplitOptions, run_retrieval, write_record
from embedstore.data.tasks import Source
from embedstore.study.cells import load_config
from embedstore.study.report_data import Stat, over_seeds_and_rows, proportion_half
from embedstore.study.report_markdown import format_stat
from embedstore.study.sweep import read_results
from embedstore.study.verdicts import select

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
RESULTS = DOCS / "results"
CONFIGS = REPO / "configs"
#: The studies (config names) whose aligners are scored, and the aligners: those the page's retrieval wording is
#: about (FC maps the target text at test time) and Procrustes beside them (it does not).
STUDIES = ("shared-topic-ko-seeds", "shared-topic-ja-seeds", "shared-topic-zh-seeds")
ALIGNERS = ("fc", "procrustes")


def results_path(study: str, results_dir: Path = RESULTS) -> Path:
    return results_dir / f"{study}.head-space.jsonl"


def run(study: str, aligners_dir: Path, store: str | None = None) -> int:
    """Score every LangAlign record of `study` (FC, Procrustes) whose aligner `aligners_dir` holds and that has no
    head-space record yet; returns how many were written (appended one by one: a kill loses nothing)."""
    config = load_config(CONFIGS / f"{study}.toml")
    (task,) = config.tasks.values()
    test = task["test"]
    folds = ",".join(test["where"]["fold"])
    out = results_path(study)
    done = {r["cell_id"] for r in _records(out)}
    written = 0
    for r in select(read_results(RESULTS / f"{study}.jsonl"), method="langalign"):
        if r["cell"]["aligner"] not in ALIGNERS or r["cell_id"] in done:
            continue
        directory = aligners_dir / r["provenance"]["sizes"]["aligner_id"]
        if not directory.is_dir() or not _fit_of(r, directory):
            continue
        language = r["cell"]["language"]
        pairs = Source(Path(r["provenance"]["files"]["test"]["path"]), "en", target=language)
        record = run_retrieval(pairs, aligner_dir=directory, split=SplitOptions(fold_column="fold", test_folds=folds),
                               store=store or config.store, seed=r["cell"]["seed"], ks=(1,))
        record.update(cell=r["cell"], cell_id=r["cell_id"], study=study)
        write_record(record, out)
        written += 1
    return written


def _fit_of(record: dict, directory: Path) -> bool:
    """Whether the aligner saved in `directory` is the fit `record` describes: saved no later than the record was
    last written (by its sweep, or by a backfill whose re-run reproduced its predictions). A refit saved since
    (a backfill whose re-run did not reproduce the record overwrites the aligner it refitted) is not scored."""
    saved = datetime.fromtimestamp((directory / "config.json").stat().st_mtime, tz=timezone.utc)
    written = [record["provenance"].get("written_at"), record["provenance"].get("backfilled", {}).get("written_at")]
    return any(w is not None and datetime.fromisoformat(w) >= saved for w in written)


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.is_file() else []


def summary(study: str, results_dir: Path = RESULTS) -> dict[tuple[str, int], dict[str, Any]] | None:
    """Per (aligner, pair budget): P@1 (NN and CSLS) of aligned English against raw target vectors, against the
    target vectors as the head sees them (A(tr); FC only) and raw English against raw target, each its mean over
    seeds with an interval over seeds and test rows; how many seeds the collapse check flags in each space; the
    seeds, the test rows and how many rows were dropped as the aligner's own pairs. None when not run."""
    path = results_path(study, results_dir)
    if not path.is_file():
        return None
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in _records(path):
        groups.setdefault((r["cell"]["aligner"], r["cell"]["pair_size"]), []).append(r)
    out = {}
    for key, records in sorted(groups.items()):
        rows = [r["retrieval"]["raw"]["rows"] for r in records]

        def p1(space: str, kind: str) -> Stat | None:
            values = [r["retrieval"][space]["forward"][kind]["p@1"] for r in records if space in r["retrieval"]]
            if len(values) != len(rows):
                return None
            return over_seeds_and_rows(values, [proportion_half(v, n) for v, n in zip(values, rows)])

        out[key] = {"seeds": str(len(records)), "rows": f"{rows[0]:,}",
                    "dropped": str(sum(r["held_out"].get("dropped_as_fit_pairs", 0) for r in records)),
                    "checked": str(all(r["held_out"].get("checked") for r in records)),
                    **{f"{space}_{kind}": p1(space, kind) for space in ("raw", "aligned", "head_space")
                       for kind in ("nn", "csls")},
                    "collapsed": str(sum(r["collapse"]["collapsed"] for r in records)),
                    "collapsed_head_space": (str(sum(r["collapse_head_space"]["collapsed"] for r in records))
                                             if all("collapse_head_space" in r for r in records) else "–")}
    return out


LANGUAGE = {"shared-topic-ko-seeds": "ko", "shared-topic-ja-seeds": "ja", "shared-topic-zh-seeds": "zh"}


def section(results_dir: Path = RESULTS) -> list[str]:
    """The page's table of `summary` per study (nothing when no study has head-space records)."""
    found = {study: summary(study, results_dir) for study in STUDIES}
    found = {study: groups for study, groups in found.items() if groups}
    if not found:
        return []
    lines = ["## Retrieval in the head's space, the 10-seed help studies", "",
             "`python docs/results_head_space.py --run --aligners DIR`: each study's saved LangAlign aligners, scored "
             "by `embedstore analyze retrieval --aligner` on the study's test fold, English side against target side "
             "(pairs the aligners never saw: their recorded pairs' hashes are checked, and rows among them would be "
             "dropped and counted). EN→TR P@1 among all the fold's rows, NN (CSLS k=10 beside it): raw English "
             "against raw target; aligned English A(en) against raw target; and A(en) against A(tr), the target "
             "vectors as FC's head sees them at test time (FC maps the target text too; Procrustes leaves it raw, "
             "so its head space is the A(en)-against-raw column). Mean over seeds ± 95% interval over seeds and test "
             "rows. \"Collapsed\": seeds the collapse check flags (retrieval far below the identity map's, or the "
             "outputs' spread collapsed), against raw target and in the head's space. LibreOffice help topic data, "
             "e5-small.", "",
             "| study | aligner | pairs | seeds | test rows | raw EN→TR NN (CSLS) | A(en)→TR NN (CSLS) "
             "| A(en)→A(tr) NN (CSLS) | collapsed: vs raw TR / in the head's space |",
             "|---|---|---|---|---|---|---|---|---|"]
    for study, groups in found.items():
        for (aligner, pairs), g in groups.items():
            lines.append(f"| {LANGUAGE[study]} help topic | {aligner} | {pairs:,} | {g['seeds']} | {g['rows']} "
                         f"| {_shown(g['raw_nn'])} ({_shown(g['raw_csls'])}) | {_shown(g['aligned_nn'])} "
                         f"({_shown(g['aligned_csls'])}) | {_shown(g['head_space_nn'])} ({_shown(g['head_space_csls'])}) "
                         f"| {g['collapsed']} / {g['collapsed_head_space']} |")
    return lines + [""]


def _shown(stat: Stat | None) -> str:
    return "–" if stat is None else format_stat(stat)


def closing(results_dir: Path = RESULTS) -> str | None:
    """The closing note's words on "FC raises cosine while losing retrieval", from `summary`: FC's P@1 in the head's
    space beside raw and Procrustes at each budget both ran. None when no study has head-space records."""
    said, below, above = [], [], []
    for study in STUDIES:
        groups = summary(study, results_dir) or {}
        for (aligner, pairs), g in groups.items():
            if aligner != "fc" or g["head_space_nn"] is None:
                continue
            procrustes = groups.get(("procrustes", pairs))
            said.append(f"{LANGUAGE[study]} {pairs:,} pairs ({g['seeds']} seeds, {g['rows']} test rows): A(en)→A(tr) "
                        f"{_shown(g['head_space_nn'])}, A(en)→raw TR {_shown(g['aligned_nn'])}, raw "
                        f"{_shown(g['raw_nn'])}" + (f", Procrustes {_shown(procrustes['aligned_nn'])}" if procrustes else "")
                        + f"; collapse check {g['collapsed_head_space']} of {g['seeds']} seeds in the head's space, "
                        f"{g['collapsed']} against raw TR")
            head, raw = g["head_space_nn"], g["raw_nn"]
            below.append(head.mean + head.ci95 < raw.mean - raw.ci95)
            above.append(head.mean - head.ci95 > g["aligned_nn"].mean + g["aligned_nn"].ci95)
    if not said:
        return None
    return "; ".join(said) + (f". FC's retrieval in the head's space lies wholly below the raw vectors' (the two "
                              f"intervals apart) in {sum(below)} of these {len(below)}, and wholly above A(en) against raw "
                              f"TR (the figure the page once cited) in {sum(above)} of {len(above)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", action="store_true", help="score the studies' saved aligners")
    ap.add_argument("--aligners", type=Path, required=True,
                    help="the directory holding the studies' <results>.aligners directories")
    ap.add_argument("--study", action="append", choices=STUDIES, help="only these studies (default: all)")
    ap.add_argument("--store", help="the store holding the study's vectors (default: the config's)")
    args = ap.parse_args()
    for study in args.study or STUDIES:
        n = run(study, args.aligners / f"{study}.aligners", args.store) if args.run else 0
        print(f"{study}: {n} head-space records written")
    print("\n".join(section()))


if __name__ == "__main__":
    main()
