"""What `embedstore analyze ...` runs: pairs file → row split → vectors from the store → aligner → analysis.

Each `run_*` reads the rows of a translation-pairs file that its `data.tasks.Source` names (the source
language's column as `text`, the target's as `target`, task labels as `label`, and the row filters `where`: read as
every command reads rows, `data.tasks.filtered_columns`), splits them into aligner-fit rows
and held-out rows (`analysis.measures.Split`), encodes only the selected rows (`encoding.encode.encode`: what the
store holds is reused), fits the aligner on the fit rows (or loads a saved one) and reports on the held-out rows. The result is
a JSON-ready dict whose `provenance` says exactly what was measured: options, seed, row counts, the input
file's sha256, the model fingerprint, the store key and the embedstore version. Cosine results are records with
"kind": "cosine" and the fields `embedstore.study.report` plots (`report_data.COSINE_FIELDS`).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from embedstore.estimators.aligners import ALIGNERS, DEFAULT_ALIGNER, Aligner, load_aligner
from embedstore.estimators.aligners.inputs import aligner_for_run, fit_rows
from embedstore.estimators.artifacts import lookup
from embedstore.analysis.measures import (Split, check_forward, collapse_report, fitted_alignment, fold_split,
                                 gradient_alignment, held_out_alignment, layer_report, limit_split, random_split)
from embedstore.data.hashing import text_ids
from embedstore.data.selection import overlap_mask
from embedstore.pipelines.pipeline import PAIR_IDS, load_pair_ids
from embedstore.encoding.options import EncodeOptions
from embedstore.encoding.encode import encode
from embedstore.base.errors import ConfigError
from embedstore.base.atomic import check_writable, write_json
from embedstore.base.provenance import stamp
from embedstore.base.retrieval import check_options
from embedstore.estimators.heads import DEFAULT_HEAD, make_head
from embedstore.data.selection import parse_size
from embedstore.store import Store
from embedstore.data.tasks import Source, filtered_columns

#: `arch` value for the gradient analysis without an aligner (raw vectors through an identity linear map).
NO_ALIGNER = "none"


@dataclass(frozen=True)
class SplitOptions:
    """How rows are split into aligner-fit rows and held-out rows, and how many of each are used.

    With `fit_folds` and/or `test_folds` ("0-5", "8,9") rows are chosen by `fold_column` (default "fold"); a side
    left out takes every other fold. Otherwise a seeded `test_fraction` of the rows is held out. `size` caps the
    fit rows (the aligner's pair count: "2k", 2000, "all") and `test_size` the held-out rows.
    """

    size: str | int | None = field(default=None, metadata={
        "help": "Aligner fit rows to use (2000, 2k or all); default: all."})
    test_size: str | int | None = field(default=None, metadata={
        "help": "Held-out rows to report on (300, 1k or all); default: all."})
    test_fraction: float = field(default=0.2, metadata={
        "help": "Random share of rows held out (without fold options)."})
    fold_column: str | None = field(default=None, metadata={"help": "Column holding fold values; default: fold."})
    fit_folds: str | None = field(default=None, metadata={
        "help": "Folds the aligner is fitted on, e.g. 0-5; default: the rest."})
    test_folds: str | None = field(default=None, metadata={"help": "Folds reported on, e.g. 8-9; default: the rest."})

    @property
    def by_folds(self) -> bool:
        return self.fit_folds is not None or self.test_folds is not None

    def columns(self) -> list[str]:
        """The extra column the split reads, if any."""
        if self.fold_column is not None and not self.by_folds:
            raise ConfigError("fold_column needs fit_folds and/or test_folds to say which folds to use")
        return [self.fold_column or "fold"] if self.by_folds else []


def parse_folds(text: str, option: str) -> list[str]:
    """Fold values from "0-5", "8,9" or "0-2,7": ranges of whole numbers expand; other tokens are taken as is."""
    folds: list[str] = []
    for token in (t.strip() for t in text.split(",")):
        low, sep, high = token.partition("-")
        if sep and low.isdigit() and high.isdigit():
            if int(low) > int(high):
                raise ConfigError(f"{option} {text!r}: range {token} runs backwards; expected low-high, e.g. 0-5")
            folds.extend(str(v) for v in range(int(low), int(high) + 1))
        elif token:
            folds.append(token)
        else:
            raise ConfigError(f"{option} {text!r} has an empty entry; expected fold values like 0-5 or 8,9")
    return folds


def make_split(table: dict[str, list[str]], n_rows: int, options: SplitOptions, seed: int) -> Split:
    """The fit/held-out split of a table's rows under `options`, the held-out side cut to `test_size` (seeded).

    The fit side is the pool `fit_rows` picks the aligner's rows from (`size` of them, as pairs or unpaired texts
    by the aligner's kind), as `train-aligner` picks them from a file."""
    if options.by_folds:
        column = options.fold_column or "fold"
        split = fold_split(table[column],
                           parse_folds(options.fit_folds, "fit_folds") if options.fit_folds is not None else None,
                           parse_folds(options.test_folds, "test_folds") if options.test_folds is not None else None,
                           column)
    else:
        split = random_split(n_rows, options.test_fraction, seed)
    test_size = parse_size(options.test_size) if options.test_size is not None else None
    return limit_split(split, None, test_size, seed)


@dataclass
class _Pairs:
    """Vectors of the selected rows, fit rows first, with the split re-indexed into them."""

    source: dict[int, np.ndarray]  # layer -> (fit + test, dim)
    target: dict[int, np.ndarray]
    split: Split | None
    n_pairs: int  # how many fit rows are true pairs (`FitRows.n_pairs`)
    table: dict[str, list[str]]
    rows: np.ndarray  # file row of each vector row
    provenance: dict[str, Any]


def _load_pairs(pairs: Source, split_options: SplitOptions, store: str | Path | None, options: EncodeOptions, seed: int,
                config: dict[str, Any], progress: bool, max_k: int = 1, include_fit: bool = True,
                aligner_cls: type[Aligner] | None = None, seen: np.ndarray | None = None) -> _Pairs:
    """Read the rows of `pairs` that pass its filters (its label column too, when it names one), split them, and
    encode only the rows the analysis uses (both languages in one encode pass).

    The fit rows are those `fit_rows` gives `aligner_cls` (None: pairs) out of the fit split, as `train-aligner`
    and the sweep pick them. The held-out rows must allow P@`max_k`; this is checked before anything is encoded.
    Without `include_fit` (a loaded aligner needs no fit rows) only the held-out rows are encoded and `split` is
    None. `seen`: text ids a loaded aligner was fitted on; held-out rows with either side among them are dropped
    (and counted), since retrieval on an aligner's own pairs flatters it.
    """
    pairs_file, source_column, target_column = pairs.file, pairs.text, pairs.target
    if target_column is None:
        raise ConfigError(f"{pairs_file}: no target column named; expected the pairs' two columns (text and target)")
    if source_column == target_column:
        raise ConfigError(f"source_column and target_column are both '{source_column}'; expected two columns")
    columns = [c for c in (source_column, target_column, pairs.label) if c is not None]
    table = filtered_columns(pairs_file, [*columns, *split_options.columns()], pairs.where)
    n_rows = len(table[source_column])
    split = make_split(table, n_rows, split_options, seed)
    dropped = 0
    if seen is not None:
        test = split.test
        clash = (overlap_mask(text_ids([table[source_column][i] for i in test]), seen)
                 | overlap_mask(text_ids([table[target_column][i] for i in test]), seen))
        dropped = int(clash.sum())
        if len(test) - dropped < max(max_k, 2):
            raise ConfigError(f"{pairs_file}: {dropped:,} of the {len(test):,} held-out rows ({split.how}) were "
                              f"among the aligner's fit pairs, leaving {len(test) - dropped}; choose rows it was not "
                              "fitted on (test folds or another file)")
        split = replace(split, test=test[~clash], how=split.how + (
            f"; {dropped:,} rows dropped as the aligner's fit pairs" if dropped else ""))
    if len(split.test) < max_k:
        raise ConfigError(f"P@{max_k} needs at least {max_k} held-out rows; the split leaves "
                          f"{len(split.test)} ({split.how})")
    picked = fit_rows(aligner_cls, len(split.fit), parse_size(split_options.size or "all"), seed, "the fit split")
    fit_source, fit_target = split.fit[picked.source], split.fit[picked.target]
    fit = np.asarray(list(dict.fromkeys([*fit_source, *fit_target])), dtype=np.int64)  # each row once, in order
    rows = np.concatenate([fit, split.test]) if include_fit else split.test
    src_texts = [table[source_column][i] for i in rows]
    tgt_texts = [table[target_column][i] for i in rows]
    spec = options.resolve()
    report = encode(src_texts + tgt_texts, store=store, options=options, progress=progress, spec=spec)
    st, keys = Store.open(report.store), report.keys
    source = {key.layer: st.get(key, src_texts) for key in keys}
    target = {key.layer: st.get(key, tgt_texts) for key in keys}
    at = {int(row): i for i, row in enumerate(fit)}
    how = split.how + (f"; fit on {picked.n_pairs:,} pairs" + (
        f" and unpaired texts ({len(fit_source) - picked.n_pairs:,} source, {len(fit_target) - picked.n_pairs:,} "
        "target)" if len(fit) != picked.n_pairs else "") + f" (seed {seed})")
    local = Split(np.asarray([at[int(r)] for r in fit_source], dtype=np.int64), np.arange(len(fit), len(rows)), how,
                  None if picked.source is picked.target else np.asarray([at[int(r)] for r in fit_target],
                                                                          dtype=np.int64)) if include_fit else None
    provenance = {
        "config": config,
        "seed": seed,
        "input": pairs.record(n_rows),
        "split": how if include_fit else f"{split.how}; fit rows unused (aligner loaded)",
        "fit_rows": len(fit) if include_fit else 0,
        "fit_pairs": picked.n_pairs if include_fit else 0,
        "held_out_dropped_as_fit_pairs": dropped,
        "test_rows": len(split.test),
        "model": spec.name,
        "model_fingerprint": spec.fingerprint,
        "store": report.store,
        "store_key": keys[0].to_dict() if len(keys) == 1 else [k.to_dict() for k in keys],
        "encoded_now": report.encoded,
        **stamp(),
    }
    return _Pairs(source, target, local, picked.n_pairs, table, rows, provenance)


def _saved_aligner(arch: str | None, aligner_dir: str | Path | None) -> Aligner | None:
    """The saved aligner to evaluate, or None when the analysis fits one of class `arch`."""
    if aligner_dir is None:
        return None
    if arch is not None:
        raise ConfigError(f"both arch={arch!r} and aligner_dir={str(aligner_dir)!r} given; use one: arch fits "
                          "a new aligner, aligner_dir loads a saved one")
    aligner = load_aligner(aligner_dir)
    check_forward(aligner)
    return aligner


def _fit_pair_ids(aligner_dir: str | Path) -> np.ndarray | None:
    """The text ids of the pairs a saved aligner was fitted on (both sides), or None when it recorded none."""
    return load_pair_ids(Path(aligner_dir)) if (Path(aligner_dir) / PAIR_IDS).is_file() else None


def _aligner_info(aligner: Aligner, aligner_dir: str | Path | None) -> dict[str, Any]:
    """What a record says about the aligner: its name and the parameters it was fitted with (seed included)."""
    where = {"aligner_dir": str(Path(aligner_dir).resolve())} if aligner_dir is not None else {}
    return {"aligner": aligner.name, **where, "aligner_params": aligner.get_params(deep=False)}


def _kept(record: dict[str, Any], out: str | Path | None) -> dict[str, Any]:
    """The record, written to `out` first when the caller asked for a file."""
    if out is not None:
        write_record(record, out)
    return record


def check_record_writable(out: str | Path | None) -> None:
    """Refuse, before anything is encoded or trained, an `out` that `write_record` could not write: a directory
    that takes no new file, or a `.jsonl` file that cannot be appended to (opened for appending, nothing written)."""
    if out is None:
        return
    path = Path(out)
    if path.suffix == ".jsonl" and path.is_file():
        try:
            open(path, "a", encoding="utf-8").close()
        except OSError as e:
            raise ConfigError(f"out: {path}: cannot append to it ({e.strerror or e}); expected a writable file") \
                from None
    else:
        check_writable(path)


def write_record(record: dict[str, Any], out: str | Path) -> Path:
    """`.jsonl` appends one line (seeds and languages accumulate for `embedstore report`); other names are
    (over)written with one JSON object."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False, allow_nan=True) + "\n")
    else:
        write_json(path, record, indent=2)
    return path


def _config(command: str, pairs: Source, split: SplitOptions, options: EncodeOptions,
            **settings: Any) -> dict[str, Any]:
    """What an analysis was asked for, as its record's provenance keeps it: the rows of which file (its columns
    and filters), the split, the encoding options and the analysis' own `settings`."""
    label = {"label_column": pairs.label} if pairs.label is not None else {}
    return {"command": command, "pairs_file": str(pairs.file), "source_column": pairs.text,
            "target_column": pairs.target, **label, "where": {c: list(v) for c, v in pairs.where}, **settings,
            "split": asdict(split), "encode": options.to_dict()}


