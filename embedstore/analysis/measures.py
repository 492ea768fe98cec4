"""How well an aligner aligns, measured on held-out translation pairs: cosine, retrieval, per layer, gradients.

Pure functions on numpy arrays that return JSON-ready dicts; `embedstore.analysis.runs` reads files and vectors
and the CLI prints. Three rules from the cross-lingual literature shape what every report contains:

- Mean cosine alone is a weak proxy. Embedding spaces are anisotropic, so unrelated sentences already have a
  high cosine; `cosine_report` therefore gives a shuffled-pair baseline next to every paired mean.
- A map can raise mean cosine while destroying the information that tells sentences apart (an undertrained FC
  aligner once sent everything near the target mean: cosine looked fine, retrieval fell to ~0). So
  `evaluate_alignment` always pairs cosine with retrieval and the collapse check of `embedstore.estimators.aligners`.
- Nearest-neighbour retrieval under-reports alignment when a few "hub" vectors are near everything; CSLS
  (Conneau et al. 2018, MUSE) discounts hubs, so `retrieval_report` gives both (`embedstore.base.retrieval`, the
  one implementation the collapse check shares).

Every number is computed on rows the aligner was not fitted on (`Split`, `held_out_alignment`): on its own
training pairs a least-squares map looks better than it is, and its alignment gradient is exactly zero.
"""
from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from embedstore.base.errors import ConfigError, InputError
from embedstore.base.retrieval import retrieval, unit_rows
from embedstore.estimators.aligners import Aligner, detect_collapse, judge_collapse
from embedstore.estimators.artifacts import as_matrix
from embedstore.estimators.heads import Head, as_labels
from embedstore.data.selection import subsample



# --------------------------------------------------------------------------------------------- splits


@dataclass(frozen=True)
class Split:
    """Row indices the aligner is fitted on (`fit`) and the disjoint rows everything is reported on (`test`).

    `how` says in words how the rows were chosen, for provenance. `fit_target`, when given, are the rows whose
    target-language side the aligner is fitted on, for an aligner fitted on unpaired texts of each side
    (`aligners.inputs.fit_rows`); by default the fit rows are pairs and both sides come from `fit`.
    """

    fit: np.ndarray
    test: np.ndarray
    how: str
    fit_target: np.ndarray | None = None

    def __post_init__(self) -> None:
        if len(self.test) < 2:
            raise ConfigError(f"split ({self.how}) leaves {len(self.test)} held-out rows; analyses need at least 2")
        if len(self.fit) < 1:
            raise ConfigError(f"split ({self.how}) leaves no rows to fit the aligner on")
        shared = np.intersect1d(np.union1d(self.fit, self.target_fit), self.test)
        if len(shared):
            raise ConfigError(f"split ({self.how}) puts {len(shared)} rows in both the fit and the held-out rows; "
                              "they must be disjoint")

    @property
    def target_fit(self) -> np.ndarray:
        """The rows whose target-language side the aligner is fitted on."""
        return self.fit if self.fit_target is None else self.fit_target


def random_split(n_rows: int, test_fraction: float, seed: int) -> Split:
    """A seeded random hold-out of `test_fraction` of `n_rows` rows."""
    if not 0 < test_fraction < 1:
        raise ConfigError(f"test fraction {test_fraction!r} is out of range; expected a number between 0 and 1")
    if n_rows < 3:
        raise ConfigError(f"{n_rows} rows cannot be split into fit rows and at least 2 held-out rows")
    n_test = min(max(int(round(n_rows * test_fraction)), 2), n_rows - 1)
    order = np.random.default_rng(seed).permutation(n_rows)
    return Split(np.sort(order[n_test:]), np.sort(order[:n_test]),
                 f"random {test_fraction:g} of {n_rows} rows held out (seed {seed})")


