"""Tables and plots from a sweep's results file.

The markdown table is shaped like the LangAlign paper's Table 3 so results can be compared with it at a
glance: one table per (language, task), rows = methods (aligner methods split by aligner and pair size),
columns = task sizes, entries = mean ± 95% CI half-width over seeds, best mean per column in bold (higher is
better). The CSV holds the same numbers in long format for further analysis; the PNGs show score against task
size, the two ablations against LangAlign, and (when analysis records exist) cosine similarities.

Cosine analysis records have "kind": "cosine" and four numbers: `en_tr` (English vs its translation),
`aligned_tr` (aligned English vs the translation), `aligned_en` (aligned English vs English) and `shuffled`
(aligned English vs a random translation: the anisotropy baseline). They may sit in the results file or in a
separate file passed as `cosine_path` (a JSON list/object or JSONL); records with a "cell" (or top-level
language/aligner/pair_size) are grouped by language, aligner and pair size, and averaged over seeds.
"""
from __future__ import annotations

import csv
import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from embedstore.study.cells import ALIGNERS, DEFAULT_HEAD, DEFAULT_RECIPE, format_size, method_label
from embedstore.study.methods import METHODS, PAIR_METHODS, REFERENCE_METHODS
from embedstore.base.atomic import write_text
from embedstore.base.errors import InputError
from embedstore.base.stats import mean_ci
from embedstore.study.predictions import PredictionReader
from embedstore.study.sweep import read_results
from embedstore.study.verdicts import APPROXIMATE, PAIRED, REFUSED, WITHIN_NOISE, Comparison, compare, degenerate

COSINE_FIELDS: tuple[str, ...] = ("en_tr", "aligned_tr", "aligned_en", "shuffled")
_COSINE_LABELS = {
    "en_tr": "English vs translation",
    "aligned_tr": "aligned English vs translation",
    "aligned_en": "aligned English vs English",
    "shuffled": "aligned English vs shuffled translation",
}
_ABLATION_METHODS = ("langalign", "ablation-omit", "ablation-share")
_CSV_COLUMNS = (
    "language", "task", "method", "aligner", "pair_size", "task_size", "recipe", "head", "n_seeds", "mean", "ci95",
    "std",
)
_DECIMALS = 3
_PROVENANCE_SHOWN = (
    ("model", "model"),
    ("model_fingerprint", "model fingerprint"),
    ("store_key", "store key"),
    ("embedstore_version", "embedstore version"),
)


@dataclass(frozen=True)
class ReportFiles:
    """What `build_report` wrote, plus the markdown text so the CLI can print it without reading it back."""

    markdown: str
    table_md: Path
    table_csv: Path
    plots: tuple[Path, ...]


@dataclass(frozen=True)
class _Row:
    """One table row: a method and the choices that split it (aligner, pair size, recipe, head)."""

    method: str
    aligner: str | None
    pair_size: int | None
    recipe: str
    head: str

    def sort_key(self) -> tuple[Any, ...]:
        """Paper order: baselines, then LangAlign and variants; aligners in ALIGNERS order; 'all' pairs last."""
        return (
            METHODS.index(self.method) if self.method in METHODS else len(METHODS),
            self.method,
            ALIGNERS.index(self.aligner) if self.aligner in ALIGNERS else -1,
            _size_key(self.pair_size),
            self.recipe,
            self.head,
        )

    def label(self, show_recipe: bool, show_head: bool) -> str:
        """e.g. "langalign fc 5k"; the recipe/head only when a table mixes several."""
        parts = [method_label(self.method, self.aligner, self.pair_size)]
        if show_recipe:
            parts.append(f"recipe={self.recipe}")
        if show_head:
            parts.append(f"head={self.head}")
        return " ".join(parts)


@dataclass(frozen=True)
class _Stat:
    """Mean, CI half-width (NaN for one seed), sample std (NaN for one seed) and seed count of one entry."""

    mean: float
    ci95: float
    std: float
    n: int


_Table = dict[_Row, dict[int | None, _Stat]]
_Arms = dict[_Row, dict[int | None, list[dict[str, Any]]]]
"""The records behind each table entry: what a verdict compares."""
_Verdicts = dict[tuple[_Row, int | None], Comparison]
"""Each row's comparison with English-only under the same head, at each task size."""