def _alignment(kind: str, pairs: Source, arch: str | None, aligner_dir: str | Path | None, split: SplitOptions,
               store: str | Path | None, options: EncodeOptions, seed: int, ks: Sequence[int], csls_k: int,
               progress: bool) -> dict[str, Any]:
    """Shared body of `run_cosine` and `run_retrieval`: both report cosine, retrieval and collapse together."""
    if arch == NO_ALIGNER:
        raise ConfigError(f"arch={NO_ALIGNER!r} is only for gradient analyses; cosine and retrieval compare an "
                          f"aligner's output with raw vectors: use one of {', '.join(ALIGNERS)}")
    if len(options.layers) != 1:
        raise ConfigError(f"{len(options.layers)} layers given; `analyze {kind}` takes one (use `analyze layers`)")
    config = _config(kind, pairs, split, options, arch=arch, aligner_dir=str(aligner_dir) if aligner_dir else None,
                     ks=list(ks), csls_k=csls_k)
    check_options(ks, csls_k)  # before the model runs, not after
    saved = _saved_aligner(arch, aligner_dir)
    cls = None if saved is not None else lookup(ALIGNERS, arch or DEFAULT_ALIGNER, "aligner")
    seen = _fit_pair_ids(aligner_dir) if saved is not None else None
    loaded = _load_pairs(pairs, split, store, options, seed, config, progress, max(ks), include_fit=saved is None,
                         aligner_cls=cls, seen=seen)
    (layer,) = loaded.source
    en, tr = loaded.source[layer], loaded.target[layer]
    if saved is not None:
        aligner = saved
        result = {**fitted_alignment(aligner, en, tr, ks=ks, csls_k=csls_k, seed=seed),
                  "held_out": {"checked": True,
                               "dropped_as_fit_pairs": loaded.provenance["held_out_dropped_as_fit_pairs"]}
                  if seen is not None else
                  {"checked": False, "warning": f"{aligner_dir} records no pair hashes ({PAIR_IDS}): whether these "
                                                "rows were among its fit pairs is unknown"}}
    else:
        aligner = aligner_for_run(cls, loaded.n_pairs, seed=seed, progress=progress)
        result = held_out_alignment(en, tr, loaded.split, aligner, ks=ks, csls_k=csls_k, seed=seed)
    info = _aligner_info(aligner, aligner_dir)
    return {
        "kind": kind,
        "language": pairs.target,
        "source_language": pairs.text,
        "aligner": info["aligner"],
        "pair_size": None if saved is not None else loaded.n_pairs,
        "layer": layer,
        "seed": seed,
        **result,
        "provenance": {**loaded.provenance, **info},
    }