def fold_split(folds: Sequence[str], fit_folds: Collection[str] | None, test_folds: Collection[str] | None,
               column: str = "fold") -> Split:
    """Rows by the value of a fold column; a side given as None takes every fold the other side does not.

    Fold splits are deterministic and shared across runs and languages (the shared data hash the English text
    into folds), so an aligner fitted on folds 0-5 can be compared with a task head tested on folds 8-9.
    """
    values = np.asarray(folds, dtype=str)
    present = sorted(set(values.tolist()))
    if fit_folds is None and test_folds is None:
        raise ConfigError("fold split needs fit folds, test folds or both")
    fit_set = set(fit_folds) if fit_folds is not None else set(present) - set(test_folds or ())
    test_set = set(test_folds) if test_folds is not None else set(present) - fit_set
    both = sorted(fit_set & test_set)
    if both:
        raise ConfigError(f"folds {', '.join(both)} of column '{column}' are both fit and test folds; "
                          "they must be disjoint")
    for name, wanted in (("fit", fit_set), ("test", test_set)):
        missing = sorted(wanted - set(present))
        if missing:
            raise ConfigError(f"{name} folds {', '.join(missing)} do not occur in column '{column}'; "
                              f"values present: {', '.join(present)}")
    fit = np.flatnonzero(np.isin(values, sorted(fit_set)))
    test = np.flatnonzero(np.isin(values, sorted(test_set)))
    return Split(fit, test, f"column '{column}': fit folds {', '.join(sorted(fit_set))}, "
                            f"test folds {', '.join(sorted(test_set))}")


def limit_split(split: Split, fit_size: int | None, test_size: int | None, seed: int) -> Split:
    """Seeded subsamples of each side (None keeps all), e.g. "Procrustes on 2k pairs, reported on 300 rows".

    `selection.subsample` takes prefixes of one seeded permutation, so a smaller size is a subset of a larger one.
    """
    fit = split.fit[subsample(len(split.fit), fit_size, seed, "the fit split")]
    test = split.test[subsample(len(split.test), test_size, seed, "the held-out split")]
    sizes = [f"{what} {size}" for what, size in (("fit", fit_size), ("test", test_size)) if size is not None]
    return Split(fit, test, split.how + (f"; subsampled to {', '.join(sizes)} rows (seed {seed})" if sizes else ""))


# --------------------------------------------------------------------------------------------- cosine


