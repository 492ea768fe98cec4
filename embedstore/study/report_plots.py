"""A sweep report's figures (matplotlib's object API on the Agg canvas: no global state, no display needed).

Every figure is a dot per mean with its 95 % interval as a line, on one axis shared by all its panels, with a
legend and a caption line saying what the dots and intervals are: bars from 0 spent most of the width on the
range no method reaches, panels with their own axes could not be compared at a glance, and a 0-1 cosine axis made
mean-shift look nearly as good as Procrustes. `*_figure` builds a figure (what tests inspect); `plot_*` names it
(a `Plot`: its file, a digest of its data, and how to draw it), which a report draws or only checks.
"""
from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.transforms import offset_copy
from PIL import Image, UnidentifiedImageError

from embedstore.base.atomic import write_bytes

from embedstore.study.cells import format_size
from embedstore.study.methods import PAIR_METHODS, REFERENCE_METHODS, TABLE
from embedstore.study.report_data import COSINE_FIELDS, RETRIEVAL_FIELDS, Row, Stat, Table, size_key

_COSINE_LABELS = {
    "en_tr": "English vs translation",
    "aligned_tr": "aligned English vs translation",
    "aligned_en": "aligned English vs English",
    "shuffled": "aligned English vs shuffled translation",
}
_RETRIEVAL_LABELS = {"p1_raw": "raw English → translation", "p1_aligned": "aligned English → translation",
                     "p1_head_space": "aligned English → aligned translation (the head's space)"}
# reference methods (`methods.REFERENCE_METHODS`: what a transfer method must beat, or the in-language ceiling)
# are drawn as lines across every panel (in their `Method.line` style), not as dots


def _color(method: str) -> str:
    return TABLE[method].color if method in TABLE else "grey"


def _half(stat: Stat) -> float:
    return 0.0 if math.isnan(stat.ci95) else stat.ci95


#: What a scores figure's interval is (`report_data.summarise`) and what a cosine figure's is (`cosine_groups`).
_SEEDS_INTERVAL = "t-distribution over seeds; a single seed has none"
_PAIRS_INTERVAL = ("the seeds' t-interval widened by the held-out pairs' sampling over rows; "
                  "a dot without one is descriptive: its records carry no per-row spread")


def caption(stats: list[Stat], what: str, references: bool = False, interval: str = _SEEDS_INTERVAL) -> str:
    """The line under a figure: what a dot and an interval are, over how many seeds."""
    seeds = sorted({s.n for s in stats})
    count = f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]}"
    return (f"Dots: mean {what} over {count} seeds; lines: 95 % interval of that mean ({interval})."
            + (" Reference methods are vertical lines, the shaded band their interval." if references else ""))


def row_label(row: Row, show_recipe: bool, show_head: bool) -> str:
    """e.g. "langalign fc · 5k pairs": the pair budget named as one."""
    parts = [" ".join([row.method, *([row.aligner] if row.aligner else [])])]
    if row.method in PAIR_METHODS:
        parts.append(f"{format_size(row.pair_size)} pairs")
    if show_recipe:
        parts.append(f"recipe={row.recipe}")
    if show_head:
        parts.append(f"head={row.head}")
    return " · ".join(parts)


def _limits(stats: list[Stat], floor: float = 0.0, ceiling: float = 1.0) -> tuple[float, float]:
    """The shared axis: every dot and interval in view, a margin of 5 % of the span, within [floor, ceiling]."""
    low = min(s.mean - _half(s) for s in stats)
    high = max(s.mean + _half(s) for s in stats)
    margin = max(0.05 * (high - low), 0.005)
    return max(floor, low - margin), min(ceiling, high + margin)


def scores_figure(table: Table, title: str, metric: str) -> Figure:
    """One panel per task size, one shared x axis: a dot (mean) and its interval per transfer method, English-only
    and the in-language baselines as vertical reference lines, so each method reads against what it must beat."""
    sizes = sorted({size for stats in table.values() for size in stats}, key=size_key)
    dots = [row for row in table if row.method not in REFERENCE_METHODS]
    refs = [row for row in table if row.method in REFERENCE_METHODS]
    show_recipe = len({row.recipe for row in table}) > 1
    show_head = len({row.head for row in table}) > 1
    height = max(2.8, 0.32 * len(dots) + 2.2)
    figure = Figure(figsize=(4.2 * len(sizes) + 3.0, height))
    FigureCanvasAgg(figure)
    axes_list = figure.subplots(1, len(sizes), sharex=True, sharey=True, squeeze=False)[0]
    every = [stat for stats in table.values() for stat in stats.values()]
    ys = list(range(len(dots)))[::-1]
    for axes, size in zip(axes_list, sizes):
        for y, row in zip(ys, dots):
            stat = table[row].get(size)
            if stat is not None:
                axes.errorbar(stat.mean, y, xerr=_half(stat), fmt="o", color=_color(row.method),
                              capsize=3, markersize=5)
        for row in refs:
            stat = table[row].get(size)
            if stat is None:
                continue
            color, style = _color(row.method), TABLE[row.method].line
            axes.axvline(stat.mean, color=color, linestyle=style, linewidth=1.3)
            if not math.isnan(stat.ci95):
                axes.axvspan(stat.mean - stat.ci95, stat.mean + stat.ci95, color=color, alpha=0.08)
        axes.set_title(f"{format_size(size)} task rows")
        axes.set_xlabel(metric)
        axes.grid(axis="x", alpha=0.3)
    axes_list[0].set_yticks(ys, [row_label(row, show_recipe, show_head) for row in dots])
    axes_list[0].set_xlim(*_limits(every))
    methods = list(dict.fromkeys(row.method for row in dots))
    handles = [Line2D([], [], marker="o", linestyle="", color=_color(m), label=m) for m in methods]
    handles += [Line2D([], [], color=_color(m), linestyle=TABLE[m].line, label=f"{m} (reference)")
                for m in dict.fromkeys(row.method for row in refs)]
    figure.legend(handles=handles, loc="upper right", fontsize="small", frameon=False)
    figure.suptitle(title)
    _caption(figure, caption(every, metric, references=bool(refs)))
    figure.subplots_adjust(right=0.82)
    return figure


