"""Tables and plots from a sweep's results file: `build_report` reads the records and writes what
`report_data` computes (aggregation), `report_markdown` renders (markdown, CSV) and `report_plots` draws.

The markdown table is shaped like the LangAlign paper's Table 3 so results can be compared with it at a
glance: one table per (language, task), rows = methods (aligner methods split by aligner and pair size),
columns = task sizes, entries = mean ± 95% CI half-width over seeds, best mean per column in bold (higher is
better). The CSV holds the same numbers in long format for further analysis; the PNGs show score against task
size, the two ablations against LangAlign, and (when analysis records exist) cosine similarities.

Cosine analysis records have "kind": "cosine" and four numbers: `en_tr` (English vs its translation),
`aligned_tr` (aligned English vs the translation), `aligned_en` (aligned English vs English) and `shuffled`
(aligned English vs a random translation: the anisotropy baseline). They may sit in the results file or in a
separate file passed as `cosine_path` (a JSON list/object or JSONL); records with a "cell" (or top-level
language/aligner/pair_size) are grouped by language, aligner and pair size, and averaged over seeds. With
`rows` and `row_sd` (each mean's spread over its pairs, as `analysis.measures.cosine_report` gives them) a mean
gets an interval that counts the pairs' sampling; without, it is printed bare, as a description of those pairs.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from embedstore.base.atomic import write_text
from embedstore.base.errors import InputError
from embedstore.study.predictions import PredictionReader
from embedstore.study.sweep import read_results
from embedstore.study.report_data import (against_english, against_english_across_C, check_cosine,
                                          cosine_from_cells, cosine_groups, group_tables, one_run_per_text_arm,
                                          per_head, read_cosine)
from embedstore.study.report_markdown import (c_sensitivity_markdown, cosine_markdown, degenerate_counts, draws_note,
                                              header, head_convergence, interval_note, markdown_table, noise_note,
                                              csv_text, robustness_markdown, verdicts_markdown)
from embedstore.study.methods import ABLATION_METHODS, REFERENCE_METHODS
from embedstore.study.report_plots import Plot, plot_cosine, plot_scores


@dataclass(frozen=True)
class ReportFiles:
    """What `build_report` wrote (or, with `write=False`, would write), plus the markdown text so the CLI can print
    it without reading it back; `stale` (only without writing) names the files among them that are missing or
    differ from what the records give: a check of a report's files that draws nothing."""

    markdown: str
    table_md: Path
    table_csv: Path
    plots: tuple[Path, ...]
    stale: tuple[Path, ...] = ()


def build_report(
    results_path: str | Path,
    out_dir: str | Path,
    *,
    metric: str = "accuracy",
    cosine_path: str | Path | None = None,
    write: bool = True,
) -> ReportFiles:
    """Write table.md, table.csv and PNG plots for a results file into `out_dir`; return what was written.

    With `write=False` nothing is written or drawn: the files are named, and those in `out_dir` that are missing
    or differ from what would be written are listed as stale (a figure by the digest of the data it was drawn
    from, `report_plots.Plot`). Only "ok" records enter the tables (failed cells are counted in the header).
    Raises InputError when the file has nothing to report or no record has `metric`.
    """
    results_path = Path(results_path)
    out_dir = Path(out_dir)
    records = read_results(results_path)
    cell_records = [r for r in records if r.get("kind", "cell") == "cell"]
    ok = [r for r in cell_records if r["status"] == "ok"]
    cosine = [r for r in records if r.get("kind") == "cosine"]
    check_cosine(cosine, str(results_path))
    if cosine_path is not None:
        cosine += read_cosine(Path(cosine_path))
    cosine += cosine_from_cells(ok)
    if not ok and not cosine:
        raise InputError(f"{results_path}: no finished ('ok') records to report")
    scored = [r for r in ok if metric in r.get("metrics", {})]
    if ok and not scored:
        available = sorted({name for r in ok for name in r.get("metrics", {})})
        raise InputError(f"{results_path}: no record has metric {metric!r}; available: {', '.join(available)}")

    header_lines = header(results_path, cell_records, ok, scored, metric)
    scored, one_run = one_run_per_text_arm(scored)
    tables, arms = group_tables(scored, metric)
    rows = PredictionReader(results_path)
    verdicts = {key: against_english(arms[key], rows, metric) for key in tables}
    around = {key: against_english_across_C(arms[key], rows, metric) for key in tables}
    lines = (header_lines + head_convergence(ok) + degenerate_counts(scored) + interval_note(verdicts)
             + draws_note(scored) + [line for n in one_run for line in (f"- one run per LM-trained arm: {n}", "")])
    plots: list[Plot] = []
    for (language, task), table in tables.items():
        lines += (markdown_table(language, task, table) + verdicts_markdown(verdicts[(language, task)])
                  + noise_note(verdicts[(language, task)]))
        for head, part in per_head(table):
            stem = _slug(f"{language}_{task}" + (f"_head-{head}" if head else ""))
            title = f"{language} · {task}" + (f" · head {head}" if head else "")
            plots.append(plot_scores(part, out_dir / f"scores_{stem}.png", title, metric))
            methods = {row.method for row in part}
            if "langalign" in methods and methods & ABLATION_METHODS:
                ablations = {row: stats for row, stats in part.items() if row.method == "langalign"
                             or row.method in ABLATION_METHODS or row.method in REFERENCE_METHODS}
                plots.append(plot_scores(ablations, out_dir / f"ablations_{stem}.png", f"{title}: ablations",
                                          metric))
    lines += robustness_markdown(tables, verdicts) + c_sensitivity_markdown(verdicts, around)
    if cosine:
        groups = cosine_groups(cosine)
        lines += cosine_markdown(groups)
        plots.append(plot_cosine(groups, out_dir / "cosine.png"))

    markdown = "\n".join(lines).rstrip() + "\n"
    texts = {out_dir / "table.md": markdown, out_dir / "table.csv": csv_text(tables)}
    stale: list[Path] = []
    if write:
        for path, text in texts.items():
            write_text(path, text)
        for plot in plots:
            plot.draw()
    else:
        stale = [path for path, text in texts.items() if not _holds(path, text)]
        stale += [plot.path for plot in plots if not plot.is_current()]
    return ReportFiles(markdown, out_dir / "table.md", out_dir / "table.csv", tuple(p.path for p in plots),
                       tuple(stale))


def _holds(path: Path, text: str) -> bool:
    try:
        return path.read_bytes() == text.encode("utf-8")
    except OSError:
        return False


def _slug(text: str) -> str:
    """A file-name-safe version of a language/task name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text)
