"""The frontier study's section of docs/results.md (issue 14): from zero pairs to all pairs, per language.

    python docs/results_frontier.py --run    # run or resume the frontier sweep and the mining measurement
    python docs/make_results.py [--run]      # the whole page, this section included

Reads `docs/results/frontier.jsonl` (`configs/frontier.toml`: paired aligners at each pair budget, zero-pair
aligners on unpaired texts only, shown at budget 0, English-only and native heads), writes one plot per language
and returns the section's markdown lines. Every figure and verdict is computed from the records.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from repo_python import use_project_python

use_project_python()

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from embedstore.base.stats import mean_ci
from embedstore.study.cells import no_pair_aligners
from embedstore.study.predictions import PredictionReader
from embedstore.study.report_data import accuracy_stat, over_seeds_and_rows, proportion_half
from embedstore.study.report_markdown import format_stat
from embedstore.study.report_plots import Plot, data_digest
from embedstore.study.sweep import read_results
from embedstore.study.verdicts import Comparison, compare, select

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
#: The full study (help ko/ja/zh, 2k task rows) and the same design on the bundled 3k-row en-ko sample.
STUDIES = {"frontier": "LibreOffice help (../shared/data), 2k English task rows",
           "frontier-sample": "the bundled 3k-row en-ko help sample (embedstore/data), every English task row of "
                              "its folds 6-7"}
LANGUAGES = {"ko": "Korean", "ja": "Japanese", "zh": "Chinese"}
#: The comparisons the section decides, named before the results (never the best of several arms by test mean):
#: (arm, reference, budgets as labels). The claims of earlier versions of the page, each against its rival.
NAMED = (("resmlp", "fc", ("100", "500", "1000", "all")), ("procrustes", "fc", ("500", "all")),
         ("selflearn_seeded", "resmlp", ("500",)), ("selflearn_seeded", "procrustes", ("500",)),
         ("fc", "resmlp", ("all",)), ("fc", "linear", ("all",)))
ZERO_PAIR = no_pair_aligners()
#: Where budget 0 sits on the log axis (a log scale has no 0), labelled "0".
ZERO_X = 30
MINING_PAIRS = {"frontier": REPO.parent / "shared" / "data" / "parallel" / "libreoffice_help.en-{lang}.tsv",
                "frontier-sample": REPO / "embedstore" / "data" / "libreoffice_help.en-{lang}.sample.tsv"}


def mining_results(study: str) -> Path:
    return DOCS / "results" / f"{study}-mining.jsonl"


def run(study: str = "frontier") -> None:
    subprocess.run([sys.executable, "-m", "embedstore", "sweep", str(REPO / "configs" / f"{study}.toml")], check=False)
    run_mining(study)


def run_mining(study: str = "frontier") -> None:
    """Precision of `mine` on held-out help data: folds 8-9 of each language, the two sides shuffled
    independently (mining never sees row order anyway), every mutual pair and those with margin ≥ 1.06."""
    from embedstore.analysis.mining import mine, precision
    from embedstore.base.provenance import file_identity, stamp
    from embedstore.data.tasks import Source, load_rows
    from embedstore.encoding.encode import embed

    records = []
    for lang in LANGUAGES if study == "frontier" else ("ko",):
        path = Path(str(MINING_PAIRS[study]).format(lang=lang))
        rows = load_rows(Source(file=path, text="en", target=lang, where=(("fold", ("8", "9")),)))
        truth: dict[str, set[str]] = defaultdict(set)
        for en, tr in zip(rows.texts, rows.targets):
            truth[en].add(tr)
        rng = np.random.default_rng(0)
        en_texts = [rows.texts[i] for i in rng.permutation(len(rows.texts))]
        tr_texts = [rows.targets[i] for i in rng.permutation(len(rows.targets))]
        en_texts, tr_texts = list(dict.fromkeys(en_texts)), list(dict.fromkeys(tr_texts))
        vectors = embed(en_texts + tr_texts, store=REPO / "cache" / "store.zarr")
        for threshold in (None, 1.06):
            mined = mine(vectors[:len(en_texts)], vectors[len(en_texts):], min_margin=threshold)
            records.append({"language": lang, "min_margin": threshold, "source_texts": len(en_texts),
                            "target_texts": len(tr_texts), **precision(mined, en_texts, tr_texts, truth),
                            "provenance": {**stamp(), "pairs": file_identity(path)}})
    mining_results(study).write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def _records(study: str, results_dir: Path) -> list[dict]:
    path = results_dir / f"{study}.jsonl"
    if not path.is_file():
        return []
    return select(read_results(path))


def _budget(record: dict) -> int | None:
    """A cell's pair budget: 0 for zero-pair aligners, the true pairs it was given otherwise."""
    cell = record["cell"]
    return 0 if cell["aligner"] in ZERO_PAIR else record["provenance"]["sizes"]["n_pairs"]


