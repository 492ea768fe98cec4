"""One cell of the LangAlign study: a frozen `Cell` → metrics and provenance, from cached vectors.

Every method is the same few steps (select rows, fetch vectors, maybe fit an aligner, fit a head, evaluate),
so each runner below is a handful of lines over shared helpers and methods differ only where the paper's do.
The store must already hold every vector (`prepare` encodes them once, in the parent process), so cells can
run in parallel processes without ever loading the transformer or contending for the store's writer lock.
"""
from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
from sklearn.base import clone
from sklearn.metrics import cohen_kappa_score

from embedstore.estimators.aligners import ALIGNERS, Aligner, load_aligner
from embedstore.estimators.aligners.inputs import aligner_for_run, fit_rows
from embedstore.base.atomic import atomic_dir, write_text
from embedstore.analysis.measures import fitted_alignment
from embedstore.study.adapted import adapted_context
from embedstore.study.cells import Cell, SweepConfig
from embedstore.study.methods import TABLE, head_metrics
from embedstore.study.context import context_id, training_precisions
from embedstore.study.predictions import RowPredictions, index_digest, rows_digest
from embedstore.study.vector_memory import RememberedVectors
from embedstore.study.verdicts import degeneracy
from embedstore.encoding.report import EncodeReport
from embedstore.encoding.encode import encode
from embedstore.base.errors import ConfigError
from embedstore.data.hashing import RememberedIds, text_ids
from embedstore.estimators.artifacts import CONFIG_FILE
from embedstore.estimators.heads import Head, LogisticHead, build_head, load_head
from embedstore.base.metrics import classification_metrics
from embedstore.data.selection import overlap_mask, parse_size, subsample
from embedstore.store import Store, StoreKey
from embedstore.data.tasks import Source, Task
from embedstore.pipelines.pipeline import save_pair_ids
from embedstore.estimators.training import FIT_REVISION, resolve_recipe

if TYPE_CHECKING:
    from embedstore.encoding.models import ModelSpec


@dataclass
class Context:
    """What every method needs: the cell, its task for the cell's language, and a vector lookup: the model as
    the study's driver resolved it (`spec`) and the store key computed from it once (`key`), which every step of
    the cell reads, writes and records under."""

    cell: Cell
    config: SweepConfig
    task: Task
    store: Store
    key: StoreKey
    spec: ModelSpec

    @property
    def aligner_cache(self) -> Path:
        return self.config.results.with_suffix(".aligners")

    def vectors(self, texts: list[str]) -> np.ndarray:
        return _VECTORS.get(self.store, self.key, _TEXT_IDS(texts))

    def require_model_vectors(self, does: str, why: str = "") -> None:
        """Refuse a method that trains the model itself (`does` it) when the sweep's [encoding] makes other vectors
        than the model's own mean-pooled last layer under its own prefix: what it trains would not be what the
        cell's cached steps were fitted on."""
        if (self.key.pooling, self.key.layer, self.key.prefix) != ("mean", self.spec.num_layers, self.spec.prefix):
            raise ConfigError(f"{self.cell.method} {does} the model's last layer with mean pooling and its own "
                              f"prefix, but the sweep's [encoding] makes vectors under {self.key.describe()}{why}; "
                              "drop those [encoding] settings or the method")


_TEXT_IDS = RememberedIds()
"""The ids of the texts this process's cells looked up (a worker runs many cells of one task)."""
_VECTORS = RememberedVectors()
"""The vectors this process's cells looked up, for the same reason."""
_ALIGNED = RememberedVectors(limit_bytes=2 << 30)
"""Each fitted aligner's output on the texts this process's cells mapped, by aligner (`_mapped`). Why so large a
limit: the paper's grid (`benchmarks/sweep.py`) maps ~105k rows an aligner (its training fold as training or
validation rows, and the test rows), ~160 MB at d=384, for 8 aligners whose cells alternate; a smaller memory
would start again empty before any of them came round again."""


def _fitted_where(ctx: Context, aligner_id: str) -> tuple[str, str]:
    """What names a fitted aligner and the vectors it maps within a process: its directory (its name a digest of
    the aligner's settings, pairs and store key; the results it sits beside) and the store the cell reads."""
    return str(ctx.aligner_cache / aligner_id), str(ctx.store.path)