def build_report(
    results_path: str | Path,
    out_dir: str | Path,
    *,
    metric: str = "accuracy",
    cosine_path: str | Path | None = None,
) -> ReportFiles:
    """Write table.md, table.csv and PNG plots for a results file into `out_dir`; return what was written.

    Only "ok" records enter the tables (failed cells are counted in the header). Raises InputError when the
    file has nothing to report or no record has `metric`.
    """
    results_path = Path(results_path)
    out_dir = Path(out_dir)
    records = read_results(results_path)
    cell_records = [r for r in records if r.get("kind", "cell") == "cell"]
    ok = [r for r in cell_records if r["status"] == "ok"]
    cosine = [r for r in records if r.get("kind") == "cosine"]
    _check_cosine(cosine, str(results_path))
    if cosine_path is not None:
        cosine += _read_cosine(Path(cosine_path))
    cosine += _cosine_from_cells(ok)
    if not ok and not cosine:
        raise InputError(f"{results_path}: no finished ('ok') records to report")
    scored = [r for r in ok if metric in r.get("metrics", {})]
    if ok and not scored:
        available = sorted({name for r in ok for name in r.get("metrics", {})})
        raise InputError(f"{results_path}: no record has metric {metric!r}; available: {', '.join(available)}")

    tables, arms = _tables(scored, metric)
    rows = PredictionReader(results_path)
    verdicts = {key: against_english(arms[key], rows, metric) for key in tables}
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = (_header(results_path, cell_records, ok, scored, metric) + head_convergence(ok)
             + degenerate_counts(scored) + _interval_note(verdicts) + _draws_note(scored))
    plots: list[Path] = []
    for (language, task), table in tables.items():
        lines += _markdown_table(language, task, table) + noise_note(verdicts[(language, task)])
        for head, part in _per_head(table):
            stem = _slug(f"{language}_{task}" + (f"_head-{head}" if head else ""))
            title = f"{language} · {task}" + (f" · head {head}" if head else "")
            plots.append(_plot_scores(part, out_dir / f"scores_{stem}.png", title, metric))
            methods = {row.method for row in part}
            if "langalign" in methods and methods & {"ablation-omit", "ablation-share"}:
                ablations = {row: stats for row, stats in part.items() if row.method in _ABLATION_METHODS}
                plots.append(_plot_scores(ablations, out_dir / f"ablations_{stem}.png", f"{title}: ablations",
                                          metric))
    lines += _robustness_markdown(tables, verdicts)
    if cosine:
        groups = _cosine_groups(cosine)
        lines += _cosine_markdown(groups)
        plots.append(_plot_cosine(groups, out_dir / "cosine.png"))

    markdown = "\n".join(lines).rstrip() + "\n"
    table_md = out_dir / "table.md"
    write_text(table_md, markdown)
    table_csv = out_dir / "table.csv"
    _write_csv(table_csv, tables)
    return ReportFiles(markdown, table_md, table_csv, tuple(plots))


def _tables(
    records: Iterable[dict[str, Any]], metric: str
) -> tuple[dict[tuple[str, str], _Table], dict[tuple[str, str], _Arms]]:
    """Group records by (language, task) → row → task size; summarise each group over seeds (the tables) and
    keep its records (the verdicts)."""
    grouped: dict[tuple[str, str], _Arms] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for record in records:
        cell = record["cell"]
        row = _Row(
            cell["method"], cell.get("aligner"), cell.get("pair_size"), cell.get("recipe", DEFAULT_RECIPE),
            cell.get("head", DEFAULT_HEAD),
        )
        grouped[(cell["language"], cell["task"])][row][cell.get("task_size")].append(record)
    tables: dict[tuple[str, str], _Table] = {}
    arms: dict[tuple[str, str], _Arms] = {}
    for key in sorted(grouped):
        rows = grouped[key]
        order = sorted(rows, key=_Row.sort_key)
        arms[key] = {row: {size: rows[row][size] for size in sorted(rows[row], key=_size_key)} for row in order}
        tables[key] = {row: {size: _stat([float(r["metrics"][metric]) for r in recs])
                             for size, recs in arms[key][row].items()} for row in order}
    return tables, arms


