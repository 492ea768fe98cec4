"""A sweep report's numbers: results grouped into tables (language, task → row → task size → mean, CI, seeds),
the records behind each entry for the verdicts, and cosine records gathered and averaged. No text, no figures:
`report_markdown` and `report_plots` draw what this module computes, `report.build_report` ties them together.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from embedstore.base.errors import InputError
from embedstore.base.stats import Z95, mean_ci, wilson
from embedstore.study.cells import ALIGNERS, DEFAULT_HEAD, DEFAULT_RECIPE, format_size, method_label
from embedstore.study.methods import METHODS, PAIR_METHODS, TEXT_HEAD_METHODS, head_metrics
from embedstore.study.predictions import PredictionReader
from embedstore.study.verdicts import Comparison, across_C, compare


COSINE_FIELDS: tuple[str, ...] = ("en_tr", "aligned_tr", "aligned_en", "shuffled")
#: Retrieval P@1 of the same held-out pairs, as LangAlign cells record it (metrics.aligner), plotted beside cosine.
RETRIEVAL_FIELDS: tuple[str, ...] = ("p1_raw", "p1_aligned", "p1_head_space")


@dataclass(frozen=True)
class Row:
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
            size_key(self.pair_size),
            self.recipe,
            self.head,
        )

    def label(self, show_recipe: bool, show_head: bool) -> str:
        """e.g. "langalign fc 5k"; the recipe/head only when a table mixes several; a head trained with the LM
        (`row_of`: its network, whatever name its cells were run under) says so."""
        parts = [method_label(self.method, self.aligner, self.pair_size)]
        if show_recipe:
            parts.append(f"recipe={self.recipe}")
        if show_head:
            parts.append(f"head={self.head}" + (" (LM-trained)" if self.method in TEXT_HEAD_METHODS else ""))
        return " ".join(parts)


def row_of(record: dict[str, Any]) -> Row:
    """The table row of a cell record. A method whose head trains with the LM (`methods.TEXT_HEAD_METHODS`) is
    filed under the network it trained (`metrics.head_network`, which `sweep.read_results` gives older records
    too): its cells named head=logistic and head=linear are one run, so they are one row, never two heads."""
    cell = record["cell"]
    head = cell.get("head", DEFAULT_HEAD)
    if cell["method"] in TEXT_HEAD_METHODS:
        head = record.get("metrics", {}).get("head_network") or head_metrics(cell["method"], head)["head_network"]
    return Row(cell["method"], cell.get("aligner"), cell.get("pair_size"), cell.get("recipe", DEFAULT_RECIPE), head)


def one_run_per_text_arm(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """`records` with each LM-trained arm (`row_of`'s row at one task size) read from one context, and what was
    left out, one line per arm. Such an arm's records under several head names, or written by older versions
    (another context id), can hold the same seed twice; mixing contexts would also pool runs whose settings may
    differ. So the arm reads the context of its newest record (`written_at`) only, one record per seed (the last),
    and the lines name the contexts left out, so none is dropped or mixed in silently."""
    arms: dict[tuple[Row, Any, str, str], list[dict[str, Any]]] = defaultdict(list)
    out: list[dict[str, Any]] = []
    for r in records:
        cell = r["cell"]
        if cell["method"] in TEXT_HEAD_METHODS:
            arms[(row_of(r), cell.get("task_size"), cell["language"], cell["task"])].append(r)
        else:
            out.append(r)
    notes = []
    for (row, size, _, _), found in arms.items():
        newest = max(found, key=lambda r: r.get("provenance", {}).get("written_at") or "")["context"]
        kept = {r["cell"]["seed"]: r for r in found if r["context"] == newest}
        out += kept.values()
        others = defaultdict(list)
        for r in found:
            if r["context"] != newest:
                others[r["context"]].append(r)
        if others or len({r["cell"].get("head") for r in found}) > 1:
            notes.append(_context_note(row, size, newest, list(kept.values()), others))
    return out, notes


def _context_note(row: Row, size: int | None, context: str, kept: list[dict[str, Any]],
                  others: dict[str, list[dict[str, Any]]]) -> str:
    """The line `one_run_per_text_arm` writes for one arm: the context it reads and the ones it leaves out."""
    def which(records: list[dict[str, Any]]) -> str:
        heads = sorted({r["cell"].get("head", DEFAULT_HEAD) for r in records})
        seeds = sorted(r["cell"]["seed"] for r in records)
        return f"head named {', '.join(heads)}, seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))}"

    left = "; ".join(f"context {ctx} ({which(rs)})" for ctx, rs in others.items())
    return (f"{method_label(row.method, row.aligner, row.pair_size)} at task size {format_size(size)} (its head the "
            f"{row.head!r} network, trained with the LM): read from context {context} ({which(kept)}), the newest"
            + (f"; left out: {left}" if left else ""))


@dataclass(frozen=True)
class Stat:
    """Mean, CI half-width (NaN for one seed), sample std (NaN for one seed) and seed count of one entry."""

    mean: float
    ci95: float
    std: float
    n: int


Table = dict[Row, dict[int | None, Stat]]
Arms = dict[Row, dict[int | None, list[dict[str, Any]]]]
"""The records behind each table entry: what a verdict compares."""
Verdicts = dict[tuple[Row, int | None], Comparison]
"""Each row's comparison with English-only under the same head, at each task size."""
AroundC = dict[tuple[Row, int | None], dict[str, Comparison]]
"""The same comparisons with every head refitted at C/10 and at C×10 (`verdicts.across_C`)."""


def group_tables(
    records: Iterable[dict[str, Any]], metric: str
) -> tuple[dict[tuple[str, str], Table], dict[tuple[str, str], Arms]]:
    """Group records by (language, task) → row → task size; summarise each group over seeds (the tables) and
    keep its records (the verdicts)."""
    grouped: dict[tuple[str, str], Arms] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for record in records:
        cell = record["cell"]
        grouped[(cell["language"], cell["task"])][row_of(record)][cell.get("task_size")].append(record)
    tables: dict[tuple[str, str], Table] = {}
    arms: dict[tuple[str, str], Arms] = {}
    for key in sorted(grouped):
        rows = grouped[key]
        order = sorted(rows, key=Row.sort_key)
        arms[key] = {row: {size: rows[row][size] for size in sorted(rows[row], key=size_key)} for row in order}
        tables[key] = {row: {size: _entry(recs, metric) for size, recs in arms[key][row].items()} for row in order}
    return tables, arms


def against_english(arms: Arms, rows: PredictionReader | None, metric: str) -> Verdicts:
    """Every row compared with English-only under its own head (never another head's English row), at each
    task size, through the one verdict rule."""
    return _each_against_english(arms, lambda a, b, labels: compare(a, b, rows=rows, metric=metric, labels=labels))


def against_english_across_C(arms: Arms, rows: PredictionReader, metric: str) -> AroundC:
    """`against_english`'s comparisons again at C one decade either side of each head's own."""
    return _each_against_english(arms, lambda a, b, labels: across_C(a, b, rows=rows, metric=metric, labels=labels))


def _each_against_english(arms: Arms, judge: Callable[[list, list, tuple[str, str]], Any]) -> dict:
    english = {row.head: sizes for row, sizes in arms.items() if row.method == "english"}
    out = {}
    for row, sizes in arms.items():
        base = english.get(row.head, {})
        for size, records in sizes.items():
            if row.method != "english" and size in base:
                out[(row, size)] = judge(records, base[size],
                                         (method_label(row.method, row.aligner, row.pair_size), "english"))
    return out


SEEDS_AGREE = 5e-7
"""A seeds' half-width below this is agreement (to 6 decimals, but for the float sum's last bits), not an interval."""


def _entry(records: list[dict[str, Any]], metric: str) -> Stat:
    """A table entry over seeds; an accuracy the seeds agree on (a cell that uses every row) gets its test rows'
    interval instead of a zero one."""
    stat = summarise([float(r["metrics"][metric]) for r in records])
    if metric == "accuracy" and stat.n > 1 and stat.ci95 < SEEDS_AGREE:
        with_rows = accuracy_stat(records)
        if not math.isnan(with_rows.ci95):  # records that do not say their test rows stay "same at every seed"
            return with_rows
    return stat


def summarise(values: Sequence[float]) -> Stat:
    mean, half_width, n = mean_ci(values)
    std = math.nan if n == 1 else math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return Stat(mean, half_width, std, n)


def per_head(table: Table) -> list[tuple[str | None, Table]]:
    """The table split by head family, the default head first (None: one head, no split). One figure per head:
    with two heads in one panel every method had two bars, and the figure read as a list, not a comparison (the
    head comparison is the robustness table's job)."""
    heads = sorted({row.head for row in table}, key=lambda h: (h != DEFAULT_HEAD, h))
    if len(heads) == 1:
        return [(None, table)]
    return [(head, {row: stats for row, stats in table.items() if row.head == head}) for head in heads]


def check_cosine(records: list[dict[str, Any]], source: str) -> None:
    """Every cosine record needs the four numbers; name the record that lacks one."""
    for index, record in enumerate(records):
        for name in COSINE_FIELDS:
            value = record.get(name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InputError(
                    f"{source}: cosine record {index}: {name!r} is {value!r}; a cosine record needs numbers "
                    f"{', '.join(COSINE_FIELDS)}"
                )


def read_cosine(path: Path) -> list[dict[str, Any]]:
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
    check_cosine(records, str(path))
    return records


def cosine_from_cells(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """LangAlign cells measure cosine on their held-out test translations (metrics.aligner.cosine); the task
    size does not change the aligner, so only the largest task size of each (aligner, pair size, seed) is kept."""
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in records:
        cell, aligner = r["cell"], r.get("metrics", {}).get("aligner", {})
        cos = aligner.get("cosine")
        if cell.get("method") != "langalign" or not cos:
            continue
        key = (cell["language"], cell["task"], cell["aligner"], size_key(cell["pair_size"]), cell["seed"])
        if key not in out or size_key(cell["task_size"]) > size_key(out[key]["cell"]["task_size"]):
            out[key] = {"kind": "cosine", "cell": cell, **{name: cos[name] for name in COSINE_FIELDS},
                        **{name: aligner[name] for name in RETRIEVAL_FIELDS if name in aligner},
                        **{name: cos[name] for name in ("rows", "row_sd") if name in cos}}
    return list(out.values())


def cosine_groups(records: list[dict[str, Any]]) -> dict[str, dict[str, Stat]]:
    """Average cosine records over seeds, grouped by language, aligner and pair size where recorded.

    Every seed of a group is measured on the same held-out pairs, so an interval over seeds says nothing of what
    other pairs would give (it read ±0.000 where the fit was deterministic). Each mean's interval is therefore the
    seeds' t-interval widened by the pairs' own sampling noise (`_row_half`: the records' spread over rows), as
    `verdicts`' approximate interval combines them. A group whose records lack that spread (written before it was
    recorded) gets no interval: its mean is descriptive of those pairs (`Stat.ci95` NaN)."""
    grouped: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        where = record.get("cell", record)
        key = (where.get("language") or "", where.get("aligner") or "", size_key(where.get("pair_size")))
        grouped[key].append(record)
    result: dict[str, dict[str, Stat]] = {}
    for key in sorted(grouped):
        where = grouped[key][0].get("cell", grouped[key][0])
        parts = [p for p in (where.get("language"), where.get("aligner")) if p]
        if where.get("aligner") and where.get("method", "langalign") in PAIR_METHODS:
            parts.append(format_size(where.get("pair_size")))
        label = " ".join(parts) or "all records"
        fields = COSINE_FIELDS + tuple(name for name in RETRIEVAL_FIELDS
                                      if all(isinstance(r.get(name), (int, float)) for r in grouped[key]))
        result[label] = {name: _over_seeds_and_rows(grouped[key], name) for name in fields}
    return result


def _over_seeds_and_rows(records: list[dict[str, Any]], name: str) -> Stat:
    return over_seeds_and_rows([float(r[name]) for r in records], [_row_half(r, name) for r in records])


def over_seeds_and_rows(values: Sequence[float], row_halves: Sequence[float | None]) -> Stat:
    """Values measured on the same rows at every seed: the seeds' t-interval widened by the rows' sampling (each
    value's 95 % half-width over its rows, `row_halves`); NaN (no interval, the mean is descriptive) when a value's
    is unknown."""
    over_seeds = summarise(values)
    if any(h is None for h in row_halves):
        return replace(over_seeds, ci95=math.nan)
    seeds = 0.0 if math.isnan(over_seeds.ci95) else over_seeds.ci95
    return replace(over_seeds, ci95=math.hypot(seeds, sum(row_halves) / len(row_halves)))


def accuracy_stat(records: Sequence[dict[str, Any]]) -> Stat:
    """An accuracy over seeds with its test rows' sampling counted (`over_seeds_and_rows`, each record's `metrics.n`
    test rows): a cell that uses every row gives the same value at every seed, and its interval is then its test
    rows', never a zero one."""
    values = [float(r["metrics"]["accuracy"]) for r in records]
    return over_seeds_and_rows(values, [proportion_half(v, r["metrics"].get("n")) for v, r in zip(values, records)])


def proportion_half(p: float, rows: int | None) -> float | None:
    """The Wilson 95 % half-width of a proportion (an accuracy, a P@1) over `rows` rows; None when unknown."""
    if not isinstance(rows, int) or rows < 2:
        return None
    low, high = wilson(p, rows)
    return (high - low) / 2


def _row_half(record: dict[str, Any], name: str) -> float | None:
    """The 95 % half-width of one record's mean over its rows: a cosine's from its per-row spread (`row_sd`), a
    P@1's as a proportion's (Wilson); None when the record does not say (no `rows`, or no spread for a cosine)."""
    rows = record.get("rows")
    if not isinstance(rows, int) or rows < 2:
        return None
    if name in RETRIEVAL_FIELDS:
        return proportion_half(float(record[name]), rows)
    sd = record.get("row_sd", {}).get(name)
    return None if not isinstance(sd, (int, float)) else Z95 * float(sd) / math.sqrt(rows)


def size_key(size: int | None) -> tuple[int, int]:
    """Sort sizes ascending with None ('all') last."""
    return (1, 0) if size is None else (0, size)