def _mapped(ctx: Context, aligner: Aligner, aligner_id: str, texts: list[str]) -> np.ndarray:
    """`aligner.transform` of the texts' vectors, each text mapped once per process and aligner (`_fitted_where`).
    Every task size of a grid reuses an aligner and maps the same fold: its drawn rows as training rows, the rest
    as validation rows. A row's output does not depend on the rows mapped beside it (`aligners.base.map_rows`), so
    this is what each cell would compute alone."""
    return _ALIGNED.rows(_fitted_where(ctx, aligner_id), _TEXT_IDS(texts),
                         lambda ids: aligner.transform(_VECTORS.get(ctx.store, ctx.key, ids)))


def task_for(cell: Cell, config: SweepConfig) -> Task:
    return Task.from_table(cell.task, config.tasks[cell.task], cell.language, config.base_dir)


def _train_rows(ctx: Context, role: str, test_labels: set[str]) -> tuple[list[str], list[str], np.ndarray]:
    """Training rows restricted to labels the test set has (a head cannot be scored on absent classes),
    then a seeded subsample of `task_size`. Returns texts, labels and the kept row indices."""
    rows = ctx.task.rows(role)
    usable = np.array([i for i, lab in enumerate(rows.labels) if lab in test_labels], dtype=np.int64)
    pick = usable[subsample(len(usable), ctx.cell.task_size, ctx.cell.seed, f"{ctx.task.name} {role}")]
    return [rows.texts[i] for i in pick], [rows.labels[i] for i in pick], pick


def _task_texts(ctx: Context) -> list[list[str]]:
    """Every English training and test text of the task: what aligner pairs must not contain."""
    roles = ["en_train", "test"] + (["en_test"] if ctx.task.has("en_test") else [])
    return [ctx.task.rows(role).texts for role in roles]


def _pairs(ctx: Context, exclude: list[list[str]]) -> tuple[list[str], list[str], int]:
    """Aligner pairs disjoint (by text hash) from every task and test text, then a seeded `pair_size` sample
    (for aligners that need no pairs, unpaired texts of each side: `aligners.inputs.fit_rows`); also returns how
    many leading rows are true pairs.

    Disjoint from all task rows, not only the sampled ones, so the pairs (and the fitted aligner) do not depend
    on the task size: one aligner serves every task size of a sweep."""
    rows = ctx.task.rows("pairs")
    taken = _TEXT_IDS([t for texts in exclude for t in texts])
    clash = overlap_mask(_TEXT_IDS(rows.texts), taken) | overlap_mask(_TEXT_IDS(rows.targets), taken)
    keep = np.flatnonzero(~clash)
    picked = fit_rows(ALIGNERS[ctx.cell.aligner] if ctx.cell.aligner else None, len(keep), ctx.cell.pair_size, ctx.cell.seed,
                      f"{ctx.task.name} pairs (disjoint)")
    return ([rows.texts[i] for i in keep[picked.source]], [rows.targets[i] for i in keep[picked.target]],
            picked.n_pairs)


def settled_params(aligner: Aligner) -> dict:
    """The aligner's parameters with its recipe as settings, not a name whose meaning a release may change."""
    params = aligner.get_params(deep=False)
    if aligner.trains:
        params["recipe"] = asdict(resolve_recipe(params["recipe"], "aligner"))
    return params


def _fitted_aligner(ctx: Context, reverse: bool, src: list, tgt: list, n_pairs: int) -> tuple[Aligner, Path, bool]:
    """The aligner for these exact pairs and settings, fitted once per sweep and kept beside the results.

    A sweep multiplies every aligner by task sizes (and heads, recipes of the head) that do not change it, so
    refitting it per cell would repeat the most expensive step many times. The key hashes everything that
    determines the fit, including the pairs' text ids and the fit arithmetic's revision (`FIT_REVISION`), so a
    reused aligner is the one this cell would fit.
    """
    aligner = aligner_for_run(ALIGNERS[ctx.cell.aligner], n_pairs, seed=ctx.cell.seed, reverse=reverse,
                              recipe=ctx.cell.recipe)
    digest = hashlib.sha256(json.dumps({"class": type(aligner).__name__, "params": settled_params(aligner),
                                        "key": ctx.key.to_dict(), "fit_revision": FIT_REVISION},
                                       sort_keys=True, default=str).encode())
    digest.update(_TEXT_IDS(src).tobytes() + _TEXT_IDS(tgt).tobytes())
    path = ctx.aligner_cache / digest.hexdigest()[:20]
    if (path / CONFIG_FILE).is_file():
        return load_aligner(path), path, True
    aligner.fit(ctx.vectors(src), ctx.vectors(tgt))
    with atomic_dir(path, replace=True) as tmp:
        aligner.save(tmp, provenance={"cell": asdict(ctx.cell), "n_pairs": n_pairs, "n_source": len(src),
                                      "n_target": len(tgt), "store_key": ctx.key.to_dict()})
        save_pair_ids(tmp, text_ids(src), text_ids(tgt))  # so an analysis of it can keep to rows it never saw
    return aligner, path, False