def _summary(values: list[float]) -> tuple[float, float]:
    mean, half, _ = mean_ci(values)
    return mean, (0.0 if math.isnan(half) else half)


def collect(records: list[dict], lang: str) -> tuple[dict, dict, dict]:
    """Per language: the reference records, and per (aligner, budget label) the accuracy and P@1 lists (and the
    records, whose test rows an accuracy's interval counts)."""
    refs: dict[str, list[dict]] = defaultdict(list)
    cells: dict[tuple[str, str], dict[str, list]] = defaultdict(lambda: defaultdict(list))
    budgets: dict[str, list[int]] = defaultdict(list)
    for r in records:
        cell = r["cell"]
        if cell["language"] != lang:
            continue
        if cell["method"] in ("english", "native"):
            refs[cell["method"]].append(r)
            continue
        label = "0" if cell["aligner"] in ZERO_PAIR else (cell["pair_size"] and str(cell["pair_size"])) or "all"
        group = cells[(cell["aligner"], label)]
        group["accuracy"].append(r["metrics"]["accuracy"])
        group["records"].append(r)
        diag = r["metrics"].get("aligner", {})
        for key in ("p1_aligned", "p1_aligned_csls", "p1_raw", "p1_raw_csls"):
            if key in diag:
                group[key].append(diag[key])
        group["pairs"].append(diag.get("cosine", {}).get("rows"))  # the held-out pairs its P@1 is over
        group["collapsed"].append(float(diag.get("collapse_check", {}).get("collapsed", False)))
        budgets[label].append(_budget(r))
    return refs, cells, {label: int(np.mean(v)) for label, v in budgets.items()}


def figure(lang: str, refs: dict, cells: dict, budgets: dict, caption: str) -> Figure:
    fig = Figure(figsize=(11, 4.2))
    FigureCanvasAgg(fig)
    panels = [("accuracy", "task accuracy on target-language test"), ("p1_aligned_csls", "EN→TR P@1 (CSLS), held-out pairs"),
              ("p1_aligned", "EN→TR P@1 (NN), held-out pairs")]
    aligners = sorted({a for a, _ in cells}, key=lambda a: (a in ZERO_PAIR, a))
    colours = matplotlib.colormaps["tab20"].colors  # 11 aligners: the default 10-colour cycle would repeat one
    for i, (metric, title) in enumerate(panels):
        ax = fig.add_subplot(1, 3, i + 1)
        for colour, aligner in zip(colours[::2] + colours[1::2], aligners):
            points = sorted((budgets[label] or ZERO_X, *_summary(group[metric]))
                            for (a, label), group in cells.items() if a == aligner and group.get(metric))
            if not points:
                continue
            xs, ys, hs = zip(*points)
            style = dict(marker="s", linestyle="none") if aligner in ZERO_PAIR else dict(marker="o")
            ax.errorbar(xs, ys, yerr=hs, label=aligner, color=colour, capsize=2, linewidth=1, markersize=4, **style)
        if metric == "accuracy":
            # the config's `native` rows are the human translation of the English training rows: named as such
            for ref, colour, shown in (("english", "grey", "English rows"), ("native", "black", "translated rows")):
                if refs.get(ref):
                    ax.axhline(np.mean(refs[ref]), color=colour, linestyle="--", linewidth=1, label=f"head on {shown}")
        else:
            raw = [v for (_, _), g in cells.items() for v in g.get(metric.replace("aligned", "raw"), [])]
            if raw:
                ax.axhline(np.mean(raw), color="grey", linestyle="--", linewidth=1, label="no aligner")
        ax.set_xscale("log")
        ticks = [ZERO_X] + sorted(b for b in set(budgets.values()) if b)
        ax.set_xticks(ticks, ["0"] + [f"{b:,}" for b in ticks[1:]], rotation=45, fontsize=7)
        ax.minorticks_off()
        ax.set_xlabel("translation pairs")
        ax.set_title(title, fontsize=9)
    fig.axes[0].legend(fontsize=6, ncol=2)
    fig.suptitle(f"English → {LANGUAGES[lang]}: {caption}; mean ± 95% CI over seeds", fontsize=9)
    fig.tight_layout()
    return fig


