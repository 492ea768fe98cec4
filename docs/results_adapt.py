"""The "Adapting the encoder" section of docs/results.md (issue 15; the paper's Table 5 and Appendix G).

    python docs/results_adapt.py --run   # write the data subset, run the sweeps and the two analyses, print the section
    python docs/results_adapt.py         # print the section from the saved results
    (docs/make_results.py puts the section on the results page, and runs this study with --run)

The study: configs/shared-topic-ko-adapt.toml (and configs/shared-topic-ko-adapt-seeds.toml: more seeds of the
methods the headline verdicts rest on, into the same results file) on a seeded subset of ../shared/data's en-ko
LibreOffice help file
(written to cache/adapt-study/ by `prepare`, sized for a loaded shared CPU), plus retrieval P@1 EN→KO on the test
rows before and after `adapt align`, and the per-layer gradient cosine of the task and alignment losses
(`analyze encoder-gradients`) on the base e5-small. Every figure is computed from the saved records.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from repo_python import use_project_python

use_project_python()

import numpy as np

from embedstore.base.atomic import write_json, write_text
from embedstore.base.retrieval import nn_p_at_1
from embedstore.data.texts import read_table
from embedstore.study.predictions import PredictionReader
from embedstore.study.report_data import Stat, accuracy_stat, over_seeds_and_rows, proportion_half
from embedstore.study.report_markdown import format_stat
from embedstore.study.sweep import read_results
from embedstore.study.verdicts import Comparison, compare, seed_list, select

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
SOURCE = REPO.parent / "shared" / "data" / "parallel" / "libreoffice_help.en-ko.tsv"
STUDY = REPO / "cache" / "adapt-study"
DATA = STUDY / "libreoffice_help.en-ko.adapt.tsv"
CONFIG = REPO / "configs" / "shared-topic-ko-adapt.toml"
#: more seeds of English-only, LangAlign and the align arms, into CONFIG's results file (issue 26)
SEEDS_CONFIG = REPO / "configs" / "shared-topic-ko-adapt-seeds.toml"
RESULTS = DOCS / "results" / "shared-topic-ko-adapt.jsonl"
ANALYSES = DOCS / "results" / "shared-topic-ko-adapt.analyses.json"
#: role → (fold, rows): disjoint folds, single-app rows only, a seeded sample of each
ROLES = {"train": ("6", 1000), "pairs": ("0", 1000), "test": ("9", 1000)}
MAX_LENGTH = 64
METHODS = ["english", "langalign", "adapt-lora", "adapt-simcse", "adapt-align", "adapt-align+langalign"]


def prepare() -> None:
    """The study's rows, with a `role` column the config selects by; also the train rows and pairs on their own
    (for the gradient analysis)."""
    table = read_table(SOURCE, ["en", "ko", "apps", "fold"])
    rng = np.random.default_rng(0)
    lines = ["en\tko\tapps\tfold\trole"]
    for role, (fold, n) in ROLES.items():
        rows = [i for i, (f, app) in enumerate(zip(table["fold"], table["apps"])) if f == fold and "," not in app]
        for i in sorted(rng.choice(rows, n, replace=False)):
            lines.append(f"{table['en'][i]}\t{table['ko'][i]}\t{table['apps'][i]}\t{fold}\t{role}")
    write_text(DATA, "\n".join(lines) + "\n")
    for role in ("train", "pairs"):
        write_text(STUDY / f"{role}.tsv", "\n".join([lines[0]] + [ln for ln in lines[1:] if ln.endswith("\t" + role)])
                   + "\n")


def run(workers: int = 1) -> None:
    from embedstore.study.cells import load_config
    from embedstore.study.run import run_study

    prepare()
    for config in (CONFIG, SEEDS_CONFIG):  # the second skips the cells the first finished
        summary = run_study(load_config(config), workers=workers, progress=True).summary
        for cell, error in summary.errors:  # the section reports finished cells only; a rerun retries these
            print(f"cell failed: {cell.describe()}: {error}")
    analyses()


def analyses(retrieval_only: bool = False) -> None:
    """The gradient cosine on the base model (kept from an earlier run with `retrieval_only`), and retrieval
    P@1 EN→KO on the test rows under the base model and each finished adapt-align cell's encoder (an encoder no
    longer on disk, its cache cleared, keeps the figure saved for its seed: it cannot be measured again without
    training it again)."""
    from embedstore.encoding.encode import embed
    from embedstore.encoding.options import EncodeOptions
    from embedstore.data.tasks import Source
    from embedstore.text_training.gradients import encoder_gradients
    from embedstore.text_training.options import TrainOptions

    saved = json.loads(ANALYSES.read_text(encoding="utf-8")) if ANALYSES.is_file() else {}
    if retrieval_only and "gradients" in saved:
        gradients = saved["gradients"]
    else:
        gradients = {**encoder_gradients(Source(STUDY / "train.tsv", "en", label="apps"),
                                         Source(STUDY / "pairs.tsv", "en", target="ko"),
                                         options=TrainOptions(batch_size=16, max_length=MAX_LENGTH, seed=0),
                                         batches=8),
                     "task_rows": ROLES["train"][1], "pairs": ROLES["pairs"][1]}
        write_json(ANALYSES, {**saved, "gradients": gradients})
    test = read_table(DATA, ["en", "ko", "role"])
    en = [t for t, r in zip(test["en"], test["role"]) if r == "test"]
    ko = [t for t, r in zip(test["ko"], test["role"]) if r == "test"]
    base = EncodeOptions(max_length=MAX_LENGTH)
    retrieval = {"rows": len(en), "base": nn_p_at_1(embed(en, store=STUDY / "store.zarr", options=base),
                                                    embed(ko, store=STUDY / "store.zarr", options=base)), "align": {}}
    kept = saved.get("retrieval", {}).get("align", {})
    for r in read_results(RESULTS) if RESULTS.is_file() else []:
        if r.get("status") == "ok" and r["cell"]["method"] == "adapt-align":
            info, seed = r["provenance"]["sizes"]["adapt"], str(r["cell"]["seed"])
            if not (Path(info["dir"]) / "model").is_dir():  # a cache since cleared: its seed's figure as measured
                if seed in kept:
                    retrieval["align"][seed] = kept[seed]
                continue
            options = EncodeOptions(model=str(Path(info["dir"]) / "model"), max_length=MAX_LENGTH)
            store = Path(info["dir"]) / "store.zarr"
            retrieval["align"][seed] = nn_p_at_1(embed(en, store=store, options=options),
                                                 embed(ko, store=store, options=options))
    write_json(ANALYSES, {"gradients": gradients, "retrieval": retrieval})


def retrieval_after_align(retrieval: dict) -> Stat:
    """P@1 after `adapt align` over the seeds measured, widened by the sampling of the test rows every seed was
    measured on: the one figure the section and the README quote."""
    values = list(retrieval["align"].values())
    return over_seeds_and_rows(values, [proportion_half(v, retrieval["rows"]) for v in values])


def versus(records: list[dict], method: str, other: str, results: Path = RESULTS) -> Comparison:
    """`method` against `other` through the one verdict rule (`embedstore.study.verdicts`)."""
    return compare(select(records, method=method), select(records, method=other), rows=PredictionReader(results),
                   labels=(method, other))


def _cell(c: Comparison) -> str:
    """A verdict as a table cell, with the seeds it pairs over (the arms' seed counts differ)."""
    return f"{c.statement}: {c.describe()}; seeds {c.seed_list}" if not c.refused else c.statement


def _seeds_by_method(records: list[dict]) -> str:
    """Which seeds each method ran, e.g. "seeds 0-9 for english and langalign; 0-2 for adapt-lora": a study
    extended to more seeds for some methods only."""
    groups: dict[str, list[str]] = {}
    for method in METHODS:
        seeds = [r["cell"]["seed"] for r in select(records, method=method)]
        if seeds:
            groups.setdefault(seed_list(seeds), []).append(method)
    return "; ".join(f"{span} for {', '.join(methods[:-1])} and {methods[-1]}" if len(methods) > 1
                     else f"{span} for {methods[0]}" for span, methods in groups.items())


def _approximate_note(records: list[dict]) -> str:
    """Which methods' records predate per-row predictions (an earlier run kept beside a re-run), so that the
    intervals involving them are approximate; "" when every record has its predictions."""
    lacking = {m: [r["cell"]["seed"] for r in records if r["cell"]["method"] == m and "predictions" not in r]
               for m in METHODS}
    older = [m if len(seeds) == len(select(records, method=m)) else f"{m} (seed{'s' * (len(seeds) > 1)} {', '.join(map(str, sorted(seeds)))})"
             for m, seeds in lacking.items() if seeds]
    if not older:
        return ""
    which = "these records predate" if len(older) == len({r["cell"]["method"] for r in records}) else \
        f"the {', '.join(older)} records (an earlier run) predate"
    return (f" ({which} per-row predictions, so the intervals involving them are approximate: the seeds' interval "
            "plus the two accuracies' test-set noise taken as independent)")


def _seed_draws(records: list[dict], results: Path) -> str:
    """What English-only's and LangAlign's seed changes, which equal accuracies hide: they use every row, so only
    the folds of the head's cross-validated C search, which can tip a near-tie between two Cs either way, and at
    the same C only numerical noise (a re-run at one seed has flipped a row)."""
    reader, picks, apart, rows = PredictionReader(results), [], 0, 0
    for method, label in (("english", "English-only"), ("langalign", "LangAlign")):
        by_c: dict[float, list[dict]] = {}
        for r in select(records, method=method):
            by_c.setdefault(r["metrics"]["head"]["C"], []).append(r)
        picks.append(f"{label} " + " and ".join(
            f"{c:.3g} at seed{'s' * (len(group) > 1)} {seed_list([r['cell']['seed'] for r in group])}"
            for c, group in sorted(by_c.items())))
        for group in by_c.values():
            decoded = [np.asarray(p.labels)[p.predicted] for p in map(reader, group) if p is not None]
            for d in decoded[1:]:
                apart, rows = max(apart, int(np.sum(d != decoded[0]))), d.size
    return (f"the C it picked: {'; '.join(picks)}"
            + (f"; at the same C their runs differ in the predictions of at most {apart:,} of the {rows:,} test rows"
               if apart else ""))


def section(results: Path = RESULTS) -> list[str]:
    title = "## Adapting the encoder (LoRA, SimCSE, contrastive alignment), English → Korean topic"
    if not results.is_file():
        return [title, "", "Not run yet: `python docs/results_adapt.py --run`.", ""]
    records = [r for r in read_results(results) if r.get("status") == "ok"]
    acc: dict[str, list[float]] = {m: [] for m in METHODS}
    arms: dict[str, list[dict]] = {m: [] for m in METHODS}
    cost: dict[str, list[float]] = {}
    for r in sorted(records, key=lambda r: r["cell"]["seed"]):
        acc[r["cell"]["method"]].append(r["metrics"]["accuracy"])
        arms[r["cell"]["method"]].append(r)
        info = r["provenance"]["sizes"].get("adapt")
        if info and r["cell"]["method"] != "adapt-align+langalign":  # its encoder is adapt-align's, reused
            cost.setdefault(info["method"], []).append(info["wall_time_s"] / info["rows"] * 1000)
    sizes = next(r["provenance"]["sizes"] for r in records if r["cell"]["method"] == "langalign")
    heads = " and ".join(sorted({f"`{r['cell']['head']}`" for r in records}))
    lora_rows = next((r["provenance"]["sizes"]["adapt"]["rows"] for r in records
                      if r["cell"]["method"] == "adapt-lora"), None)
    lines = [title, "",
             f"`configs/shared-topic-ko-adapt.toml` and `configs/{SEEDS_CONFIG.name}` (more seeds of the methods the "
             f"headline verdicts rest on, into the same results file; `python docs/results_adapt.py --run`), "
             f"{len(records)} cells: "
             f"e5-small, a seeded subset of the en-ko help file ({sizes['n_train']} English task rows of fold 6, "
             f"{sizes['n_pairs']} translation pairs of fold 0, {sizes['n_test']} Korean test rows of fold 9, "
             f"single-app rows), max length {MAX_LENGTH}, one epoch per adaptation, seeds "
             f"{_seeds_by_method(records)} (a verdict pairs over the seeds both its arms ran, and names them). "
             "Each adapted "
             "encoder is trained once per seed and then used like the base model: its vectors go to their own "
             f"store key and the cached {heads} head (and, for align + LangAlign, the cached Procrustes aligner on "
             "the same pairs) run on them unchanged. adapt-lora, a LoRA-adapted encoder read by a new head on "
             "frozen vectors (not the paper's LoRA-TA, which trains on translated rows and predicts with its own "
             "head: its section follows): the paper's LoRA settings (r 8, alpha 8, dropout 0.1 on query "
             f"and key, batch 16, lr 1e-5, AdamW) on {lora_rows or 'the'} English task rows (of them a tenth held "
             f"out for validation), merged into the weights; SimCSE: the pairs' {2 * sizes['n_pairs']} texts, unpaired "
             "(temperature 0.05, lr 3e-5); align: InfoNCE both ways on the pairs (temperature 0.05, lr 2e-5). These "
             "sizes are far below the paper's (a 2-core CPU); read the table as a check of direction at small "
             "scale, not as the paper's setting.", "",
             "English-only and LangAlign use every row, so their seed draws only the folds of the head's "
             f"cross-validated C search ({_seed_draws(records, results)}); every accuracy's interval counts the test "
             "rows' sampling with the seeds' spread, and the adapted methods vary with the adaptation's seed too. The "
             "verdicts are the one rule of `embedstore.study.verdicts`: the paired difference over the same seeds "
             "with a 95% interval that counts test-set noise, \"clearly better\" when it excludes 0"
             + _approximate_note(records) + ".", "",
             "| method | accuracy (mean ± 95% CI over seeds and test rows) | vs English-only | vs LangAlign Procrustes |",
             "| --- | --- | --- | --- |"]
    vs_english = {m: versus(records, m, "english", results) for m in METHODS[1:] if acc[m] and acc["english"]}
    for method in METHODS:
        if not acc[method]:
            lines.append(f"| {method} | no finished cells | | |")
            continue
        vs = ["" if method not in vs_english else _cell(vs_english[method]),
              "" if method in ("english", "langalign") or not acc["langalign"]
              else _cell(versus(records, method, "langalign", results))]
        lines.append(f"| {method} | {format_stat(accuracy_stat(arms[method]))} (n={len(acc[method])}) | {vs[0]} | {vs[1]} |")
    same = [m for m in METHODS[2:] if m in vs_english and vs_english[m].identical]
    if same:
        steps = next((r["provenance"]["sizes"]["adapt"]["steps"] for r in records
                      if r["cell"]["method"] == "adapt-lora"), None)
        why = (f" (LoRA's B matrices start at zero, and the paper's lr 1e-5 for one epoch is {steps} small steps "
               "here)") if "adapt-lora" in same and steps else ""
        lines += ["", f"{', '.join(f'{m} (seeds {vs_english[m].seed_list})' for m in same)}: the same prediction as "
                  "English-only on every test row at every seed both ran; the adaptation moved the vectors too little "
                  f"to change the head's predictions{why}."]
    lines += ["", "### The paper's Table 5 claim, checked", ""]
    arms = (("adapt-lora", "LoRA", "adapt-lora (an adapted encoder read by a new head, not the paper's LoRA-TA: "
             "that is decided in its own section)"), ("adapt-simcse", "SimCSE", "SimCSE"))
    for method, claim, arm in arms:
        if acc[method] and acc["langalign"]:
            c = versus(records, method, "langalign", results)
            holds = ("not decided here, its head collapsed (degenerate: left out of verdicts)"
                     if c.refused and c.refused.startswith("degenerate") else "not decided here" if c.refused
                     else "does not hold here" if c.winner == method else "holds here")
            lines.append(f"- *{claim} is not clearly better than LangAlign*: {holds} ({arm} against LangAlign "
                         f"Procrustes: {_cell(c)}).")
        else:
            lines.append(f"- *{claim} is not clearly better than LangAlign*: not checked, no finished {method} cells.")
    if cost:
        lines += ["", "Adaptation wall time per 1k training rows in this sweep, start to end as recorded (under other "
                  "jobs' load, heavy for some cells, and the SimCSE runs of 2026-12-07 include the time they were "
                  "stopped while the machine was benchmarked: no speed; `benchmarks/adapt.py` measures the methods "
                  "side by side on an idle machine): "
                  + ", ".join(f"{m} {np.mean(v):.0f} s" for m, v in cost.items()) + "."]
    analyses_file = results.with_suffix(".analyses.json")  # ANALYSES for the study's own results
    if analyses_file.is_file():
        analyses = json.loads(analyses_file.read_text(encoding="utf-8"))
        ret = analyses["retrieval"]
        aligned = list(ret["align"].values())
        lines += ["", "### Retrieval P@1 English → Korean before and after `adapt align`", "",
                  f"On the {ret['rows']} test rows and their English originals (nearest neighbour by cosine among "
                  f"all of them): base e5-small {ret['base']:.3f}; after align "
                  + (f"{format_stat(retrieval_after_align(ret))} over {len(aligned)} seeds "
                     f"({seed_list(sorted(map(int, ret['align'])))}; the interval counts the test rows' sampling)."
                     if aligned else "not run.")]
        g = analyses["gradients"]
        lines += ["", "### Gradient cosine of the alignment and task objectives, per layer", "",
                  "`analyze encoder-gradients` on the base e5-small: cosine between the gradients of the task loss "
                  f"(a linear head fitted on the frozen vectors of the {g['task_rows']} English task rows) and of the "
                  f"alignment InfoNCE (the {g['pairs']} pairs) w.r.t. each layer's parameters, over {g['batches']} "
                  "minibatches of 16 "
                  "(eval mode).", "", "| parameters | mean | std | min | max |", "| --- | --- | --- | --- | --- |"]
        for group, s in [*g["layers"].items(), ("all", g["all_parameters"])]:
            lines.append(f"| {group} | {s['mean']:+.3f} | {s['std']:.3f} | {s['min']:+.3f} | {s['max']:+.3f} |")
        n = g["gradient_norms"]
        lines += ["", f"Mean gradient norms: task {n['task']['mean']:.3g}, alignment {n['alignment']['mean']:.3g}."]
    return lines + [""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", action="store_true", help="prepare the data, run the sweep and the analyses first")
    ap.add_argument("--analyses", action="store_true", help="only the gradient and retrieval analyses")
    ap.add_argument("--retrieval-only", action="store_true", help="with --analyses: keep the saved gradients")
    ap.add_argument("--workers", type=int, default=1, help="sweep processes (each gets cores / workers threads)")
    args = ap.parse_args()
    os.chdir(REPO)
    if args.run:
        run(args.workers)
    elif args.analyses:
        analyses(args.retrieval_only)
    print("\n".join(section()))


if __name__ == "__main__":
    main()