def fitted_head(cell: Cell, config: SweepConfig, train_x: np.ndarray, train_y: list[str], *, C: float | None = None,
                start: Head | None = None) -> tuple[Head, bool]:
    """The cell's head fitted on these rows, fitted once per sweep and kept beside the results (`<results>.heads`);
    returns it and whether it was reused. With `C`: the same head at that C (its refits at C/10 and C×10,
    `regularisation_neighbours`), its solver started from `start`'s solution (`LogisticHead.fit_from`).

    Several methods fit the very same head: English-only, translate-test, ablation-omit and every reverse
    aligner all train on the same English vectors under one seed, so each of those fits (and its refits at
    C/10 and C×10) repeats the first. The key hashes the head's class and settings and the training arrays
    themselves, so a reused head is the one this cell would fit. A head whose learned state cannot be saved
    without pickling (some scikit-learn classifiers) is fitted every time."""
    params = dict(config.head_params.get(cell.head) or {})
    if C is not None:
        params["C"] = C
    head = build_head(cell.head, seed=cell.seed, recipe=cell.recipe, params=params)
    params = head.get_params(deep=False)
    if head.uses_recipe:
        params["recipe"] = asdict(resolve_recipe(params.get("recipe"), "head"))
    x = np.ascontiguousarray(train_x, dtype=np.float32)
    digest = hashlib.sha256(json.dumps({"class": type(head).__name__, "params": params, "shape": x.shape,
                                        "labels": list(map(str, train_y)), "fit_revision": FIT_REVISION},
                                       sort_keys=True, default=str).encode())
    digest.update(x.tobytes())
    path = config.results.with_suffix(".heads") / digest.hexdigest()[:20]
    if (path / CONFIG_FILE).is_file():
        return load_head(path), True
    if start is not None and isinstance(head, LogisticHead):
        head.fit_from(start, x, train_y)
    else:
        head.fit(x, train_y)
    if head.saveable:
        with atomic_dir(path, replace=True) as tmp:
            head.save(tmp, provenance={"cell": asdict(cell), "n_train": len(x)})
    return head, False


_DIAGNOSED: dict[tuple[tuple[str, str], int, bytes], dict] = {}
"""The aligner diagnostics this process computed, by aligner, seed and test rows (`_aligner_diagnostics`)."""


def _aligner_diagnostics(ctx: Context, aligner: Aligner, aligner_id: str) -> dict:
    """Cosine and retrieval of aligned vs raw on the test rows' translations, when the task has them: cosine
    alone can look fine while an aligner has collapsed, so retrieval is always reported next to it. These rows
    are disjoint from the aligner's pairs (`_pairs`). For an aligner applied to target text at test time the
    head compares A(en) with A(tr): `p1_head_space*` and `collapse_check_head_space` measure that space, beside
    the A(en)-against-raw-tr figures. (A reverse aligner maps the test rows, "tr", into English space.)

    Computed once per process for an aligner (`_fitted_where`), seed and test rows: nothing else enters them, and
    every task size of a grid reuses the aligner (the paper's grid: 7 cells an aligner, ~4 CPU-s of retrieval and
    transforms each)."""
    test_texts = ctx.task.rows("test").texts
    en_texts = ctx.task.rows("en_test").texts if ctx.task.has("en_test") else []
    rows = hashlib.sha256(_TEXT_IDS(en_texts).tobytes() + b"|" + _TEXT_IDS(test_texts).tobytes()).digest()
    memo = (_fitted_where(ctx, aligner_id), ctx.cell.seed, rows)
    if memo not in _DIAGNOSED:
        _DIAGNOSED[memo] = _diagnose(ctx, aligner, en_texts, test_texts)
    return copy.deepcopy(_DIAGNOSED[memo])


def _diagnose(ctx: Context, aligner: Aligner, en_texts: list[str], test_texts: list[str]) -> dict:
    out = {k: v for k, v in aligner.diagnostics().items()
           if k in ("collapsed", "val_retrieval_p1", "identity_retrieval_p1")}
    if en_texts:
        en = ctx.vectors(en_texts)
        tr = ctx.vectors(test_texts)
        if len(en) == len(tr):
            report = fitted_alignment(aligner, en, tr, ks=(1,), seed=ctx.cell.seed)
            out["cosine"] = report["cosine"]
            for space, forward in ((k, v["forward"]) for k, v in report["retrieval"].items()):
                out[f"p1_{space}"], out[f"p1_{space}_csls"] = forward["nn"]["p@1"], forward["csls"]["p@1"]
            out["collapse_check"] = report["collapse"]
            if "collapse_head_space" in report:
                out["collapse_check_head_space"] = report["collapse_head_space"]
    return out