def against_english(arms: _Arms, rows: PredictionReader | None, metric: str) -> _Verdicts:
    """Every row compared with English-only under its own head (never another head's English row), at each
    task size, through the one verdict rule."""
    english = {row.head: sizes for row, sizes in arms.items() if row.method == "english"}
    out: _Verdicts = {}
    for row, sizes in arms.items():
        base = english.get(row.head, {})
        for size, records in sizes.items():
            if row.method != "english" and size in base:
                out[(row, size)] = compare(records, base[size], rows=rows, metric=metric,
                                           labels=(method_label(row.method, row.aligner, row.pair_size), "english"))
    return out


def degenerate_counts(records: list[dict[str, Any]]) -> list[str]:
    """Per head kind, how many cells have a degenerate head (`verdicts.degenerate`): they stay in the tables,
    where their figures belong, and are left out of every verdict."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for record in records:
        counts[record["cell"].get("head", DEFAULT_HEAD)][degenerate(record) is not None] += 1
    lines = [f"- head `{head}`: **{c[True]} of {c[True] + c[False]} cells degenerate** (one class for at least 95% "
             "of test rows, or accuracy within noise of always answering the majority class); their cells are "
             "left out of the verdicts" for head, c in sorted(counts.items()) if c[True]]
    return lines + ([""] if lines else [])


def _draws_note(records: list[dict[str, Any]]) -> list[str]:
    """Whether the verdicts could check that their arms share draws (records carry digests of their test rows,
    training rows and pairs since per-row predictions were kept), or had to take it on trust."""
    missing = sum(not r.get("provenance", {}).get("draws") for r in records)
    if not records:
        return []
    if not missing:
        return ["- draws: every record carries the digests of its test rows, training rows and pairs; a comparison "
                "of arms whose test or training draws differ at a seed is refused", ""]
    return [f"- draws: {missing} of {len(records)} records predate the draws' digests: for them the same seed is taken "
            "to draw the same task rows and pairs for every method (the sweep seeds its draws by the seed alone)", ""]


def _interval_note(verdicts: dict[tuple[str, str], _Verdicts]) -> list[str]:
    """How the verdicts' intervals were computed, and which are approximate (records without predictions)."""
    kinds = Counter(c.interval for table in verdicts.values() for c in table.values() if c.verdict != REFUSED)
    if not kinds:
        return []
    line = ("- verdicts: the paired difference with English-only under the same head over the same seeds, with a 95% "
            "interval from a bootstrap over test rows and seeds (`embedstore.study.verdicts`); \"clearly\" when it "
            "excludes 0")
    if kinds[APPROXIMATE] or len(kinds) > kinds[PAIRED] + kinds[APPROXIMATE]:
        line += (f"; {sum(n for k, n in kinds.items() if k != PAIRED)} of {sum(kinds.values())} comparisons have "
                 "approximate intervals (their records predate per-row predictions: seeds' interval plus unpaired "
                 "test-set noise)")
    return [line, ""]


