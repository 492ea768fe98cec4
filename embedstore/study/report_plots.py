"""A sweep report's figures (matplotlib's object API on the Agg canvas: no global state, no display needed).
"""
from __future__ import annotations

import math
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from embedstore.study.cells import format_size
from embedstore.study.methods import REFERENCE_METHODS
from embedstore.study.report_data import COSINE_FIELDS, Stat, Table, size_key


_COSINE_LABELS = {
    "en_tr": "English vs translation",
    "aligned_tr": "aligned English vs translation",
    "aligned_en": "aligned English vs English",
    "shuffled": "aligned English vs shuffled translation",
}
# reference methods (`methods.REFERENCE_METHODS`: what a transfer method must beat, or the in-language ceiling)
# are drawn as lines, not bars
_REFERENCE_STYLES = {"english": ("black", "--"), "native": ("tab:green", "-"), "translated": ("tab:purple", ":"),
                     "translate-test": ("tab:brown", "-.")}


def plot_scores(table: Table, path: Path, title: str, metric: str) -> Path:
    """One panel per task size: a horizontal bar (mean ± 95% CI) per transfer method, with English-only and the
    in-language baselines as vertical reference lines, so each method reads against what it must beat (one
    line plot of every series was unreadable: 14 lines, their intervals overlapping)."""
    sizes = sorted({size for stats in table.values() for size in stats}, key=size_key)
    bars = [row for row in table if row.method not in REFERENCE_METHODS]
    refs = [row for row in table if row.method in REFERENCE_METHODS]
    show_recipe = len({row.recipe for row in table}) > 1
    show_head = len({row.head for row in table}) > 1
    height = max(2.5, 0.32 * len(bars) + 1.5)
    figure = Figure(figsize=(4.2 * len(sizes) + 2.5, height))
    FigureCanvasAgg(figure)
    axes_list = figure.subplots(1, len(sizes), sharey=True, squeeze=False)[0]
    colors = {"langalign": "tab:blue", "reverse": "tab:orange", "ablation-share": "tab:gray",
              "ablation-omit": "tab:pink", "langalign-e2e": "tab:olive"}
    labels = [row.label(show_recipe, show_head) for row in bars]
    for axes, size in zip(axes_list, sizes):
        ys = list(range(len(bars)))[::-1]
        for y, row in zip(ys, bars):
            stat = table[row].get(size)
            if stat is None:
                continue
            err = 0.0 if math.isnan(stat.ci95) else stat.ci95
            axes.barh(y, stat.mean, xerr=err, color=colors.get(row.method, "grey"), alpha=0.8, capsize=2)
        for row in refs:
            stat = table[row].get(size)
            if stat is None:
                continue
            color, style = _REFERENCE_STYLES[row.method]
            axes.axvline(stat.mean, color=color, linestyle=style, linewidth=1.5,
                         label=f"{row.label(show_recipe, show_head)} {stat.mean:.3f}")
            if not math.isnan(stat.ci95):
                axes.axvspan(stat.mean - stat.ci95, stat.mean + stat.ci95, color=color, alpha=0.08)
        axes.set_yticks(ys, labels)
        axes.set_title(f"{format_size(size)} task rows")
        axes.set_xlabel(metric)
        axes.grid(axis="x", alpha=0.3)
        low = min((s.mean - (0 if math.isnan(s.ci95) else s.ci95)) for st in table.values() for k, s in st.items()
                  if k == size)
        high = max((s.mean + (0 if math.isnan(s.ci95) else s.ci95)) for st in table.values() for k, s in st.items()
                   if k == size)
        axes.set_xlim(max(0.0, low - 0.05), min(1.0, high + 0.03))
        if refs:
            axes.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.1 - 0.6 / height), ncol=2,
                        frameon=False)
    figure.suptitle(title)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    return path


def plot_cosine(groups: dict[str, dict[str, Stat]], path: Path) -> Path:
    """Grouped bars: per group, the four cosine measures with CI error bars."""
    figure = Figure(figsize=(max(6.0, 1.6 * len(groups) + 2), 4.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    width = 0.8 / len(COSINE_FIELDS)
    for offset, name in enumerate(COSINE_FIELDS):
        stats = [groups[label][name] for label in groups]
        xs = [i + (offset - (len(COSINE_FIELDS) - 1) / 2) * width for i in range(len(groups))]
        errors = None if all(s.n == 1 for s in stats) else [0.0 if math.isnan(s.ci95) else s.ci95 for s in stats]
        axes.bar(xs, [s.mean for s in stats], width, yerr=errors, capsize=3, label=_COSINE_LABELS[name])
    axes.set_xticks(range(len(groups)), list(groups))
    axes.set_ylabel("cosine similarity")
    axes.set_title("Cosine similarity of matched pairs")
    axes.grid(axis="y", alpha=0.3)
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    figure.savefig(path, dpi=120, bbox_inches="tight")
    return path