@dataclass
class HeadInputs:
    """What a cell's head is fitted on and scored against: the one place a method's rows become arrays (the
    runners and `benchmarks/heads.py` both read it, so a benchmark scores exactly what a sweep does)."""

    train_x: np.ndarray
    train_y: list[str]
    test_x: np.ndarray
    test_y: list[str]
    sizes: dict
    draws: dict
    aligner: Aligner | None = None
    raw_test_x: np.ndarray | None = None
    #: Held-out translated pairs of the training side, mapped as the head's training rows (English side) and as
    #: its test rows (target side) are: what `validation_score` reads; None where the task has no translations.
    validation: tuple[np.ndarray, np.ndarray] | None = None


@dataclass
class MethodResult:
    """What a method's runner hands `run_cell`: the metrics, the data sizes, the digests of the draws (test rows,
    training rows, pairs: what a verdict checks two cells share) and the per-test-row predictions, where the
    method has them."""

    metrics: dict
    sizes: dict
    draws: dict
    rows: RowPredictions | None = None


def _draws(ctx: Context, picked: np.ndarray, pairs: tuple[list, list, int] | None = None) -> dict:
    """The identity of a cell's draws. The test rows are named by the target-language test texts for every
    method (translate-test scores their English side, row for row), so all methods of a task share them."""
    draws = {"test": rows_digest(ctx.task.rows("test").texts), "train": index_digest(picked)}
    if pairs is not None:
        src, tgt, n_pairs = pairs
        draws["pairs"] = rows_digest(list(zip(src[:n_pairs], tgt[:n_pairs])))
    return draws


VALIDATION_SPLIT = ("the training fold's rows this seed did not draw as task rows, English side and its "
                    "translation (translated_train), labels unused")
"""Where a LangAlign cell's validation score comes from (`validation_score`): never the test rows."""


def _validation_texts(ctx: Context, picked: np.ndarray) -> tuple[list[str], list[str]] | None:
    """The English and target texts of the held-out translated pairs of the training side (`VALIDATION_SPLIT`),
    or None when the task has no translations row-parallel to its English training rows (the sentiment study).

    Why these rows: they are disjoint from the head's training rows (not drawn), from the aligner's pairs (which
    exclude every task text) and from the test rows, they exist for every arm at a seed alike (so the arms'
    scores are comparable), and they need no target-language labels, only what an aligner needs anyway: pairs."""
    if not ctx.task.has("translated_train"):
        return None
    english, translated = ctx.task.rows("en_train"), ctx.task.rows("translated_train")
    if len(english.texts) != len(translated.texts):
        return None
    held = np.setdiff1d(np.arange(len(english.texts)), picked)
    if held.size == 0:
        return None
    return [english.texts[i] for i in held], [translated.texts[i] for i in held]


def validation_score(head: Head, validation: tuple[np.ndarray, np.ndarray] | None) -> dict | None:
    """How often the head decides a held-out sentence and its translation alike, beyond chance: Cohen's kappa
    between its predictions on the English side (mapped as its training rows were) and on the target side
    (mapped as the test rows are), with the raw agreement beside it. It is what a LangAlign arm is chosen by
    (`study.selection`), never the test rows.

    Kappa, not agreement: a head that answers one class on both sides agrees on every row and transfers nothing;
    kappa counts only the agreement its two label distributions do not explain (0 for that head)."""
    if validation is None:
        return None
    english, target = (np.asarray(head.predict(x)).astype(str) for x in validation)
    agreement = float(np.mean(english == target))
    # one class on both sides: chance explains all of the agreement (kappa's 0/0), so 0
    kappa = 0.0 if np.union1d(english, target).size == 1 else float(cohen_kappa_score(english, target))
    return {"rows": int(english.size), "kappa": kappa, "agreement": agreement, "split": VALIDATION_SPLIT}


def _baseline_inputs(ctx: Context) -> HeadInputs:
    """english / native / translated / translate-test / ablation-omit: a head on one kind of rows, no aligner."""
    method = TABLE[ctx.cell.method]
    test = ctx.task.rows(method.test_role)
    role = method.train_role
    texts, labels, picked = _train_rows(ctx, role, set(test.labels))
    return HeadInputs(ctx.vectors(texts), labels, ctx.vectors(test.texts), test.labels,
                      {"n_train": len(texts), "n_test": len(test.texts), "train_role": role}, _draws(ctx, picked))


