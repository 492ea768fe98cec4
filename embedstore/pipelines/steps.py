"""LangAlign steps 2 and 3 as file-level operations: what `train-aligner`, `train-head` and `evaluate` do.

Each function reads rows from user files, gathers vectors through the store (encoding what it lacks), fits or
applies estimators and returns a JSON-ready record with full provenance; artifacts are written to a temporary
directory and renamed into place only when complete.
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np

from embedstore.analysis.measures import fitted_alignment
from embedstore.estimators.aligners import ALIGNERS, Aligner, load_aligner
from embedstore.estimators.aligners.inputs import aligner_for_run, fit_rows
from embedstore.estimators.artifacts import lookup
from embedstore.encoding.models import ModelSpec
from embedstore.encoding.options import EncodeOptions
from embedstore.encoding.encode import embed
from embedstore.base.errors import ConfigError
from embedstore.data.hashing import text_ids
from embedstore.estimators.artifacts import CONFIG_FILE, WEIGHTS_FILE
from embedstore.estimators.heads import build_head, head_class
from embedstore.base.metrics import classification_metrics
from embedstore.base.atomic import atomic_dir, check_writable
from embedstore.pipelines.fitted_key import check_fitted_key
from embedstore.pipelines.pipeline import (ALIGNER_DIR, HEAD_DIR, MANIFEST, PAIR_IDS, Pipeline, load_pair_ids,
                                           save_pair_ids, save_pipeline)
from embedstore.data.selection import overlap_mask, subsample
from embedstore.base.provenance import stamp
from embedstore.data.tasks import Rows, Source, load_rows
from embedstore.store import StoreKey


_ALIGNER_FILES = frozenset({CONFIG_FILE, WEIGHTS_FILE, PAIR_IDS})
_PIPELINE_FILES = frozenset({MANIFEST, HEAD_DIR, ALIGNER_DIR})


def _check_out(out: Path, ours: frozenset[str], what: str) -> None:
    """Before any model loads or fit runs: `out` must be publishable, and an existing `out` may be replaced only
    when it holds nothing but the files of a previous one (`ours`): a user's directory is never swapped out."""
    if out.exists():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in ours) if out.is_dir() else [out.name]
        if foreign:
            raise ConfigError(f"out: {out} holds {foreign[0]!r}, which is not part of {what}; choose a new or "
                              "empty directory")
    check_writable(out)


def train_aligner(pairs: Source, *, arch: str, out: Path, size: int | None, reverse: bool, seed: int,
                  recipe: str, store: str | Path, options: EncodeOptions, progress: bool = True,
                  check_size: int | None = None) -> dict:
    """Step 2: fit an aligner on parallel pairs (source → target; target → source with `reverse`).

    An aligner that needs no pairs gets unpaired texts of each side from the file, and a seeded one `size` pairs
    plus unpaired texts (`aligners.inputs.fit_rows`): the record says how many of each. The record's `held_out`
    is retrieval and the collapse check on the file's pairs the aligner never saw (`check_size` of them, all by
    default): a trained aligner's own check runs on its validation split, a tenth of its pairs (50 of 500), too
    few to tell a collapsed map from a sound one."""
    t0 = time.perf_counter()
    _check_out(out, _ALIGNER_FILES, "a saved aligner")
    spec = options.resolve()  # before any reading: the model resolves and the options name one layer
    key = options.key(spec)  # the command's one store key: every read and write below goes through it
    # what the vectors were: the store key is what a later user of the aligner is checked against
    encoding = {"model": spec.name, "model_fingerprint": spec.fingerprint, "store": str(store),
                "store_key": key.to_dict()}
    cls = lookup(ALIGNERS, arch, "aligner")
    rows = load_rows(pairs)
    picked = fit_rows(cls, len(rows.texts), size, seed, f"{pairs.file}")
    src, tgt = [rows.texts[i] for i in picked.source], [rows.targets[i] for i in picked.target]
    both = embed(src + tgt, store=store, options=options, progress=progress, spec=spec, keys=[key])  # one pass, one bar
    x, y = both[:len(src)], both[len(src):]
    aligner = aligner_for_run(cls, picked.n_pairs, seed=seed, reverse=reverse, recipe=recipe,
                              progress=progress).fit(x, y)
    held_out = _held_out_check(aligner, rows, src, tgt, check_size, seed, store, options, spec, key, progress)
    record = {"kind": "aligner", "arch": arch, "reverse": reverse, "seed": seed, "recipe": recipe,
              "sizes": {"pairs": picked.n_pairs, "source_texts": len(src), "target_texts": len(tgt),
                        "available": len(rows.texts)}, "pairs": pairs.identity(),
              **encoding, **stamp(),
              "diagnostics": aligner.diagnostics(), "held_out": held_out,
              "seconds": round(time.perf_counter() - t0, 3)}
    with atomic_dir(out, replace=True) as tmp:
        aligner.save(tmp, provenance=record)
        save_pair_ids(tmp, text_ids(src), text_ids(tgt))
    return {**record, "out": str(out)}