def run_cosine(pairs: Source, *, arch: str | None = None, aligner_dir: str | Path | None = None,
               split: SplitOptions = SplitOptions(),
               store: str | Path | None = None, options: EncodeOptions = EncodeOptions(), seed: int = 0,
               out: str | Path | None = None, progress: bool = False) -> dict[str, Any]:
    """Mean cosines EN↔TR, aligned↔TR, aligned↔EN and shuffled baselines on held-out pairs (paper Table 9).

    The record carries the four `report_data.COSINE_FIELDS` at top level (plus `shuffled_en_tr`) and, because cosine
    alone can hide a collapsed map, the held-out retrieval and the collapse flag too.
    """
    check_record_writable(out)  # before anything is encoded
    result = _alignment("cosine", pairs, arch, aligner_dir, split, store, options, seed, (1, 5), 10, progress)
    cosine = result.pop("cosine")
    record = {**{k: v for k, v in result.items() if k != "provenance"},
              **{k: v for k, v in cosine.items() if k != "seed"}, "provenance": result["provenance"]}
    return _kept(record, out)


def run_retrieval(pairs: Source, *, arch: str | None = None, aligner_dir: str | Path | None = None,
                  split: SplitOptions = SplitOptions(), store: str | Path | None = None,
                  options: EncodeOptions = EncodeOptions(), seed: int = 0, ks: Sequence[int] = (1, 5),
                  csls_k: int = 10, out: str | Path | None = None, progress: bool = False) -> dict[str, Any]:
    """P@k both ways, nearest neighbour and CSLS, raw and aligned, on held-out pairs (with cosine and collapse)."""
    check_record_writable(out)  # before anything is encoded
    record = _alignment("retrieval", pairs, arch, aligner_dir, split, store, options, seed, ks, csls_k, progress)
    return _kept(record, out)


