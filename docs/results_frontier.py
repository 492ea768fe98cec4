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

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from embedstore.base.stats import mean_ci
from embedstore.study.cells import no_pair_aligners
from embedstore.study.sweep import read_results

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
#: The full study (help ko/ja/zh, 2k task rows) and the same design on the bundled 3k-row en-ko sample.
STUDIES = {"frontier": "LibreOffice help (../shared/data), 2k English task rows",
           "frontier-sample": "the bundled 3k-row en-ko help sample (embedstore/data), every English task row of "
                              "its folds 6-7"}
LANGUAGES = {"ko": "Korean", "ja": "Japanese", "zh": "Chinese"}
#: Families for the closing table: the best member of each is reported.
FAMILIES = {"trained (FC, AE, residual MLP)": ("fc", "ae", "resmlp"), "closed-form on pairs (linear, Procrustes, RCSLS)":
            ("linear", "procrustes", "rcsls"), "self-learning (unsupervised at 0, seeded above)":
            ("selflearn", "selflearn_seeded"), "monolingual statistics (mean shift, whitening, LSAR, LIR)":
            ("meanshift", "whiten", "lsar", "lir")}
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
                            "target_texts": len(tr_texts), **precision(mined, en_texts, tr_texts, truth)})
    mining_results(study).write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def _records(study: str) -> list[dict]:
    path = DOCS / "results" / f"{study}.jsonl"
    if not path.is_file():
        return []
    return [r for r in read_results(path) if r.get("kind", "cell") == "cell" and r["status"] == "ok"]


def _budget(record: dict) -> int | None:
    """A cell's pair budget: 0 for zero-pair aligners, the true pairs it was given otherwise."""
    cell = record["cell"]
    return 0 if cell["aligner"] in ZERO_PAIR else record["provenance"]["sizes"]["n_pairs"]


def _summary(values: list[float]) -> tuple[float, float]:
    mean, half, _ = mean_ci(values)
    return mean, (0.0 if math.isnan(half) else half)


def collect(records: list[dict], lang: str) -> tuple[dict, dict, dict]:
    """Per language: the reference accuracies, and per (aligner, budget label) the accuracy and P@1 lists."""
    refs: dict[str, list[float]] = defaultdict(list)
    cells: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    budgets: dict[str, list[int]] = defaultdict(list)
    for r in records:
        cell = r["cell"]
        if cell["language"] != lang:
            continue
        if cell["method"] in ("english", "native"):
            refs[cell["method"]].append(r["metrics"]["accuracy"])
            continue
        label = "0" if cell["aligner"] in ZERO_PAIR else (cell["pair_size"] and str(cell["pair_size"])) or "all"
        group = cells[(cell["aligner"], label)]
        group["accuracy"].append(r["metrics"]["accuracy"])
        diag = r["metrics"].get("aligner", {})
        for key in ("p1_aligned", "p1_aligned_csls", "p1_raw", "p1_raw_csls"):
            if key in diag:
                group[key].append(diag[key])
        group["collapsed"].append(float(diag.get("collapse_check", {}).get("collapsed", False)))
        budgets[label].append(_budget(r))
    return refs, cells, {label: int(np.mean(v)) for label, v in budgets.items()}