def _paired(a: np.ndarray, b: np.ndarray, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    a, b = as_matrix(a, names[0]), as_matrix(b, names[1])
    if a.shape != b.shape:
        raise InputError(f"{names[1]} has shape {b.shape} but {names[0]} has {a.shape}; row i of each must be a "
                         "translation pair in the same space")
    if len(a) < 2:
        raise InputError(f"{names[0]} has {len(a)} row; paired analyses need at least 2 rows")
    return a, b


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of row i of `a` with row i of `b`, for every i."""
    return np.sum(unit_rows(a) * unit_rows(b), axis=1)


def derangement(n: int, seed: int) -> np.ndarray:
    """A seeded permutation with no fixed point: a shuffled baseline must never pair a row with its own translation.

    Following one random cycle through all rows (each row maps to the previous one in a random order) guarantees
    this for any n >= 2.
    """
    order = np.random.default_rng(seed).permutation(n)
    perm = np.empty(n, dtype=np.int64)
    perm[order] = np.roll(order, 1)
    return perm


def cosine_report(en: np.ndarray, tr: np.ndarray, aligned: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """Mean cosines of the LangAlign paper's Table 9 / Figure 3, plus the baselines that make them readable.

    Row i of `en`, `tr` and `aligned` are an English sentence, its translation and the aligned English vector.
    `shuffled` pairs each aligned vector with another row's translation (the anisotropy floor for `aligned_tr`,
    named as `embedstore.study.report` expects); `shuffled_en_tr` is the same floor for the raw `en_tr`.
    `row_sd` is each mean's standard deviation over the rows: what another sample of pairs could have given (a
    report's interval counts it; an interval over seeds of the same pairs cannot).
    """
    en, tr = _paired(en, tr, ("en", "tr"))
    en, aligned = _paired(en, aligned, ("en", "aligned"))
    perm = derangement(len(en), seed)
    per_row = {"en_tr": row_cosines(en, tr), "aligned_tr": row_cosines(aligned, tr),
               "aligned_en": row_cosines(aligned, en), "shuffled": row_cosines(aligned, tr[perm]),
               "shuffled_en_tr": row_cosines(en, tr[perm])}
    return {"rows": len(en), "seed": seed, **{name: float(np.mean(c)) for name, c in per_row.items()},
            "row_sd": {name: float(np.std(c, ddof=1)) for name, c in per_row.items()}}


# --------------------------------------------------------------------------------------------- retrieval


def retrieval_report(queries: np.ndarray, keys: np.ndarray, ks: Sequence[int] = (1, 5),
                     csls_k: int = 10) -> dict[str, Any]:
    """`base.retrieval.retrieval` on validated pairs: P@k both ways, by nearest neighbour and by CSLS."""
    q, k = _paired(queries, keys, ("queries", "keys"))
    return retrieval(q, k, ks, csls_k)


def collapse_report(aligned: np.ndarray, en: np.ndarray, tr: np.ndarray,
                    raw_tr: np.ndarray | None = None) -> dict[str, Any]:
    """`aligners.detect_collapse` as a dict: low output spread or NN P@1 far below the raw (identity) map's
    (`raw_tr`: the target vectors before the aligner, when `tr` went through it)."""
    return asdict(detect_collapse(as_matrix(aligned, "aligned"), as_matrix(en, "en"), as_matrix(tr, "tr"),
                                  None if raw_tr is None else as_matrix(raw_tr, "raw_tr")))


def evaluate_alignment(en: np.ndarray, tr: np.ndarray, aligned: np.ndarray, *, aligned_tr: np.ndarray | None = None,
                       ks: Sequence[int] = (1, 5), csls_k: int = 10, seed: int = 0) -> dict[str, Any]:
    """Cosine, retrieval (raw EN↔TR and aligned EN↔TR) and the collapse flag for one set of held-out pairs.

    `aligned_tr`: the target vectors through the aligner too, for an aligner applied to target text at test time
    (FC and AE with the identity term): the head then compares A(en) with A(tr), not with raw tr, so retrieval
    and the collapse check in that space (`head_space`) are what says whether the head can transfer.

    Each pair of spaces is searched once: the collapse check's P@1s are the retrievals' forward NN P@1
    (`judge_collapse`; the same figure `detect_collapse` would search the rows again for), and the raw retrieval,
    which depends on the rows alone, is remembered for the process (`_raw_retrieval`: a sweep judges every aligner
    of a seed on the same held-out rows)."""
    en, tr = _paired(en, tr, ("en", "tr"))
    en, aligned = _paired(en, aligned, ("en", "aligned"))
    searched = tuple(ks) if 1 in ks else (1, *ks)  # P@1 for the collapse check, whatever the caller asked for
    retrievals = {"raw": _raw_retrieval(en, tr, searched, csls_k),
                  "aligned": retrieval_report(aligned, tr, searched, csls_k)}
    checks = {"collapse": judge_collapse(_nn_p1(retrievals["aligned"]), _nn_p1(retrievals["raw"]), aligned, tr)}
    if aligned_tr is not None:
        en, aligned_tr = _paired(en, aligned_tr, ("en", "aligned_tr"))
        retrievals["head_space"] = retrieval_report(aligned, aligned_tr, searched, csls_k)
        checks["collapse_head_space"] = judge_collapse(_nn_p1(retrievals["head_space"]), _nn_p1(retrievals["raw"]),
                                                       aligned, aligned_tr)
    return {"cosine": cosine_report(en, tr, aligned, seed),
            "retrieval": {space: _asked(found, ks) for space, found in retrievals.items()},
            **{name: asdict(check) for name, check in checks.items()}}


def _nn_p1(report: dict[str, Any]) -> float:
    return report["forward"]["nn"]["p@1"]


def _asked(report: dict[str, Any], ks: Sequence[int]) -> dict[str, Any]:
    """`report` (this call's own: a fresh search or a copy of a remembered one) with only the P@k the caller asked
    for; P@1 is searched for the collapse check in any case."""
    if 1 not in ks:
        for direction in ("forward", "backward"):
            for scores in report[direction].values():
                scores.pop("p@1")
    return report


_RAW_RETRIEVALS: dict[bytes, dict[str, Any]] = {}
#: Raw retrievals remembered at once: the held-out rows of a few tasks and languages; the oldest goes first.
_RAW_REMEMBERED = 8


def _raw_retrieval(en: np.ndarray, tr: np.ndarray, ks: Sequence[int], csls_k: int) -> dict[str, Any]:
    """`retrieval_report(en, tr)`, remembered in this process by the rows' content (their bytes, shapes and
    dtypes) and the options: the identity map's retrieval is a fact of the rows, not of the aligner judged on
    them, and a sweep judges up to a dozen aligners a seed on the same rows."""
    digest = hashlib.sha256(repr((en.shape, en.dtype.str, tr.shape, tr.dtype.str, tuple(ks), csls_k)).encode())
    for rows in (en, tr):
        digest.update(np.ascontiguousarray(rows).data)
    key = digest.digest()
    if key not in _RAW_RETRIEVALS:
        if len(_RAW_RETRIEVALS) >= _RAW_REMEMBERED:
            del _RAW_RETRIEVALS[next(iter(_RAW_RETRIEVALS))]
        _RAW_RETRIEVALS[key] = retrieval_report(en, tr, ks, csls_k)
    return copy.deepcopy(_RAW_RETRIEVALS[key])


def fitted_alignment(aligner: Aligner, en: np.ndarray, tr: np.ndarray, *, ks: Sequence[int] = (1, 5),
                     csls_k: int = 10, seed: int = 0) -> dict[str, Any]:
    """`evaluate_alignment` of a fitted aligner on pairs its caller knows it never saw: in the direction it maps
    (a reverse aligner maps tr into English space and is judged against en), and in the head's space when it is
    applied to target text at test time."""
    src, tgt = (tr, en) if aligner.reverse else (en, tr)
    return evaluate_alignment(src, tgt, aligner.transform(src), aligned_tr=head_space_target(aligner, tgt), ks=ks,
                              csls_k=csls_k, seed=seed)


def head_space_target(aligner: Aligner, tr: np.ndarray) -> np.ndarray | None:
    """The target vectors as the head sees them at test time, A(tr), for a forward aligner applied to target text
    (None otherwise: then the head sees raw tr, which `evaluate_alignment` already compares with)."""
    return aligner.transform(tr) if aligner.aligns_target_at_test and not aligner.reverse else None


def check_forward(aligner: Aligner) -> None:
    """Refuse a reverse aligner: every analysis feeds it English vectors and compares its output with the target's."""
    if aligner.reverse:
        raise ConfigError(f"{type(aligner).__name__} was made with reverse=True (target → English); the analyses "
                          "expect an English → target aligner")