def _langalign_inputs(ctx: Context) -> HeadInputs:
    """Step 2 on pairs (or, for ablation-share, on the task rows and their translations), step 3 on aligned
    English vectors. Target test vectors pass through the aligner when it prescribes so (reverse aligners, and
    forward ones trained with the identity term, as the paper keeps them in the model)."""
    cell, test = ctx.cell, ctx.task.rows("test")
    texts, labels, picked = _train_rows(ctx, "en_train", set(test.labels))
    reverse = TABLE[cell.method].reverse
    if TABLE[cell.method].share:
        translated = ctx.task.rows("translated_train")
        if len(translated.texts) != len(ctx.task.rows("en_train").texts):
            raise ConfigError(f"task {ctx.task.name}: ablation-share needs translated_train row-parallel to en_train")
        src, tgt = texts, [translated.texts[i] for i in picked]
        n_pairs = len(src)
    else:
        src, tgt, n_pairs = _pairs(ctx, _task_texts(ctx))
    t0 = time.perf_counter()
    aligner, aligner_path, reused = _fitted_aligner(ctx, reverse, src, tgt, n_pairs)
    fit_seconds = time.perf_counter() - t0
    test_x = ctx.vectors(test.texts)
    through = aligner.aligns_target_at_test
    mapped = lambda texts: _mapped(ctx, aligner, aligner_path.name, texts)  # noqa: E731
    held = _validation_texts(ctx, picked)
    validation = None if held is None else (ctx.vectors(held[0]) if reverse else mapped(held[0]),
                                            mapped(held[1]) if through else ctx.vectors(held[1]))
    sizes = {"n_train": len(texts), "n_pairs": n_pairs, "n_source_texts": len(src), "n_target_texts": len(tgt),
             "n_test": len(test.texts),
             "aligner_fit_seconds": round(fit_seconds, 3), "aligner_reused": reused,
             "aligner_params": settled_params(aligner), "aligner_id": aligner_path.name, **training_summary(aligner)}
    return HeadInputs(ctx.vectors(texts) if reverse else mapped(texts), labels,  # reverse: an English-trained head
                      mapped(test.texts) if through else test_x, test.labels, sizes,
                      _draws(ctx, picked, (src, tgt, n_pairs)), aligner, test_x, validation)


def head_inputs(cell: Cell, config: SweepConfig, spec: ModelSpec | None = None) -> HeadInputs:
    """The arrays a cached (non-e2e) cell fits and scores its head on, without fitting the head (`spec` as in
    `run_cell`)."""
    ctx = _context(cell, config, spec)
    return (_langalign_inputs if TABLE[cell.method].runner == "langalign" else _baseline_inputs)(ctx)


def fit_head(cell: Cell, config: SweepConfig, inputs: HeadInputs) -> tuple[Head, dict, RowPredictions]:
    """The cell's head (kind, its `[heads.<kind>]` params from the config, seed, recipe) fitted on `inputs` (or
    reused: `fitted_head`); the metrics on the primary test arrays with the head's fit report (did it converge,
    what it chose, whether it was reused) and whether it is degenerate (`verdicts.degeneracy`: then its cell is
    left out of verdicts); and its per-row predictions."""
    head, reused = fitted_head(cell, config, inputs.train_x, inputs.train_y)
    predicted = head.predict(inputs.test_x)
    metrics = classification_metrics(inputs.test_y, predicted, labels=sorted(set(inputs.test_y)))
    metrics["head"] = {**head.fit_report, "reused": reused}
    metrics["degenerate"] = degeneracy(metrics)
    neighbours = regularisation_neighbours(
        head, inputs, lambda C: fitted_head(cell, config, inputs.train_x, inputs.train_y, C=C, start=head)[0])
    if neighbours:
        metrics["head_regularisation"] = {"C": head.fit_report["C"]}
        for name, refit in neighbours.items():
            at = classification_metrics(inputs.test_y, refit["predicted"], labels=sorted(set(inputs.test_y)))
            metrics["head_regularisation"][name] = {"C": refit["C"], "accuracy": at["accuracy"],
                                                    "macro_f1": at["macro_f1"], "degenerate": degeneracy(at)}
    return head, metrics, RowPredictions.of(inputs.test_y, list(predicted), inputs.draws["test"],
                                            {name: refit["predicted"] for name, refit in neighbours.items()})