def _held_out_check(aligner: Aligner, rows: Rows, src: list[str], tgt: list[str], size: int | None, seed: int,
                    store: str | Path, options: EncodeOptions, spec: ModelSpec, key: StoreKey,
                    progress: bool) -> dict:
    """Retrieval (NN and CSLS P@1) and the collapse check on the file's pairs neither of whose texts the aligner
    was fitted on, in the head's space too for an aligner applied to target text at test time."""
    clash = overlap_mask(text_ids(rows.texts), text_ids(src)) | overlap_mask(text_ids(rows.targets), text_ids(tgt))
    unseen = np.flatnonzero(~clash)
    if len(unseen) < 2:
        return {"pairs": len(unseen), "note": "no held-out pairs (every row of the file was fitted on): the "
                                              "collapse check ran only on the aligner's validation split"}
    unseen = unseen[subsample(len(unseen), min(size, len(unseen)) if size else None, seed, "the held-out pairs")]
    en_texts, tr_texts = [rows.texts[i] for i in unseen], [rows.targets[i] for i in unseen]
    both = embed(en_texts + tr_texts, store=store, options=options, progress=progress, spec=spec, keys=[key])
    report = fitted_alignment(aligner, both[:len(unseen)], both[len(unseen):], ks=(1,))
    p1 = {space: {method: scores["forward"][method]["p@1"] for method in ("nn", "csls")}
          for space, scores in report["retrieval"].items()}
    return {"pairs": len(unseen), "p1": p1,
            **{k: report[k] for k in ("collapse", "collapse_head_space") if k in report}}


def train_head(train: Source, *, out: Path, size: int | None, head: str, aligner_dir: Path | None, share: bool,
               seed: int, recipe: str, store: str | Path, options: EncodeOptions, progress: bool = True,
               head_params: dict | None = None, single_label: bool = False) -> dict:
    """Step 3: a head on English vectors (through the aligner when given) → a pipeline directory. `head_params`
    are the head kind's own parameters (`normalize`, `C`, `hidden`, ...); `single_label` drops rows whose label
    holds a comma (multi-label rows), as a sweep task's `single_label` does. The record's `head` says how the
    fit ended (converged or capped, what it chose)."""
    t0 = time.perf_counter()
    _check_out(out, _PIPELINE_FILES, "a pipeline")
    fitted = build_head(head, seed=seed, recipe=recipe, params={**(head_params or {}), "progress": progress}
                        if head_class(head).uses_recipe else head_params)
    fitted.check_params()  # before any encoding
    rows = load_rows(train, single_label=single_label)
    if not rows.labels:
        raise ConfigError(f"{train.file}: label_column is required to train a head")
    spec = options.resolve()
    key = options.key(spec)
    if aligner_dir:  # before any encoding or fitting: vectors of another key would be aligned wrongly
        check_fitted_key(aligner_dir, key, "aligner")
    aligner = load_aligner(aligner_dir) if aligner_dir else None
    keep = np.arange(len(rows.texts))
    dropped = 0
    if aligner_dir and not share:  # the aligner's pairs and the task rows stay disjoint unless asked
        clash = overlap_mask(text_ids(rows.texts), load_pair_ids(aligner_dir))
        keep, dropped = np.flatnonzero(~clash), int(clash.sum())
        if not len(keep):
            raise ConfigError(f"{train.file}: all {dropped:,} task rows were taken as pairs by the aligner "
                              f"{aligner_dir} (task rows and aligner pairs are kept apart); choose other task rows "
                              "with --where (e.g. fold=6,7; where= in Python), or keep them with --share (share=True: "
                              "the data-share ablation)")
    keep = keep[subsample(len(keep), size, seed, f"{train.file} (after dropping {dropped} aligner-pair rows)")]
    texts, labels = [rows.texts[i] for i in keep], [rows.labels[i] for i in keep]
    x = embed(texts, store=store, options=options, progress=progress, spec=spec, keys=[key])
    if aligner is not None and not aligner.reverse:
        x = aligner.transform(x)
    fitted.fit(x, labels)
    manifest = {
        **stamp(), "encoding": options.pinned(spec, [key]).to_dict(), "head_kind": head, "seed": seed,
        "recipe": recipe, "train": train.identity(single_label=single_label), "share": share,
        "sizes": {"train": len(texts), "dropped_as_aligner_pairs": dropped, "available": len(rows.texts)},
        "model": spec.name, "store": str(store), "seconds": round(time.perf_counter() - t0, 3)}
    manifest = save_pipeline(out, fitted, aligner_dir, manifest, key)
    return {**manifest, "store_key": key.to_dict(), "out": str(out), "head": fitted.fit_report}


