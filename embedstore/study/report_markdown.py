"""A sweep report's text: the header with the provenance shown, Table-3-shaped markdown tables, the notes on
heads, draws and intervals, the head-robustness table, the claims that change with the head's C, the cosine table,
and the same numbers as CSV.
"""
from __future__ import annotations

import csv
import io
import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from embedstore.study.cells import DEFAULT_HEAD, format_size, method_label
from embedstore.study.methods import PAIR_METHODS
from embedstore.study.verdicts import APPROXIMATE, NO_C, PAIRED, REFUSED, WITHIN_NOISE, Comparison, c_check, \
    degenerate
from embedstore.study.report_data import COSINE_FIELDS, SEEDS_AGREE, AroundC, Row, Stat, Table, Verdicts, \
    size_key


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


def draws_note(records: list[dict[str, Any]]) -> list[str]:
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


def interval_note(verdicts: dict[tuple[str, str], Verdicts]) -> list[str]:
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


def verdicts_markdown(verdicts: Verdicts) -> list[str]:
    """Every row of a table against English-only under its own head at each task size, as the verdict rule decides
    it: the claim itself, beside the table's means (which describe the test rows and decide nothing). A comparison
    whose arms got every test row equally right has nothing to estimate, and says so instead of an interval of
    zero width."""
    if not verdicts:
        return []
    several = len({row.head for row, _ in verdicts}) > 1
    lines = ["Against English-only (the paired difference over the same seeds and test rows, 95% interval):", "",
             "| method | task rows | " + ("head | " if several else "") + "Δ [95% interval] | verdict |",
             "| --- | ---: | " + ("--- | " if several else "") + "---: | --- |"]
    for (row, size), c in verdicts.items():
        if c.refused:
            figure, verdict = "–", f"left out ({c.refused})"
        elif c.diff == c.low == c.high == 0:
            figure, verdict = "0 at every test row", "no test row differs: nothing to estimate"
        else:
            figure, verdict = f"{c.diff:+.3f} [{c.low:+.3f}, {c.high:+.3f}]", c.statement
        head = f"{row.head} | " if several else ""
        lines.append(f"| {method_label(row.method, row.aligner, row.pair_size)} | {format_size(size)} | {head}"
                     f"{figure} | {verdict} |")
    return lines + [""]


def robustness_markdown(tables: dict[tuple[str, str], Table], verdicts: dict[tuple[str, str], Verdicts]) -> list[str]:
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
                    c = found.get((Row(row.method, row.aligner, row.pair_size, row.recipe, head), size))
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


def header(
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
        "single seed; the verdicts' intervals also count the test rows); the highest mean per column in **bold** (higher is better): a description of these test rows, "
        "not a verdict, and no claim picks its arm by it",
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


def markdown_table(language: str, task: str, table: Table) -> list[str]:
    """One Table-3-shaped markdown table, with its seed count stated once and exceptions marked inline."""
    sizes = sorted({size for stats in table.values() for size in stats}, key=size_key)
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
            text = format_stat(stat)
            if round(stat.mean, _DECIMALS) == best[size]:
                text = f"**{text}**"
            if stat.n != usual_n:
                text += f" (n={stat.n})"
            entries.append(text)
        lines.append(f"| {row.label(show_recipe, show_head)} | " + " | ".join(entries) + " |")
    return lines + [""]


def format_stat(stat: Stat) -> str:
    """Mean ± half-width, never "± 0.000": a half-width below the table's precision gets the digits that show it,
    and seeds that all gave one value are said to have (a zero interval would claim certainty)."""
    if math.isnan(stat.ci95):
        return f"{stat.mean:.{_DECIMALS}f}"
    if stat.ci95 < SEEDS_AGREE:
        return f"{stat.mean:.{_DECIMALS}f} (same at every seed)"
    decimals = max(_DECIMALS, -math.floor(math.log10(stat.ci95)))
    return f"{stat.mean:.{decimals}f} ± {stat.ci95:.{decimals}f}"


def csv_text(tables: dict[tuple[str, str], Table]) -> str:
    """Long format, one line per table entry; blank aligner/pair_size where a method has none."""
    out = io.StringIO(newline="")
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
    return out.getvalue()


def _csv_size(size: int | None) -> str:
    return "all" if size is None else str(size)


def _csv_float(value: float) -> str:
    return "" if math.isnan(value) else repr(value)


def noise_note(verdicts: Verdicts) -> list[str]:
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
                                                                          size_key(kv[0][1]))):
        if all(c.verdict == WITHIN_NOISE for c in found):
            where = f"under head `{head}` " if several else ""
            notes.append(f"At {format_size(size)} task rows {where}no method is clearly apart from English-only "
                         "(paired 95% intervals): the differences in this column are within the noise.")
    return notes + ([""] if notes else [])


def c_sensitivity_markdown(verdicts: dict[tuple[str, str], Verdicts],
                           around: dict[tuple[str, str], AroundC]) -> list[str]:
    """Each comparison with English-only re-decided with the heads refitted one decade of C either side: the ones
    whose verdict changes are listed (they rest on the choice of C), the rest counted, and so are the ones that
    could not be checked (records that kept no refits)."""
    lines = ["## Sensitivity to the head's C", ""]
    for key, found in verdicts.items():
        changed, counted = [], {"alike": 0, "sensitive": 0, "unchecked": 0, "no C": 0}
        for (row, size), claim in found.items():
            if claim.refused:
                continue
            outcome, flip = c_check(claim, around.get(key, {}).get((row, size), {}))
            counted[outcome] += 1
            if flip:
                changed.append(f"- **C-sensitive**: {method_label(row.method, row.aligner, row.pair_size)} against "
                               f"english at {format_size(size)} (head `{row.head}`): {claim.statement} at the chosen "
                               f"C; {flip}")
        same, unchecked, no_C = counted["alike"], counted["unchecked"], counted["no C"]
        lines.append(f"{key[0]} · {key[1]}: {same} comparison{'s' if same != 1 else ''} with English-only decided "
                     f"alike at C/10, the chosen C and C×10; {len(changed)} not"
                     + (f"; {unchecked} not checked (their records kept no refits at C/10 and C×10)" if unchecked
                        else "")
                     + (f"; {no_C} where {NO_C} (torch heads, or heads trained with the encoder)" if no_C else "")
                     + ".")
        lines += changed
    return lines + [""]


def cosine_markdown(groups: dict[str, dict[str, Stat]]) -> list[str]:
    lines = [
        "## Cosine similarity",
        "",
        "Mean cosine of matched held-out pairs ± a 95% interval counting the pairs' own sampling (their spread over "
        "rows) and, with several seeds, the seeds' (every seed measures the same pairs, so an interval over seeds "
        "alone would say nothing of other pairs); a bare mean is descriptive of these pairs: its records carry no "
        "per-row spread. `shuffled` pairs each vector with a random translation, the baseline a real alignment must "
        "beat.",
        "",
        "| group | n | " + " | ".join(COSINE_FIELDS) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in COSINE_FIELDS) + " |",
    ]
    for label, stats in groups.items():
        n = stats[COSINE_FIELDS[0]].n
        lines.append(f"| {label} | {n} | " + " | ".join(format_stat(stats[name]) for name in COSINE_FIELDS) + " |")
    return lines + [""]