def head_convergence(records: list[dict[str, Any]]) -> list[str]:
    """One line per head kind: how many of its fits converged by their criterion (from each record's
    `metrics.head`); a head stopped by a cap is a doubtful figure, so the report says how many there were."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for record in records:
        head = record["cell"].get("head", DEFAULT_HEAD)
        report = record.get("metrics", {}).get("head")
        state = "unrecorded" if not isinstance(report, dict) or report.get("converged") is None else (
            "converged" if report["converged"] else "capped")
        counts[head][state] += 1
    if not counts:
        return []
    lines = []
    for head, c in sorted(counts.items()):
        recorded = c["converged"] + c["capped"]
        text = f"- head `{head}`: " + (f"{c['converged']}/{recorded} fits converged" if recorded else "")
        if c["capped"]:
            text += f"; **{c['capped']} stopped at a cap** (their figures are set by the cap, not the data)"
        if c["unrecorded"]:
            text += ("; " if recorded else "") + (f"{c['unrecorded']} fits did not record whether they converged "
                                                  "(records older than the fit report, or a head that cannot tell)")
        lines.append(text)
    return lines + [""]


def _robustness_markdown(tables: dict[tuple[str, str], _Table], verdicts: dict[tuple[str, str], _Verdicts]) -> list[str]:
    """"LangAlign (or reverse) beats English-only" at each task size, under every head in the table, each through
    the verdict rule; a claim that is clear under one head and not under another is marked head-sensitive, and a
    comparison refused under a head (a degenerate head) is shown as such and left out of that judgement."""
    lines = ["## Head robustness", ""]
    any_table = False
    for (language, task), table in tables.items():
        heads = sorted({row.head for row in table}, key=lambda h: (h != DEFAULT_HEAD, h))
        if len(heads) < 2:
            lines.append(f"{language} · {task}: one head family only ({heads[0]}); list several in the grid "
                         "(e.g. `head = [\"logistic\", \"mlp\"]`) to check that the claims do not hang on the head.")
            continue
        any_table = True
        lines += [f"### {language} · {task}", "", "| claim | " + " | ".join(heads) + " | |",
                  "| --- | " + " | ".join("---" for _ in heads) + " | --- |"]
        found = verdicts[(language, task)]
        for row, stats in table.items():
            if row.method not in ("langalign", "reverse") or row.head != heads[0]:
                continue
            for size in stats:
                cells, decided = [], []
                for head in heads:
                    c = found.get((_Row(row.method, row.aligner, row.pair_size, row.recipe, head), size))
                    if c is None:
                        cells.append("–")
                    elif c.verdict == REFUSED:
                        cells.append(f"left out ({c.refused})")
                    else:
                        cells.append(f"{c.statement} ({c.diff:+.3f} [{c.low:+.3f}, {c.high:+.3f}])")
                        decided.append(c.verdict)
                mark = ("**head-sensitive**" if len(set(decided)) > 1 else "robust") if len(decided) > 1 else ""
                claim = f"{method_label(row.method, row.aligner, row.pair_size)} > english at {format_size(size)}"
                lines.append(f"| {claim} | " + " | ".join(cells) + f" | {mark} |")
        lines.append("")
    if not any_table:
        lines.append("")
    return lines


def _stat(values: Sequence[float]) -> _Stat:
    mean, half_width, n = mean_ci(values)
    std = math.nan if n == 1 else math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return _Stat(mean, half_width, std, n)


def _header(
    path: Path, cells: list[dict[str, Any]], ok: list[dict[str, Any]], scored: list[dict[str, Any]], metric: str
) -> list[str]:
    """Title and provenance lines: which sweep, model, store key and code produced these numbers."""
    sweeps = _distinct(r.get("provenance", {}).get("sweep") for r in cells)
    failed = len(cells) - len(ok)
    counts = f"{len(cells)} cell records: {len(ok)} ok, {failed} failed"
    if len(scored) < len(ok):
        counts += f", {len(ok) - len(scored)} ok without {metric!r}"
    lines = [
        f"# Results: {sweeps}",
        "",
        f"- results file: `{path}`",
        f"- records: {counts}; only ok records with the metric are in the tables",
        f"- metric: {metric}; entries are mean ± 95% CI half-width over seeds (t-distribution; a bare mean is a "
        "single seed); best mean per column in **bold** (higher is better)",
    ]
    for key, title in _PROVENANCE_SHOWN:
        lines.append(f"- {title}: {_distinct(r.get('provenance', {}).get(key) for r in ok)}")
    return lines + [""]


def _distinct(values: Iterable[object]) -> str:
    """The distinct recorded values, listed (a mixed file is worth noticing), or 'not recorded'."""
    seen = sorted({str(v) for v in values if v is not None})
    if not seen:
        return "not recorded"
    if len(seen) > 3:
        return f"{', '.join(seen[:3])} and {len(seen) - 3} more"
    return ", ".join(seen)


def _markdown_table(language: str, task: str, table: _Table) -> list[str]:
    """One Table-3-shaped markdown table, with its seed count stated once and exceptions marked inline."""
    sizes = sorted({size for stats in table.values() for size in stats}, key=_size_key)
    counts = Counter(stat.n for stats in table.values() for stat in stats.values())
    usual_n = counts.most_common(1)[0][0]
    show_recipe = len({row.recipe for row in table}) > 1
    show_head = len({row.head for row in table}) > 1
    best = {
        size: max(round(stats[size].mean, _DECIMALS) for stats in table.values() if size in stats) for size in sizes
    }
    lines = [
        f"## {language} · {task}",
        "",
        f"n = {usual_n} seed{'s' if usual_n != 1 else ''} per entry unless marked; columns are task training sizes.",
        "",
        "| method | " + " | ".join(format_size(size) for size in sizes) + " |",
        "| --- | " + " | ".join("---:" for _ in sizes) + " |",
    ]
    for row, stats in table.items():
        entries = []
        for size in sizes:
            stat = stats.get(size)
            if stat is None:
                entries.append("–")
                continue
            text = _format_stat(stat)
            if round(stat.mean, _DECIMALS) == best[size]:
                text = f"**{text}**"
            if stat.n != usual_n:
                text += f" (n={stat.n})"
            entries.append(text)
        lines.append(f"| {row.label(show_recipe, show_head)} | " + " | ".join(entries) + " |")
    return lines + [""]


def _format_stat(stat: _Stat) -> str:
    if math.isnan(stat.ci95):
        return f"{stat.mean:.{_DECIMALS}f}"
    return f"{stat.mean:.{_DECIMALS}f} ± {stat.ci95:.{_DECIMALS}f}"


def _write_csv(path: Path, tables: dict[tuple[str, str], _Table]) -> None:
    """Long format, one line per table entry; blank aligner/pair_size where a method has none."""
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(_CSV_COLUMNS)
        for (language, task), table in tables.items():
            for row, stats in table.items():
                pair_size = _csv_size(row.pair_size) if row.method in PAIR_METHODS else ""
                for size, stat in stats.items():
                    writer.writerow([
                        language, task, row.method, row.aligner or "", pair_size, _csv_size(size), row.recipe,
                        row.head, stat.n, repr(stat.mean), _csv_float(stat.ci95), _csv_float(stat.std),
                    ])


def _csv_size(size: int | None) -> str:
    return "all" if size is None else str(size)


def _csv_float(value: float) -> str:
    return "" if math.isnan(value) else repr(value)


# reference methods (`methods.REFERENCE_METHODS`: what a transfer method must beat, or the in-language ceiling)
# are drawn as lines, not bars
_REFERENCE_STYLES = {"english": ("black", "--"), "native": ("tab:green", "-"), "translated": ("tab:purple", ":"),
                     "translate-test": ("tab:brown", "-.")}


def _per_head(table: _Table) -> list[tuple[str | None, _Table]]:
    """The table split by head family, the default head first (None: one head, no split). One figure per head:
    with two heads in one panel every method had two bars, and the figure read as a list, not a comparison (the
    head comparison is the robustness table's job)."""
    heads = sorted({row.head for row in table}, key=lambda h: (h != DEFAULT_HEAD, h))
    if len(heads) == 1:
        return [(None, table)]
    return [(head, {row: stats for row, stats in table.items() if row.head == head}) for head in heads]


def _plot_scores(table: _Table, path: Path, title: str, metric: str) -> Path:
    """One panel per task size: a horizontal bar (mean ± 95% CI) per transfer method, with English-only and the
    in-language baselines as vertical reference lines, so each method reads against what it must beat (one
    line plot of every series was unreadable: 14 lines, their intervals overlapping)."""
    sizes = sorted({size for stats in table.values() for size in stats}, key=_size_key)
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


def noise_note(verdicts: _Verdicts) -> list[str]:
    """Per head and task size: when no method is clearly apart from English-only under that head, the column is
    noise at this many seeds and rows, and the report says so instead of letting a bold mean suggest a winner.
    Each head is judged against its own English-only row."""
    by_column: dict[tuple[str, int | None], list[Comparison]] = defaultdict(list)
    for (row, size), c in verdicts.items():
        if c.verdict != REFUSED:
            by_column[(row.head, size)].append(c)
    several = len({head for head, _ in by_column}) > 1
    notes = []
    for (head, size), found in sorted(by_column.items(), key=lambda kv: ((kv[0][0] != DEFAULT_HEAD, kv[0][0]),
                                                                          _size_key(kv[0][1]))):
        if all(c.verdict == WITHIN_NOISE for c in found):
            where = f"under head `{head}` " if several else ""
            notes.append(f"At {format_size(size)} task rows {where}no method is clearly apart from English-only "
                         "(paired 95% intervals): the differences in this column are within the noise.")
    return notes + ([""] if notes else [])


def _check_cosine(records: list[dict[str, Any]], source: str) -> None:
    """Every cosine record needs the four numbers; name the record that lacks one."""
    for index, record in enumerate(records):
        for name in COSINE_FIELDS:
            value = record.get(name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InputError(
                    f"{source}: cosine record {index}: {name!r} is {value!r}; a cosine record needs numbers "
                    f"{', '.join(COSINE_FIELDS)}"
                )


def _read_cosine(path: Path) -> list[dict[str, Any]]:
    """A separate cosine file: a JSON list of records, one record, or JSONL (one record per line)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such cosine file") from None
    try:
        if path.suffix == ".jsonl":
            data: object = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    records = data if isinstance(data, list) else [data]
    if not all(isinstance(record, dict) for record in records):
        raise InputError(f"{path}: expected JSON objects with {', '.join(COSINE_FIELDS)}")
    _check_cosine(records, str(path))
    return records


def _cosine_from_cells(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """LangAlign cells measure cosine on their held-out test translations (metrics.aligner.cosine); the task
    size does not change the aligner, so only the largest task size of each (aligner, pair size, seed) is kept."""
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in records:
        cell, cos = r["cell"], r.get("metrics", {}).get("aligner", {}).get("cosine")
        if cell.get("method") != "langalign" or not cos:
            continue
        key = (cell["language"], cell["task"], cell["aligner"], _size_key(cell["pair_size"]), cell["seed"])
        if key not in out or _size_key(cell["task_size"]) > _size_key(out[key]["cell"]["task_size"]):
            out[key] = {"kind": "cosine", "cell": cell, **{name: cos[name] for name in COSINE_FIELDS}}
    return list(out.values())


def _cosine_groups(records: list[dict[str, Any]]) -> dict[str, dict[str, _Stat]]:
    """Average cosine records over seeds, grouped by language, aligner and pair size where recorded."""
    grouped: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        where = record.get("cell", record)
        key = (where.get("language") or "", where.get("aligner") or "", _size_key(where.get("pair_size")))
        grouped[key].append(record)
    result: dict[str, dict[str, _Stat]] = {}
    for key in sorted(grouped):
        where = grouped[key][0].get("cell", grouped[key][0])
        parts = [p for p in (where.get("language"), where.get("aligner")) if p]
        if where.get("aligner") and where.get("method", "langalign") in PAIR_METHODS:
            parts.append(format_size(where.get("pair_size")))
        label = " ".join(parts) or "all records"
        result[label] = {name: _stat([float(r[name]) for r in grouped[key]]) for name in COSINE_FIELDS}
    return result


def _cosine_markdown(groups: dict[str, dict[str, _Stat]]) -> list[str]:
    lines = [
        "## Cosine similarity",
        "",
        "Mean cosine of matched pairs (± 95% CI over records); `shuffled` pairs each vector with a random "
        "translation, the baseline a real alignment must beat.",
        "",
        "| group | n | " + " | ".join(COSINE_FIELDS) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in COSINE_FIELDS) + " |",
    ]
    for label, stats in groups.items():
        n = stats[COSINE_FIELDS[0]].n
        lines.append(f"| {label} | {n} | " + " | ".join(_format_stat(stats[name]) for name in COSINE_FIELDS) + " |")
    return lines + [""]


def _plot_cosine(groups: dict[str, dict[str, _Stat]], path: Path) -> Path:
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


def _size_key(size: int | None) -> tuple[int, int]:
    """Sort sizes ascending with None ('all') last."""
    return (1, 0) if size is None else (0, size)


def _slug(text: str) -> str:
    """A file-name-safe version of a language/task name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text)