def run_layers(pairs: Source, *, arch: str | None = None, layers: Sequence[int] | None = None,
               split: SplitOptions = SplitOptions(),
               store: str | Path | None = None, options: EncodeOptions = EncodeOptions(), seed: int = 0,
               ks: Sequence[int] = (1, 5), csls_k: int = 10, out: str | Path | None = None,
               progress: bool = False) -> dict[str, Any]:
    """Cosine, retrieval and collapse per hidden layer, a fresh aligner fitted per layer (default: every layer).

    All layers come from one encode pass (the transformer computes every hidden state anyway).
    """
    check_record_writable(out)  # before anything is encoded
    if arch == NO_ALIGNER:
        raise ConfigError(f"arch={NO_ALIGNER!r} is only for gradient analyses; use one of {', '.join(ALIGNERS)}")
    arch = arch or DEFAULT_ALIGNER
    if layers is None or len(layers) == 0:
        layers = tuple(range(options.resolve().num_layers + 1))
    options = replace(options, layers=tuple(layers))
    config = _config("layers", pairs, split, options, arch=arch, ks=list(ks), csls_k=csls_k)
    check_options(ks, csls_k)  # before the model runs, not after
    cls = lookup(ALIGNERS, arch, "aligner")  # before anything is encoded
    loaded = _load_pairs(pairs, split, store, options, seed, config, progress, max(ks), aligner_cls=cls)
    per_layer = layer_report(loaded.source, loaded.target, loaded.split,
                             lambda: aligner_for_run(cls, loaded.n_pairs, seed=seed, progress=progress), ks=ks,
                             csls_k=csls_k, seed=seed)
    info = _aligner_info(aligner_for_run(cls, loaded.n_pairs, seed=seed), None)
    record = {"kind": "layers", "language": pairs.target, "source_language": pairs.text,
              "aligner": arch, "pair_size": loaded.n_pairs, "seed": seed, "layers": per_layer,
              "provenance": {**loaded.provenance, **info}}
    return _kept(record, out)