def plots(results_dir: Path = DOCS / "results", out: Path = DOCS / "results") -> list[Plot]:
    """The figure of each language `section` shows, named under `out/<study>/` with a digest of its data: drawn
    by the page, checked without drawing by `make_results.py --check`."""
    named = []
    for study, caption in STUDIES.items():
        records = _records(study, results_dir)
        for lang in LANGUAGES:
            refs, cells, budgets = collect(records, lang)
            if _shown(refs, cells):
                plotted_refs = {method: [r["metrics"]["accuracy"] for r in rs] for method, rs in refs.items()}
                plotted = {key: {k: v for k, v in group.items() if k != "records"} for key, group in cells.items()}
                data = (lang, plotted_refs, plotted, budgets, caption)
                named.append(Plot(out / study / _png(study, lang), data_digest("frontier", *data),
                                  lambda data=data: figure(*data), 110))
    return named


def _png(study: str, lang: str) -> str:
    return f"{study}-{lang}.png"


def _shown(refs: dict, cells: dict) -> bool:
    """Whether a language's part of a study is on the page: half run, it has nothing to compare with yet."""
    return bool(cells and refs.get("english") and refs.get("native"))


def _fmt(values: list[float], pairs: list[int | None]) -> str:
    """A P@1's mean ± 95% interval, never "± 0.000" (`format_stat`): measured on the same held-out `pairs` at every
    seed, so those pairs' sampling is counted with the seeds' spread."""
    if not values:
        return "–"
    return format_stat(over_seeds_and_rows(values, [proportion_half(v, n) for v, n in zip(values, pairs)]))


def arm(records: list[dict], lang: str, aligner: str | None, label: str | None = None) -> list[dict]:
    """One arm's records: a reference method (aligner None: `label` is the method) or an aligner at a budget."""
    if aligner is None:
        return select(records, language=lang, method=label)
    pair_size = None if label in ("0", "all") else int(label)
    return select(records, language=lang, method="langalign", aligner=aligner, pair_size=pair_size)


def verdict_text(c: Comparison) -> str:
    """A comparison as the page writes it: the verdict, its figures, and what its notes name (budgets, unpaired
    text, seeds left out); the note that older records did not record their draws is said once per page."""
    notes = [n for n in c.notes if not n.startswith("training draws not recorded")]
    return (c.statement if c.refused else f"**{c.statement}** ({c.describe()})") + "".join(f"; {n}" for n in notes)


def section(results_dir: Path = DOCS / "results") -> list[str]:
    """The section's text; its figures are `plots`'."""
    lines = ["## The frontier: from zero translation pairs to all of them (help topic)", ""]
    for study, caption in STUDIES.items():
        lines += study_section(study, caption, results_dir)
    return lines