def held_out_alignment(en: np.ndarray, tr: np.ndarray, split: Split, aligner: Aligner, *,
                       ks: Sequence[int] = (1, 5), csls_k: int = 10, seed: int = 0) -> dict[str, Any]:
    """Fit `aligner` on the split's fit rows, then evaluate it on the held-out rows only.

    (A saved aligner is evaluated with `evaluate_alignment` on rows its caller knows it was not fitted on.)
    """
    en, tr = _paired(en, tr, ("en", "tr"))
    check_forward(aligner)
    aligner.fit(en[split.fit], tr[split.target_fit])
    return fitted_alignment(aligner, en[split.test], tr[split.test], ks=ks, csls_k=csls_k, seed=seed)


def layer_report(en_by_layer: Mapping[int, np.ndarray], tr_by_layer: Mapping[int, np.ndarray], split: Split,
                 make_aligner: Callable[[], Aligner], *, ks: Sequence[int] = (1, 5), csls_k: int = 10,
                 seed: int = 0) -> list[dict[str, Any]]:
    """`held_out_alignment` per hidden layer, with a fresh aligner per layer (each layer is its own space).

    Middle layers often align languages better than the last one (XTREME retrieves at layer 7, Veitsman et al.
    use 8), so the best layer for an aligner is an empirical question this answers.
    """
    missing = sorted(set(en_by_layer) ^ set(tr_by_layer))
    if missing:
        raise InputError(f"layers {missing} have vectors for only one language; both sides need every layer")
    return [{"layer": int(layer), **held_out_alignment(en_by_layer[layer], tr_by_layer[layer], split, make_aligner(),
                                                        ks=ks, csls_k=csls_k, seed=seed)}
            for layer in sorted(en_by_layer)]


# --------------------------------------------------------------------------------------------- gradients


def representation_map(aligner: Aligner | None, dim: int) -> tuple[nn.Module, str]:
    """The aligner as a differentiable module z = f_θ(x) on raw vectors, and a description of what θ is.

    It is `aligner.to_torch()`: the map `transform` computes, with the parameters the aligner has (a trained
    network in eval mode so dropout does not add noise to the gradients, or the closed-form map's affine
    parameters, "the parameters this aligner would have if it were trained by gradient descent"). With no
    aligner, θ is an identity-initialised linear map: the raw vectors as a trainable representation.
    """
    if aligner is not None:
        return aligner.to_torch(), f"{type(aligner).__name__}.to_torch()"
    linear = nn.Linear(dim, dim)
    with torch.no_grad():
        linear.weight.copy_(torch.eye(dim))
        linear.bias.zero_()
    return linear, "identity-initialised linear map (no aligner)"


