"""Bitext mining: propose translation pairs between two unrelated sets of texts (LASER's margin recipe).

Artetxe & Schwenk (2019) score a candidate pair by how much closer the two vectors are than each is to its own
k nearest neighbours on the other side: the ratio margin cos(x, y) / ((mean_k cos(x, NN_k(x)) + mean_k cos(y,
NN_k(y))) / 2), k = 4. Like CSLS it discounts hubs, vectors near everything. A pair is kept when each side is the
other's best candidate (the "intersection" of both directions), the high-precision setting; its margin is kept
too so a caller can trade recall for precision with a threshold (LASER's papers use about 1.06 on bitext).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedstore.base.atomic import check_writable, write_text
from embedstore.base.errors import ConfigError, InputError
from embedstore.base.provenance import stamp
from embedstore.base.retrieval import mutual_best, unit_rows
from embedstore.data.tasks import Source, load_rows
from embedstore.encoding.encode import embed
from embedstore.encoding.options import EncodeOptions

#: LASER's neighbourhood size for the margin.
MARGIN_K = 4


@dataclass(frozen=True)
class Mined:
    """Mutually best pairs (indices into the source and target sets) and their ratio margins, best first."""

    source: np.ndarray
    target: np.ndarray
    margin: np.ndarray


def mine(source: np.ndarray, target: np.ndarray, k: int = MARGIN_K, min_margin: float | None = None) -> Mined:
    """Pairs (i, j) where target j is source i's best candidate by ratio margin and source i is target j's."""
    if k < 1:
        raise ConfigError(f"k {k} must be at least 1")
    mutual = mutual_best(unit_rows(source.astype(np.float32)), unit_rows(target.astype(np.float32)), k, "margin")
    keep = np.ones(len(mutual.source), bool) if min_margin is None else mutual.score >= min_margin
    order = np.argsort(-mutual.score[keep], kind="stable")
    return Mined(mutual.source[keep][order], mutual.target[keep][order], mutual.score[keep][order])


def precision(mined: Mined, source_texts: list[str], target_texts: list[str], truth: dict[str, set[str]]) -> dict:
    """Share of mined pairs that are true translations (`truth`: source text → its translations), and the share
    of source texts recovered; by text, so a duplicated translation counts as the right one."""
    hits = np.array([target_texts[j] in truth.get(source_texts[i], ()) for i, j in zip(mined.source, mined.target)])
    n = len(source_texts)
    return {"mined": int(len(hits)), "correct": int(hits.sum()),
            "precision": float(hits.mean()) if len(hits) else float("nan"),
            "recall": float(hits.sum() / n) if n else float("nan")}


def run_mine(source: Source, target: Source, out: Path, *, names: tuple[str, str] | None = None, k: int = MARGIN_K,
             min_margin: float | None = None, store: str | Path | None = None,
             options: EncodeOptions = EncodeOptions(), progress: bool = False) -> dict[str, Any]:
    """`embedstore mine`: mine pairs between the texts of two files and write them, with margins, to `out`.

    `out` is TSV (columns: the two `names`, by default the source's and target's text columns, then `margin`) or JSONL (same keys) by its suffix, so a sweep's
    `pairs` table or `train-aligner --pairs` reads it as any pair file; it is written atomically."""
    t0 = time.perf_counter()
    names = names or (source.text, target.text)  # the columns' own names: zh text is never written under 'ko'
    if out.suffix not in (".tsv", ".jsonl"):
        raise ConfigError(f"out: {out} must end in .tsv or .jsonl")
    if names[0] == names[1] or "margin" in names or not all(names):
        raise ConfigError(f"output column names {names[0]!r} and {names[1]!r} must be non-empty, differ and not be "
                          "'margin'; name them with --names SOURCE,TARGET")
    for given in (source.file, target.file):
        if Path(given).resolve() == out.resolve():
            raise ConfigError(f"out: {out} is also an input file; write the mined pairs to another path")
    check_writable(out)  # where the atomic write puts its temporary file: out's own directory
    src_texts = list(dict.fromkeys(load_rows(source).texts))
    tgt_texts = list(dict.fromkeys(load_rows(target).texts))
    vectors = embed(src_texts + tgt_texts, store=store, options=options, progress=progress)
    mined = mine(vectors[:len(src_texts)], vectors[len(src_texts):], k, min_margin)
    pairs = [(src_texts[i], tgt_texts[j], float(m)) for i, j, m in zip(mined.source, mined.target, mined.margin)]
    write_text(out, _format(pairs, *names, out))
    return {"kind": "mine", "out": str(out), "pairs": len(pairs), "k": k, "min_margin": min_margin,
            "sizes": {"source_texts": len(src_texts), "target_texts": len(tgt_texts)},
            "source": source.identity(), "target": target.identity(),
            "columns": list(names),
            "encoding": options.to_dict(), **stamp(), "seconds": round(time.perf_counter() - t0, 3)}


def _format(pairs: list[tuple[str, str, float]], src_col: str, tgt_col: str, out: Path) -> str:
    if out.suffix == ".jsonl":
        return "".join(json.dumps({src_col: s, tgt_col: t, "margin": round(m, 6)}, ensure_ascii=False) + "\n"
                       for s, t, m in pairs)
    for row, (s, t, _) in enumerate(pairs, start=2):
        if any(c in text for text in (s, t) for c in "\t\n\r"):
            raise InputError(f"{out}: mined pair {row} holds a tab or line break, which TSV without quoting cannot "
                             "carry; write .jsonl instead")
    return f"{src_col}\t{tgt_col}\tmargin\n" + "".join(f"{s}\t{t}\t{m:.6f}\n" for s, t, m in pairs)