#: A head with a C is also fitted one decade either side of the C it used: a claim that flips within that range
#: rests on the choice of C (cross-validation and a plain grid pick C a half-decade apart), not only on the method.
C_DECADES: dict[str, float] = {"C/10": 0.1, "C*10": 10.0}


def regularisation_neighbours(head: Head, inputs: HeadInputs,
                              refit: Callable[[float], Head] | None = None) -> dict[str, dict]:
    """`head` refitted on the same rows with C one decade either side of the C it used (chosen by cross-
    validation or given), each with its predictions on the same test rows, in order (kept with the cell's
    per-row predictions, so a verdict can pair two cells at C/10, and at C×10, as it pairs them at the chosen
    C). Empty for a head without a C (the torch heads; sklearn heads keep their own parameters). `refit(C)`
    gives the refitted head (a sweep's keeps and reuses it: `fitted_head`); by default it is fitted here,
    started from `head`'s solution."""
    C = head.fit_report.get("C")
    if C is None or "C" not in head.get_params():
        return {}
    if refit is None:
        def refit(at: float) -> Head:
            twin = clone(head).set_params(C=at)
            return twin.fit_from(head, inputs.train_x, inputs.train_y)
    out = {}
    for name, factor in C_DECADES.items():
        out[name] = {"C": C * factor, "predicted": list(refit(C * factor).predict(inputs.test_x))}
    return out


def run_baseline(ctx: Context) -> MethodResult:
    inputs = _baseline_inputs(ctx)
    _, metrics, rows = fit_head(ctx.cell, ctx.config, inputs)
    return MethodResult(metrics, inputs.sizes, inputs.draws, rows)


def run_langalign(ctx: Context) -> MethodResult:
    """LangAlign, reverse and ablation-share; the score without the aligner is kept as a diagnostic."""
    inputs = _langalign_inputs(ctx)
    aligner, test_x = inputs.aligner, inputs.raw_test_x
    head, metrics, rows = fit_head(ctx.cell, ctx.config, inputs)
    truth = np.asarray(inputs.test_y)
    through = aligner.aligns_target_at_test
    metrics["aligner_at_test"] = through
    aligned_test = inputs.test_x if through else aligner.transform(test_x)  # the head's test rows already are
    metrics["accuracy_with_aligner"] = float(np.mean(head.predict(aligned_test) == truth))
    metrics["accuracy_without_aligner"] = float(np.mean(head.predict(test_x) == truth))
    metrics["aligner"] = _aligner_diagnostics(ctx, aligner, inputs.sizes["aligner_id"])
    metrics["validation"] = validation_score(head, inputs.validation)
    return MethodResult(metrics, inputs.sizes, inputs.draws, rows)


def training_summary(aligner: Aligner) -> dict:
    """How a trained aligner's fit went (precision it actually ran in, epochs, best validation loss), kept in
    the cell record: the saved aligner beside the results holds the full history, but it is not shipped with
    the results file."""
    history = getattr(aligner, "history_", None)
    if not history:
        return {}
    keep = ("precision", "fit_revision", "best_epoch", "best_val_loss", "stopped_early", "seconds")
    return {"aligner_training": {**{k: history[k] for k in keep if k in history},
                                 "epochs_run": len(history.get("epochs", []))}}


def _write_rows(path: Path, texts: list, labels: list[str]) -> Source:
    """Rows as JSONL (any text survives it, tabs and newlines included), replaced atomically so a kill never
    leaves a half-written file for a resumed finetune to hash."""
    paired = bool(texts) and isinstance(texts[0], tuple)
    lines = [json.dumps({"text": t[0], "pair": t[1], "label": lab} if paired else {"text": t, "label": lab},
                        ensure_ascii=False) for t, lab in zip(texts, labels)]
    write_text(path, "\n".join(lines) + "\n")
    return Source(path, "text", pair="pair" if paired else None, label="label")


