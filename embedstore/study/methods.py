"""A sweep method's facts, in one table: what grids multiply it by, which rows it trains and tests on, which
config table shapes its result, how it runs and how a report draws it.

Config validation and grid expansion (`cells`), the runners (`experiments`), what makes a result stale
(`context`), where a cell runs (`resources`) and the report read their answers here, so a new method is one row
of `TABLE` plus, when no runner kind fits, its runner in `experiments.RUNNERS`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Runner = Literal["baseline", "langalign", "e2e", "adapted", "lora_ta"]


@dataclass(frozen=True)
class Method:
    """One sweep method.

    `aligner`: it trains an aligner, so a grid multiplies it by `aligners`. `pairs`: that aligner trains on a
    separate parallel set, so a grid multiplies it by `pair_sizes`. `runner`: the runner kind in
    `experiments.RUNNERS`. `train_role`/`test_role`: the task roles its head trains and is scored on.
    `reverse`: its aligner maps target vectors into English space. `share`: its aligner trains on the task rows
    and their translations. `adapt`: the `embedstore adapt` method it runs first. `options`: the config table
    (`e2e`, `adapt`) whose options change its result. `reference`: a baseline without alignment (drawn as a
    line in plots, in `line` style). `ablation`: an ablation of LangAlign, drawn beside it in a report's ablation
    plot. `color`: its colour in plots. `cached_vectors`: it reads the store's vectors; a method that fine-tunes
    the encoder and scores with it (lora-ta) reads none, so a study of it alone encodes nothing first.
    `text_head`: its head is trained on text together with the LM (`heads.text_network` names the network it
    trains), not fitted on cached vectors: head kinds with one network there are one run."""

    name: str
    runner: Runner
    aligner: bool = False
    pairs: bool = False
    train_role: str = "en_train"
    test_role: str = "test"
    reverse: bool = False
    share: bool = False
    adapt: str | None = None
    options: Literal["e2e", "adapt"] | None = None
    reference: bool = False
    ablation: bool = False
    color: str = "grey"
    line: str = "-"
    cached_vectors: bool = True
    text_head: bool = False


_ALL = (
    Method("english", "baseline", reference=True, color="black", line="--"),
    Method("native", "baseline", train_role="native_train", reference=True, color="tab:green"),
    Method("translated", "baseline", train_role="translated_train", reference=True, color="tab:purple",
           line=":"),
    Method("translate-test", "baseline", test_role="en_test", reference=True, color="tab:brown", line="-."),
    Method("langalign", "langalign", aligner=True, pairs=True, color="tab:blue"),
    Method("reverse", "langalign", aligner=True, pairs=True, reverse=True, color="tab:orange"),
    # the LangAlign procedure with the aligner left out: no aligner, no pairs, once per task size
    Method("ablation-omit", "baseline", ablation=True, color="tab:pink"),
    # the aligner trains on the task rows themselves: its data size is the task size
    Method("ablation-share", "langalign", aligner=True, share=True, ablation=True, color="tab:gray"),
    Method("langalign-e2e", "e2e", aligner=True, pairs=True, options="e2e", color="tab:olive", text_head=True),
    # adapt-*: LoRA on `[adapt] size` English task rows; SimCSE and align on the cell's pairs, so one adapted
    # encoder serves every task size; then English-only, or LangAlign for adapt-align+langalign
    Method("adapt-lora", "adapted", adapt="lora", options="adapt"),
    Method("adapt-simcse", "adapted", pairs=True, adapt="simcse", options="adapt"),
    Method("adapt-align", "adapted", pairs=True, adapt="align", options="adapt"),
    Method("adapt-align+langalign", "adapted", aligner=True, pairs=True, adapt="align", options="adapt"),
    # the paper's LoRA-TA (its Appendix G): adapters and a task head fine-tuned together on the translated task
    # rows (task_size of them), that head scoring the native test rows; `[adapt]` options as for adapt-lora.
    # adapt-lora above is another method: adapters on English rows, merged, then a new head on frozen vectors
    Method("lora-ta", "lora_ta", train_role="translated_train", options="adapt", cached_vectors=False,
           text_head=True),
)

TABLE: dict[str, Method] = {m.name: m for m in _ALL}
"""Every method by name, in the order tables list them (baselines first, then LangAlign and its variants)."""

METHODS: tuple[str, ...] = tuple(TABLE)
ALIGNER_METHODS: frozenset[str] = frozenset(m.name for m in _ALL if m.aligner)
PAIR_METHODS: frozenset[str] = frozenset(m.name for m in _ALL if m.pairs)
ADAPT_METHODS: dict[str, str] = {m.name: m.adapt for m in _ALL if m.adapt is not None}
REFERENCE_METHODS: tuple[str, ...] = tuple(m.name for m in _ALL if m.reference)
ABLATION_METHODS: frozenset[str] = frozenset(m.name for m in _ALL if m.ablation)
TEXT_HEAD_METHODS: frozenset[str] = frozenset(m.name for m in _ALL if m.text_head)


#: What a record of a `text_head` method says of its head's training, beside the network (`head_metrics`).
TEXT_HEAD_TRAINING = ("trained end to end with the LM by the run's AdamW; no C search, so no C-sensitivity "
                      "applies")


def head_metrics(method: str, head: str) -> dict[str, str]:
    """What a cell of `method` configured with `head` trained as its head, for its record's metrics: for a
    `text_head` method the network (`heads.text_network`, "linear" for logistic and linear alike) and how it was
    trained, so a reader of the record is not told "logistic" of an nn.Linear trained by AdamW; nothing for a head
    fitted on cached vectors, whose kind says what it is. The runners write it, `sweep.read_results` adds it to
    records written before it existed."""
    if not TABLE[method].text_head:
        return {}
    from embedstore.estimators.heads import text_network  # the registry (torch), only where a text head is asked of

    return {"head_network": text_network(head), "head_training": TEXT_HEAD_TRAINING}