def cosine_figure(groups: dict[str, dict[str, Stat]]) -> Figure:
    """Cosine of matched pairs beside their retrieval P@1 (where the records have it): cosine alone rewards
    mean-shift, which moves every vector towards the other language's mean without making a translation its
    sentence's nearest neighbour. Each panel's axis spans its data, not 0-1, so differences show."""
    labels = list(groups)
    has_retrieval = [name for name in RETRIEVAL_FIELDS if any(name in groups[g] for g in labels)]
    panels = [("cosine similarity", COSINE_FIELDS, _COSINE_LABELS)]
    if has_retrieval:
        panels.append(("retrieval P@1 (nearest neighbour)", tuple(has_retrieval), _RETRIEVAL_LABELS))
    figure = Figure(figsize=(max(6.0, 1.5 * len(labels) + 2) * len(panels), 5.0))
    FigureCanvasAgg(figure)
    axes_list = figure.subplots(1, len(panels), squeeze=False)[0]
    every: list[Stat] = []
    for axes, (ylabel, fields, names) in zip(axes_list, panels):
        shown = [stat for g in labels for name in fields if (stat := groups[g].get(name)) is not None]
        every += shown
        for offset, name in enumerate(fields):
            xs, stats = [], []
            for i, g in enumerate(labels):
                if name in groups[g]:
                    xs.append(i + (offset - (len(fields) - 1) / 2) * 0.8 / len(fields))
                    stats.append(groups[g][name])
            axes.errorbar(xs, [s.mean for s in stats], yerr=[_half(s) for s in stats], fmt="o", capsize=3,
                          label=names[name])
        axes.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
        axes.set_ylabel(ylabel)
        axes.set_ylim(*_limits(shown, floor=-1.0))
        axes.grid(axis="y", alpha=0.3)
        axes.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    figure.suptitle("Matched pairs: cosine beside retrieval")
    _caption(figure, caption(every, "cosine or P@1 of held-out pairs", interval=_PAIRS_INTERVAL), below_inches=0.45 + 0.2 * len(COSINE_FIELDS) + 0.6)
    return figure


def _caption(figure: Figure, text: str, below_inches: float = 0.55) -> None:
    """The caption line below everything else (`below_inches` under the figure's bottom edge: below the axis
    labels and any legend there; the saved image grows to hold it)."""
    below = offset_copy(figure.transFigure, fig=figure, y=-below_inches, units="inches")
    figure.text(0.01, 0.0, text, transform=below, fontsize="small", ha="left", va="top", wrap=True)


DIGEST_KEY = "embedstore-plotted-data"
"""The PNG text chunk holding the digest of the data a figure was drawn from."""


def data_digest(*data: object) -> str:
    """A digest of what a figure shows (its numbers, labels and title), from their repr: the tables' rows and
    stats are frozen dataclasses and plain containers, so equal data gives equal text in every process."""
    return hashlib.sha256(repr(data).encode("utf-8")).hexdigest()[:20]


@dataclass(frozen=True)
class Plot:
    """A figure a report names: where it is saved, a digest of the data it shows, and how to draw it. Drawing is
    most of a report's cost, so a check names its figures and asks whether the files there were drawn from the
    same data (`is_current`) instead of drawing them again."""

    path: Path
    digest: str
    figure: Callable[[], Figure]
    dpi: int

    def draw(self) -> Path:
        """Save the figure with its data digest, whole or not at all (a half-written PNG would still carry the
        digest, which comes before the image data)."""
        png = io.BytesIO()
        self.figure().savefig(png, format="png", dpi=self.dpi, bbox_inches="tight",
                              metadata={DIGEST_KEY: self.digest})
        write_bytes(self.path, png.getvalue())
        return self.path

    def is_current(self) -> bool:
        return drawn_from(self.path) == self.digest


def drawn_from(path: Path) -> str | None:
    """The data digest a figure was saved with; None for a missing file, one that is no PNG, or one drawn before
    figures carried a digest. Reads the chunks before the image data only, never decodes the image."""
    try:
        with Image.open(path) as image:
            digest = image.info.get(DIGEST_KEY)
    except (OSError, UnidentifiedImageError):
        return None
    return digest if isinstance(digest, str) else None


def plot_scores(table: Table, path: Path, title: str, metric: str) -> Plot:
    return Plot(path, data_digest("scores", table, title, metric), lambda: scores_figure(table, title, metric), 110)


def plot_cosine(groups: dict[str, dict[str, Stat]], path: Path) -> Plot:
    return Plot(path, data_digest("cosine", groups), lambda: cosine_figure(groups), 120)