def run_e2e(ctx: Context) -> MethodResult:
    """langalign-e2e: step 3 on text (`embedstore finetune`) behind the same step-2 aligner, pairs and rows as
    the cached langalign cell. The selected rows go to JSONL files under `<results>.e2e/<cell>-<context>/`, so
    the run is an ordinary finetune there: checkpointed, and resumed by re-running the sweep."""
    # loads the transformer: only end-to-end cells need it
    from embedstore.text_training.finetune import finetune
    from embedstore.text_training.options import TrainOptions

    ctx.require_model_vectors("trains through", ": its aligner would sit behind other vectors than it was fitted on")
    cell, test = ctx.cell, ctx.task.rows("test")
    texts, labels, picked = _train_rows(ctx, "en_train", set(test.labels))
    src, tgt, n_pairs = _pairs(ctx, _task_texts(ctx))
    aligner, aligner_dir, reused = _fitted_aligner(ctx, False, src, tgt, n_pairs)
    # keyed by the context too: changed [e2e] options or task files make a new run, not a clash with the old one
    work = ctx.config.results.with_suffix(".e2e") / f"{cell.id}-{context_id(ctx.config, cell, ctx.key.fingerprint)}"
    flags = {k: ctx.config.e2e[k] for k in ("freeze_lm", "train_aligner") if k in ctx.config.e2e}  # booleans: checked on load
    options = TrainOptions(seed=cell.seed, head=cell.head,
                           **{k: v for k, v in ctx.config.e2e.items() if k not in flags})
    through = aligner.aligns_target_at_test
    result = finetune(_write_rows(work / "train.jsonl", texts, labels),
                      _write_rows(work / "test.jsonl", test.texts, test.labels), aligner_dir, work / "run",
                      model=ctx.config.model, aligner_at_test=through, options=options, **flags)
    metrics = {**result.metrics, **head_metrics(cell.method, cell.head), "aligner_at_test": through,
               "aligner": _aligner_diagnostics(ctx, aligner, aligner_dir.name)}
    metrics["degenerate"] = degeneracy(metrics)
    sizes = {"n_train": len(texts), "n_pairs": n_pairs, "n_test": len(test.texts),
             "aligner_reused": reused, "aligner_params": settled_params(aligner), "finetune_dir": str(work),
             "finetune_steps": result.steps, "finetune_epochs": len(result.history["epochs"]) - 1,
             "finetune_wall_time_s": result.provenance["wall_time_s"], "finetune_config": result.provenance["config"]}
    draws = _draws(ctx, picked, (src, tgt, n_pairs))
    rows = None if result.predicted is None else RowPredictions.of(test.labels, result.predicted, draws["test"])
    return MethodResult(metrics, sizes, draws, rows)


def run_adapted(ctx: Context) -> MethodResult:
    """adapt-*: adapt the encoder (once per context: LoRA on `[adapt] size` English rows, SimCSE on the cell's
    pairs' texts of both languages, align on its pairs), then the cached English-only cell on it, or for
    adapt-align+langalign the cached LangAlign cell."""
    cell, test = ctx.cell, ctx.task.rows("test")
    method = TABLE[cell.method].adapt
    if method == "lora":
        sized = replace(ctx, cell=replace(cell, task_size=parse_size(ctx.config.adapt.get("size", "all"))))
        texts, labels, _ = _train_rows(sized, "en_train", set(test.labels))
        rows, ids = [{"text": t, "label": lab} for t, lab in zip(texts, labels)], text_ids(texts)
    else:
        src, tgt, _ = _pairs(ctx, _task_texts(ctx))
        rows = ([{"text": t} for t in src + tgt] if method == "simcse"
                else [{"text": s, "target": t} for s, t in zip(src, tgt)])
        ids = text_ids(src + tgt)
    train_texts, _, picked = _train_rows(ctx, "en_train", set(test.labels))
    needed = train_texts + list(test.texts)
    langalign = TABLE[cell.method].aligner  # adapt-align+langalign: the LangAlign cell on the adapted encoder
    if langalign:
        needed += sum(_pairs(ctx, _task_texts(ctx))[:2], [])
        needed += ctx.task.rows("en_test").texts if ctx.task.has("en_test") else []
        needed += sum(_validation_texts(ctx, picked) or ([], []), [])  # the LangAlign cell's validation score
    adapted, info = adapted_context(ctx, method, rows, ids, needed)
    result = (run_langalign if langalign else run_baseline)(adapted)
    return replace(result, sizes={**result.sizes, "adapt": info})