def _method(pipe: Pipeline) -> tuple[str, str]:
    """What the pipeline's own result is, by name: a LangAlign pipeline's main figure is the head trained on
    aligned English applied to native text as it is, which `primary` alone labels "without_aligner"."""
    if pipe.aligner is None:
        return "english-only", "the head trained on English vectors, applied to target-language vectors"
    if getattr(pipe.aligner, "reverse", False):
        return "reverse", "target-language vectors mapped into English space by the reverse aligner, then the head"
    if pipe.aligner_at_test:
        return "langalign", "the head trained on aligned English; target-language vectors through the aligner too"
    return "langalign", "the head trained on aligned English vectors, applied to target-language vectors as they are"


def evaluate(pipeline_dir: Path, test: Source, *, store: str | Path | None = None, model: str | Path | None = None,
             progress: bool = True, single_label: bool = False) -> dict:
    """Metrics on labelled target-language rows, with the aligner in front of the head and without it;
    `primary` names the one the pipeline's predictions use (see `Aligner.aligns_target_at_test`). `store` and
    `model` as in `Pipeline.load`."""
    t0 = time.perf_counter()
    pipe = Pipeline.load(pipeline_dir, store=store, model=model)
    rows = load_rows(test, single_label=single_label)
    if not rows.labels:
        raise ConfigError(f"{test.file}: label_column is required to evaluate")
    known = {str(c) for c in pipe.head.classes_}
    unseen = sorted(set(rows.labels) - known)
    if len(unseen) == len(set(rows.labels)):
        raise ConfigError(f"{test.file}: none of the test labels ({', '.join(unseen[:5])}) is a class the head "
                          f"was trained on ({', '.join(sorted(known)[:5])}); expected the same label column")
    if unseen:
        warnings.warn(f"{test.file}: {sum(label in unseen for label in rows.labels):,} test rows carry labels the "
                      f"head never saw ({', '.join(unseen[:5])}); they count as errors", stacklevel=2)
    x = pipe.vectors(rows.texts, progress=progress)
    labels = sorted(set(rows.labels) | known)
    result = {"kind": "evaluation", "pipeline": str(pipeline_dir), "test": test.identity(single_label=single_label),
              "n": len(rows.texts), **stamp(), "pipeline_manifest": pipe.manifest, "aligner_at_test": pipe.aligner_at_test,
              "labels_the_head_never_saw": {label: rows.labels.count(label) for label in unseen},
              "without_aligner": classification_metrics(rows.labels, pipe.head.predict(x), labels)}
    if pipe.aligner is not None:
        result["with_aligner"] = classification_metrics(rows.labels, pipe.head.predict(pipe.aligner.transform(x)), labels)
    result["primary"] = "with_aligner" if pipe.aligner_at_test else "without_aligner"
    result["method"], result["method_description"] = _method(pipe)
    result["seconds"] = round(time.perf_counter() - t0, 3)
    return result