def run_gradients(pairs: Source, *, arch: str | None = None, aligner_dir: str | Path | None = None,
                  head: str = DEFAULT_HEAD, batch_size: int = 64, split: SplitOptions = SplitOptions(),
                  store: str | Path | None = None, options: EncodeOptions = EncodeOptions(), seed: int = 0,
                  out: str | Path | None = None, progress: bool = False) -> dict[str, Any]:
    """Cosine between the alignment-loss and task-loss gradients on the shared representation (held-out rows).

    The aligner is fitted on the fit rows (unless `aligner_dir`, or `arch="none"` for raw vectors through an
    identity linear map); the head (`head`: linear or mlp) is trained on the fit rows' aligned English vectors
    with the pairs' `label` column, as LangAlign trains it; `analysis.gradient_alignment` then measures on held-out
    rows. The held-out accuracy of that head on aligned English and on target-language vectors (the transfer score)
    and the aligner's collapse check are reported alongside, so the gradient cosine can be read against them.
    """
    check_record_writable(out)  # before anything is encoded
    if len(options.layers) != 1:
        raise ConfigError(f"{len(options.layers)} layers given; `analyze gradients` takes one")
    if pairs.label is None:
        raise ConfigError(f"{pairs.file}: no label column named; the gradient analysis trains a head on labelled rows")
    if pairs.label in (pairs.text, pairs.target):
        raise ConfigError(f"label_column '{pairs.label}' is also a text column; expected a column of labels")
    config = _config("gradients", pairs, split, options, arch=arch,
                     aligner_dir=str(aligner_dir) if aligner_dir else None, head=head, batch_size=batch_size)
    if arch == NO_ALIGNER:
        if aligner_dir is not None:
            raise ConfigError(f"both arch={NO_ALIGNER!r} and aligner_dir={str(aligner_dir)!r} given; use one")
        saved, cls = None, None
    else:
        saved = _saved_aligner(arch, aligner_dir)
        cls = None if saved is not None else lookup(ALIGNERS, arch or DEFAULT_ALIGNER, "aligner")
    task_head = make_head(head, seed=seed)
    loaded = _load_pairs(pairs, split, store, options, seed, config, progress, aligner_cls=cls)
    (layer,) = loaded.source
    en, tr = loaded.source[layer], loaded.target[layer]
    labels = np.asarray([loaded.table[pairs.label][i] for i in loaded.rows])
    fit, test = loaded.split.fit, loaded.split.test
    aligner = saved
    if cls is not None:
        aligner = aligner_for_run(cls, loaded.n_pairs, seed=seed, progress=progress).fit(en[fit],
                                                                                         tr[loaded.split.target_fit])
    info = _aligner_info(aligner, aligner_dir) if aligner is not None else {"aligner": NO_ALIGNER}
    project = aligner.transform if aligner is not None else (lambda x: x)
    task_head.fit(project(en[fit]), labels[fit])
    aligned_test = project(en[test])
    result = gradient_alignment(en[test], tr[test], labels[test], task_head, aligner=aligner, batch_size=batch_size,
                                seed=seed)
    record = {
        "kind": "gradients",
        "language": pairs.target,
        "source_language": pairs.text,
        "aligner": info["aligner"],
        "pair_size": None if aligner_dir is not None else loaded.n_pairs,
        "layer": layer,
        "seed": seed,
        **result,
        "head": head,
        "head_accuracy": {"english_aligned": task_head.score(aligned_test, labels[test]),
                          "target": task_head.score(tr[test], labels[test])},
        "collapse": collapse_report(aligned_test, en[test], tr[test]) if aligner is not None else None,
        "provenance": {**loaded.provenance, **info},
    }
    return _kept(record, out)