def run_lora_ta(ctx: Context) -> MethodResult:
    """lora-ta: LoRA adapters and a task head fine-tuned together on the cell's translated task rows, that head
    scoring the native test rows (`text_training.lora_ta`, the paper's recipe with `[adapt]`'s options on top).
    Like langalign-e2e, an ordinary resumable run under `<results>.e2e/<cell>-<context>/`."""
    from embedstore.text_training.adapt import method_options
    from embedstore.text_training.lora_ta import lora_ta

    cell, test = ctx.cell, ctx.task.rows("test")
    texts, labels, picked = _train_rows(ctx, "translated_train", set(test.labels))
    work = ctx.config.results.with_suffix(".e2e") / f"{cell.id}-{context_id(ctx.config, cell, ctx.key.fingerprint)}"
    settings = {k: v for k, v in ctx.config.adapt.items() if k not in ("identity_weight", "size")}
    options = method_options("lora", seed=cell.seed, head=cell.head, **settings)
    result = lora_ta(_write_rows(work / "train.jsonl", texts, labels),
                     _write_rows(work / "test.jsonl", test.texts, test.labels), work / "run",
                     model=ctx.config.model, options=options)
    metrics = {**result.metrics, **head_metrics(cell.method, cell.head), "degenerate": degeneracy(result.metrics)}
    draws = _draws(ctx, picked)
    sizes = {"n_train": len(texts), "n_test": len(test.texts), "finetune_dir": str(work),
             "finetune_steps": result.steps, "finetune_epochs": len(result.history["epochs"]) - 1,
             "finetune_best_epoch": result.history["best_epoch"],
             "finetune_stopped_early": result.history["stopped_early"],
             "finetune_val": [{k: e.get(k) for k in ("epoch", "val_loss", "val_accuracy")}
                              for e in result.history["epochs"]],
             "finetune_wall_time_s": result.provenance["wall_time_s"], "finetune_config": result.provenance["config"]}
    return MethodResult(metrics, sizes, draws, RowPredictions.of(test.labels, result.predicted, draws["test"]))


RUNNERS: dict[str, Callable[[Context], MethodResult]] = {
    "baseline": run_baseline, "langalign": run_langalign, "e2e": run_e2e, "adapted": run_adapted,
    "lora_ta": run_lora_ta}
"""The runner of each kind in `methods.TABLE` (`Method.runner`)."""


def run_cell(cell: Cell, config: SweepConfig, spec: ModelSpec | None = None) -> dict:
    """The sweep's runner: a top-level function, so worker processes can import it by name. `spec`: the model as
    the study's driver resolved it (`run.run_study` hands its cells `partial(run_cell, spec=spec)`), so a cell
    does not resolve it again; None (a cell run on its own) resolves it here."""
    t0 = time.perf_counter()
    ctx = _context(cell, config, spec)
    spec, key = ctx.spec, ctx.key
    result = RUNNERS[TABLE[cell.method].runner](ctx)
    out = {"metrics": result.metrics, "provenance": {
        "cell": asdict(cell), "seed": cell.seed, "sizes": result.sizes, "draws": result.draws,
        "files": ctx.task.files(),
        "model_fingerprint": spec.fingerprint, "store_key": key.to_dict(), "store": str(config.store),
        "head_recipe": asdict(resolve_recipe(cell.recipe, "head")), "head_params": config.head_params.get(cell.head, {}),
        "precision": training_precisions(config, cell),
        "cell_seconds": round(time.perf_counter() - t0, 3)}}
    if result.rows is not None:
        out["predictions"] = result.rows.to_payload()
    return out


def _context(cell: Cell, config: SweepConfig, spec: ModelSpec | None = None) -> Context:
    """The cell's context: its model (`spec` as the driver resolved it, else resolved here) and its store key
    computed here (checked against a pinned fingerprint), once for the whole cell."""
    spec = config.encoding.resolve() if spec is None else spec
    return Context(cell=cell, config=config, task=task_for(cell, config), store=Store.open(config.store),
                   key=config.encoding.key(spec), spec=spec)


def texts_needed(cells: list[Cell], config: SweepConfig) -> list[str]:
    """Every text any cell will look up, so `prepare` can encode them all in one pass. Every task file the cells
    use is read, also where no cell of a task reads cached vectors (lora-ta): a typo in a table fails here."""
    texts: dict[str, None] = {}
    for task_name, language in dict.fromkeys((c.task, c.language) for c in cells):
        task = Task.from_table(task_name, config.tasks[task_name], language, config.base_dir)
        reads = any(TABLE[c.method].cached_vectors for c in cells if (c.task, c.language) == (task_name, language))
        for role in task.sources:
            rows = task.rows(role)
            if reads:
                texts.update(dict.fromkeys(rows.texts))
                texts.update(dict.fromkeys(rows.targets))
    return list(texts)


def prepare(cells: list[Cell], config: SweepConfig, spec: ModelSpec | None = None, *,
            progress: bool = True) -> EncodeReport:
    """Encode what the store lacks for these cells, once, before any cell runs (`spec`: the model as the driver
    resolved it; None resolves it)."""
    return encode(texts_needed(cells, config), store=config.store, options=config.encoding, progress=progress,
                  spec=spec)