def plot(lang: str, refs: dict, cells: dict, budgets: dict, out: Path, caption: str) -> None:
    fig = Figure(figsize=(11, 4.2))
    FigureCanvasAgg(fig)
    panels = [("accuracy", "task accuracy on native test"), ("p1_aligned_csls", "EN→TR P@1 (CSLS), held-out pairs"),
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
            for ref, colour in (("english", "grey"), ("native", "black")):
                if refs.get(ref):
                    ax.axhline(np.mean(refs[ref]), color=colour, linestyle="--", linewidth=1, label=f"{ref} head")
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
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def _fmt(values: list[float]) -> str:
    if not values:
        return "–"
    mean, half = _summary(values)
    return f"{mean:.3f} ± {half:.3f}"


def _best(cells: dict, members: tuple[str, ...], label: str) -> tuple[str, dict] | None:
    found = [(np.mean(g["accuracy"]), a, g) for (a, lab), g in cells.items() if a in members and lab == label]
    if not found:
        return None
    _, aligner, group = max(found, key=lambda t: t[0])
    return aligner, group


def _versus(cells: dict, budgets: dict, new: str, old: str) -> list[str]:
    """One bullet: `new` against `old` on the same pairs at every budget both ran (accuracy and P@1 NN deltas,
    and whether the accuracy intervals separate), the measurement that decides whether `new` earns its place."""
    parts = []
    for label in sorted({lab for a, lab in cells if a == new and (old, lab) in cells}, key=lambda lab: budgets[lab]):
        a, b = cells[(new, label)], cells[(old, label)]
        (ma, ha), (mb, hb) = _summary(a["accuracy"]), _summary(b["accuracy"])
        apart = " (apart)" if abs(ma - mb) > ha + hb else ""
        p1 = np.mean(a.get("p1_aligned", [np.nan])) - np.mean(b.get("p1_aligned", [np.nan]))
        parts.append(f"{budgets[label]:,}: {ma - mb:+.3f}{apart} / {p1:+.3f}")
    if not parts:
        return []
    return [f"- {new} against {old} on the same pairs (Δ accuracy / Δ P@1 NN, per pair budget): " + "; ".join(parts)
            + "."]


def section() -> list[str]:
    lines = ["## The frontier: from zero translation pairs to all of them (help topic)", ""]
    for study, caption in STUDIES.items():
        lines += study_section(study, caption)
    return lines


def study_section(study: str, caption: str) -> list[str]:
    records = _records(study)
    title = f"### {caption[0].upper() + caption[1:]}"
    if not records:
        return [title, "", f"Not run yet: `python docs/results_frontier.py --run --study {study}`.", ""]
    heads = sorted({r["cell"]["head"] for r in records})
    lines = [title, "",
             f"`configs/{study}.toml`: every paired aligner at each pair budget of folds 0-3, and the aligners that "
             "need no pairs fitted on unpaired texts (the English ones from one half of the pair rows and the target "
             "ones from the other half, so no translation of a source text is even present; shown at 0 pairs). "
             f"The {' and '.join(f'`{h}`' for h in heads)} head on the English rows; accuracy on the "
             "native test rows (folds 8-9), EN→TR P@1 of the aligned English test rows among all their "
             "translations (NN and CSLS); mean ± 95% CI over 3 seeds. `selflearn_seeded` grows a dictionary from "
             "its budget of pairs plus unpaired texts of the rest of the fit rows.", ""]
    for lang, language in LANGUAGES.items():
        refs, cells, budgets = collect(records, lang)
        if not cells or not refs.get("english") or not refs.get("native"):
            continue  # a study half run: nothing to compare with yet
        png = DOCS / "results" / study / f"{study}-{lang}.png"
        plot(lang, refs, cells, budgets, png, caption)
        english, native = np.mean(refs["english"]), np.mean(refs["native"])
        half = english + (native - english) / 2
        lines += [f"#### English → {language}", "",
                  f"English-only head: {_fmt(refs['english'])}; native head: {_fmt(refs['native'])}; half the gap: "
                  f"{half:.3f}.", "", f"![{study}-{lang}](results/{study}/{png.name})", "",
                  "| aligner | pairs | accuracy | P@1 NN | P@1 CSLS | collapsed (of seeds) |", "|---|---|---|---|---|---|"]
        order = sorted(cells, key=lambda k: (budgets[k[1]], k[0]))
        for aligner, label in order:
            g = cells[(aligner, label)]
            lines.append(f"| {aligner} | {budgets[label]:,} | {_fmt(g['accuracy'])} | {_fmt(g.get('p1_aligned', []))} "
                         f"| {_fmt(g.get('p1_aligned_csls', []))} | {int(sum(g['collapsed']))}/{len(g['collapsed'])} |")
        recovered = sorted((budgets[label], -np.mean(g["accuracy"]), a) for (a, label), g in cells.items()
                           if np.mean(g["accuracy"]) >= half)  # the cheapest budget, its best aligner first
        zero = [(a, g) for (a, label), g in cells.items() if label == "0"]
        beats = []
        for aligner, g in zero:
            (m, h), (em, eh) = _summary(g["accuracy"]), _summary(refs["english"])
            if m - h > em + eh:
                beats.append(f"{aligner} ({m:.3f} vs {em:.3f}, intervals apart)")
            elif m > em:
                beats.append(f"{aligner} only weakly ({m:.3f} vs {em:.3f}, intervals overlap)")
        cheapest = (f"{recovered[0][0]:,} pairs ({recovered[0][2]})" if recovered
                    else "none of the budgets run")
        lines += ["", f"- Cheapest budget at which some aligner recovers half of the English→native gap: **{cheapest}**.",
                  "- Zero-pair methods above English-only: " + ("**" + "; ".join(beats) + "**" if beats else
                                                                "**none**") + ".", *_versus(cells, budgets, "resmlp", "fc"), ""]
        lines += ["Best of each family at 0, 500 and all pairs (accuracy / P@1 NN / P@1 CSLS):", "",
                  "| family | 0 pairs | 500 pairs | all pairs |", "|---|---|---|---|"]
        for family, members in FAMILIES.items():
            row = [family]
            for label in ("0", "500", "all"):
                best = _best(cells, members, label)
                row.append("–" if best is None else f"{best[0]}: {np.mean(best[1]['accuracy']):.3f} / "
                           f"{np.mean(best[1].get('p1_aligned', [np.nan])):.3f} / "
                           f"{np.mean(best[1].get('p1_aligned_csls', [np.nan])):.3f}")
            lines.append("| " + " | ".join(row) + " |")
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
    print("\n".join(section()))