def _cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine; a zero gradient (nothing to learn) counts as orthogonal rather than NaN."""
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(1e-30)


def _spread(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std()), "min": float(arr.min()), "max": float(arr.max()),
            "negative_fraction": float(np.mean(arr < 0)), "n": int(len(arr))}


def gradient_alignment(x: np.ndarray, y: np.ndarray, labels: Sequence[Any], head: Head, *,
                       aligner: Aligner | None = None, batch_size: int = 64, seed: int = 0) -> dict[str, Any]:
    """Do the alignment loss and the task loss pull the shared representation the same way?

    The shared representation is z = f_θ(x) for English vectors x (`representation_map`: the aligner's network,
    its affine map, or an identity linear map). On minibatches of the given rows (held-out rows: on the aligner's
    own fit rows a least-squares map has a zero alignment gradient) two losses are computed on the same z:

    - alignment loss L_a = MSE(z, y), y the translations' vectors (what the aligner is trained on);
    - task loss L_t = cross-entropy(head(z), labels), `head` being a fitted head (trained on aligned English)
      held fixed.

    Measured (`parameters`): per minibatch, cos(∇_θ L_a, ∇_θ L_t) over all of θ flattened; spread over
    minibatches. Measured (`representation`): per row, cos(∂L_a/∂z_i, ∂L_t/∂z_i); spread over rows. Mean
    gradient norms are reported too (a cosine between near-zero gradients means little).

    Reading it: cosine near +1 means a step that improves alignment also improves the task; near 0 means the
    objectives are orthogonal (better alignment is neither help nor harm to the task head, Veitsman et al.'s
    finding for XLM-R); negative means they conflict. Rows whose label the head never saw are dropped (their
    task loss is undefined) and counted.
    """
    head._check_fitted()
    x, y = _paired(x, y, ("x", "y"))
    labels_arr = as_labels(labels, len(x), "labels")
    if batch_size < 1:
        raise ConfigError(f"batch_size {batch_size} must be at least 1")
    classes = head.classes_
    if (labels_arr.dtype.kind == "U") != (classes.dtype.kind == "U"):
        raise InputError(f"labels hold {labels_arr.dtype} values but the head was fitted on {classes.dtype} labels")
    known = np.isin(labels_arr, classes)
    if known.sum() < 1:
        raise InputError(f"none of the {len(x)} rows has a label the head was fitted on "
                         f"({', '.join(map(str, classes))})")
    codes = torch.from_numpy(np.searchsorted(classes, labels_arr[known]).astype(np.int64))
    xs, ys = torch.from_numpy(x[known]), torch.from_numpy(y[known])
    rep, described = representation_map(aligner, x.shape[1])
    task = copy.deepcopy(head.module_).eval()
    for p in task.parameters():
        p.requires_grad_(False)
    params = [p for p in rep.parameters() if p.requires_grad]

    param_cos, param_norms, row_cos, row_norms, losses = [], [], [], [], []
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(xs)))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        z = rep(xs[idx])
        loss_a = nn.functional.mse_loss(z, ys[idx])
        loss_t = nn.functional.cross_entropy(task(z), codes[idx])
        *grad_a, dz_a = torch.autograd.grad(loss_a, [*params, z], retain_graph=True)
        *grad_t, dz_t = torch.autograd.grad(loss_t, [*params, z])
        flat_a = torch.cat([g.reshape(-1) for g in grad_a])
        flat_t = torch.cat([g.reshape(-1) for g in grad_t])
        param_cos.append(float(_cosines(flat_a, flat_t)))
        param_norms.append((float(flat_a.norm()), float(flat_t.norm())))
        row_cos.extend(_cosines(dz_a, dz_t).tolist())
        row_norms.append(torch.stack([dz_a.norm(dim=1), dz_t.norm(dim=1)], dim=1))
        losses.append((loss_a.item() * len(idx), loss_t.item() * len(idx)))
    norms = np.asarray(param_norms)
    per_row = torch.cat(row_norms).numpy()
    totals = np.sum(losses, axis=0) / len(xs)
    return {
        "rows": int(len(xs)),
        "dropped_unseen_label": int((~known).sum()),
        "batch_size": batch_size,
        "seed": seed,
        "map": described,
        "alignment_loss": float(totals[0]),
        "task_loss": float(totals[1]),
        "parameters": {**_spread(param_cos), "alignment_grad_norm": float(norms[:, 0].mean()),
                       "task_grad_norm": float(norms[:, 1].mean())},
        "representation": {**_spread(row_cos), "alignment_grad_norm": float(per_row[:, 0].mean()),
                           "task_grad_norm": float(per_row[:, 1].mean())},
    }