def study_section(study: str, caption: str, results_dir: Path = DOCS / "results") -> list[str]:
    records = _records(study, results_dir)
    rows = PredictionReader(results_dir / f"{study}.jsonl")
    title = f"### {caption[0].upper() + caption[1:]}"
    if not records:
        return [title, "", f"Not run yet: `python docs/results_frontier.py --run --study {study}`.", ""]
    heads = sorted({r["cell"]["head"] for r in records})
    lines = [title, "",
             f"`configs/{study}.toml`: every paired aligner at each pair budget of folds 0-3, and the aligners that "
             "need no pairs fitted on unpaired texts (the English ones from one half of the pair rows and the target "
             "ones from the other half, so no translation of a source text is even present; shown at 0 pairs). "
             f"The {' and '.join(f'`{h}`' for h in heads)} head on the English rows; accuracy on the "
             "target-language test rows (folds 8-9: the human translations of English help paragraphs), EN→TR P@1 "
             "of the aligned English test rows among all their translations (NN and CSLS); mean ± 95% interval over "
             f"{len({r['cell']['seed'] for r in records})} seeds that also counts the sampling of the rows measured "
             "on (an accuracy's test rows; a P@1's held-out pairs, the same at every seed), so a value the seeds "
             "agree on still has its rows' interval, never ± 0. The reference called `native` in the config is a head trained on the human translation of the "
             "same English training rows (\"translated rows\" below), not on independent native data. "
             "`selflearn_seeded` grows a dictionary from its budget of pairs plus unpaired texts of the rest of the "
             "fit rows. Verdicts: the one rule of `embedstore.study.verdicts` (paired over the same seeds, 95% "
             "interval counting test-set noise; approximate where records predate per-row predictions); the "
             "comparisons are named in `docs/results_frontier.py` (`NAMED`), not picked as the best by test mean. "
             "Findings on this corpus and this model (e5-small) only.", ""]
    for lang, language in LANGUAGES.items():
        refs, cells, budgets = collect(records, lang)
        if not _shown(refs, cells):
            continue
        english, native = (np.mean([r["metrics"]["accuracy"] for r in refs[m]]) for m in ("english", "native"))
        half_gap = (native - english) / 2
        lines += [f"#### English → {language}", "",
                  f"English-only head: {format_stat(accuracy_stat(refs['english']))}; head on the translated "
                  f"training rows: {format_stat(accuracy_stat(refs['native']))}; half the gap: {english + half_gap:.3f}.", "",
                  f"![{study}-{lang}](results/{study}/{_png(study, lang)})", "",
                  "| aligner | pairs | accuracy | P@1 NN | P@1 CSLS | collapsed (of seeds) |", "|---|---|---|---|---|---|"]
        order = sorted(cells, key=lambda k: (budgets[k[1]], k[0]))
        for aligner, label in order:
            g = cells[(aligner, label)]
            lines.append(f"| {aligner} | {budgets[label]:,} | {format_stat(accuracy_stat(g['records']))} "
                         f"| {_fmt(g.get('p1_aligned', []), g['pairs'])} | {_fmt(g.get('p1_aligned_csls', []), g['pairs'])} | {int(sum(g['collapsed']))}/{len(g['collapsed'])} |")
        english_arm = arm(records, lang, None, "english")
        versus_english = {key: compare(arm(records, lang, *key), english_arm, rows=rows, labels=(key[0], "english"))
                          for key in cells}
        recovered = sorted((budgets[label], a) for (a, label), c in versus_english.items()
                           if not c.refused and c.low >= half_gap)  # its whole interval above half the gap
        cheapest = (f"{recovered[0][0]:,} pairs ({', '.join(a for b, a in recovered if b == recovered[0][0])})"
                    if recovered else "none of the budgets run")
        lines += ["", "- Cheapest budget at which an aligner clearly recovers half of the gap between English-only "
                  "and the translated-rows head (the lower end of its paired interval over English-only at least half "
                  f"the gap, {half_gap:+.3f}): **{cheapest}**.",
                  "- Zero-pair methods against English-only: " + "; ".join(
                      f"{a}: {verdict_text(c)}" for (a, label), c in sorted(versus_english.items()) if label == "0")
                  + "."]
        for new, old, labels in NAMED:
            parts = [f"{budgets[label]:,} pairs: {verdict_text(compare(arm(records, lang, new, label), arm(records, lang, old, label), rows=rows, labels=(new, old)))}"
                     for label in labels if (new, label) in cells and (old, label) in cells]
            if parts:
                lines.append(f"- {new} against {old}: " + "; ".join(parts) + ".")
        p1 = {a: np.mean(g["p1_aligned"]) for (a, label), g in cells.items() if label == "all" and g.get("p1_aligned")}
        if p1:
            lines.append("- EN→TR P@1 (NN) with all pairs: " + ", ".join(f"{a} {v:.3f}" for a, v in sorted(
                p1.items(), key=lambda kv: -kv[1])) + ".")
        lines.append("")
    lines += mining_lines(study)
    return lines


def mining_lines(study: str) -> list[str]:
    if not mining_results(study).is_file():
        return []
    records = [json.loads(line) for line in mining_results(study).read_text(encoding="utf-8").splitlines()]
    lines = ["#### Mined pairs (`embedstore mine`), precision against the true pairs", "",
             "Held-out help rows (folds 8-9), the English and target sides shuffled independently; mutual best "
             "candidates by ratio margin (k = 4).", "",
             "| language | texts (en / target) | margin ≥ | mined | correct | precision | recall |",
             "|---|---|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r['language']} | {r['source_texts']:,} / {r['target_texts']:,} | {r['min_margin'] or 'any'} "
                     f"| {r['mined']:,} | {r['correct']:,} | {r['precision']:.3f} | {r['recall']:.3f} |")
    return lines + [""]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", action="store_true", help="run or resume the frontier sweeps and the mining first")
    parser.add_argument("--mining-only", action="store_true", help="only (re)measure mining precision")
    parser.add_argument("--study", choices=list(STUDIES), default="frontier")
    args = parser.parse_args()
    if args.mining_only:
        run_mining(args.study)
    elif args.run:
        run(args.study)
    for plot in plots():
        plot.draw()
    print("\n".join(section()))
