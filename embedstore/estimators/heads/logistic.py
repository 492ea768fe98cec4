"""The default head: multinomial logistic regression solved to convergence, its regularisation chosen by
cross-validation on the training rows.

Why scikit-learn and not the torch loop: the model is convex, so a full-batch quasi-Newton solver reaches the
optimum by a stated criterion (L-BFGS stops when the largest projected gradient entry is at most `tol`), where
an epoch loop with early stopping stops wherever its cap or patience says; on the real studies the old head ran
every topic fit to its 200-epoch cap. scikit-learn's lbfgs is the reference implementation users compare with,
it is fast (a 20k × 384 head is a few seconds on 2 cores) and it reports `n_iter_`, so a fit that hit
`max_iter` is known. Its coefficients are stored as the weights of an `nn.Linear` (safetensors, nothing
pickled), so prediction, saving and `finetune` share one form with the other heads.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits
from torch import nn

from embedstore.base.errors import ConfigError
from embedstore.estimators.heads.base import Head


class LogisticHead(Head):
    """Multinomial logistic regression with L2 penalty (scikit-learn's objective: C · Σ log-loss + ½‖W‖²).

    `C=None` chooses C from `Cs` log-spaced values in [1e-4, 1e4] (LogisticRegressionCV's range; 17 values
    = half-decade steps) by `cv`-fold stratified cross-validation on the training rows, scored by accuracy (as
    LogisticRegressionCV does), ties broken by the lower held-out log-loss. Why accuracy and not log-loss alone:
    on the real studies log-loss chose C 3-10x larger than accuracy did, and the head then transferred worse to
    the target language (sentiment, English-only: 78.9% against 80.1% over six cells; topic ko: equal within
    0.1 point). At most `cv_rows` rows (a stratified, seeded sample) take part in the search so a 20k-row head
    stays fast, and the chosen C is then refitted on every row, the solver started from the mean of the folds'
    solutions at that C rather than from zero (the objective is strictly convex: the same optimum, fewer
    iterations). `normalize="standard"` (default) standardises each dimension on the training rows first: the
    penalty then treats dimensions alike and lbfgs converges in tens of iterations.

    The search's fold fits stop at `cv_tol` (1e-3), the head itself at `tol` (1e-4). Why looser: the search
    only ranks Cs by held-out accuracy, whose own noise (a few hundred held-out rows: ~3 points) is well above
    what the last decade of gradient tolerance moves it (on the demo's e5-small heads, 300 rows: at most 3
    held-out rows of 300, the same C in 11 of 12 heads, the twelfth a tie in accuracy broken by log-loss); the
    tighter walk was half of every head's time.
    """

    name = "logistic"
    order = 10
    #: trained with the LM, this head is the linear head's nn.Linear under AdamW: no C search, no L-BFGS
    text_network = "linear"

    def __init__(self, C: float | None = None, Cs: int = 17, cv: int = 5, cv_rows: int = 5000,
                 normalize: str = "standard", tol: float = 1e-4, cv_tol: float = 1e-3, max_iter: int = 1000,
                 seed: int = 0, device: str = "cpu") -> None:
        self.C = C
        self.Cs = Cs
        self.cv = cv
        self.cv_rows = cv_rows
        self.normalize = normalize
        self.tol = tol
        self.cv_tol = cv_tol
        self.max_iter = max_iter
        self.seed = seed
        self.device = device

    def _network(self, dim: int, n_classes: int) -> nn.Module:
        return nn.Linear(dim, n_classes)

    def check_params(self) -> None:
        super().check_params()
        checks = {"C": self.C is None or (not isinstance(self.C, bool) and self.C > 0), "Cs": self.Cs >= 1,
                  "cv": self.cv >= 2, "cv_rows": self.cv_rows >= 2, "tol": self.tol > 0, "cv_tol": self.cv_tol > 0,
                  "max_iter": self.max_iter >= 1}
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"LogisticHead {name}={getattr(self, name)!r} is out of range "
                                  "(C > 0 or None, Cs >= 1, cv >= 2, cv_rows >= 2, tol > 0, cv_tol > 0, "
                                  "max_iter >= 1)")

    def _fit_network(self, x: np.ndarray, codes: np.ndarray, n_classes: int,
                     start: _Start | None = None) -> tuple[nn.Module, dict]:
        t0 = time.perf_counter()
        report: dict = {"criterion": f"L-BFGS: max |projected gradient| <= tol={self.tol:g} within "
                                     f"max_iter={self.max_iter}"}
        # one BLAS thread: at d=384 threads gain little, and where cores are shared (a sweep's workers, other
        # jobs) a spinning multi-threaded BLAS made each solver iteration ~10x slower (measured under load)
        with threadpool_limits(limits=1):
            if self.C is not None:
                C = self.C
            else:
                C, start = self._choose_C(x, codes, report)
            model = LogisticRegression(C=C, tol=self.tol, max_iter=self.max_iter, random_state=self.seed,
                                       warm_start=start is not None)
            if start is not None:
                model.coef_, model.intercept_ = start.coef, start.intercept
                report["started_from"] = start.origin
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)  # recorded below instead
                model.fit(x, codes)
        iterations = int(np.max(model.n_iter_))
        report.update(converged=iterations < self.max_iter, iterations=iterations, max_iter=self.max_iter, C=float(C),
                      seconds=round(time.perf_counter() - t0, 3))
        coef, intercept = model.coef_, model.intercept_
        if n_classes == 2:  # scikit-learn keeps one row for two classes; softmax over [0, z] is sigmoid(z)
            coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
        linear = nn.Linear(x.shape[1], n_classes)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(coef.astype(np.float32)))
            linear.bias.copy_(torch.from_numpy(intercept.astype(np.float32)))
        return linear, report

    def _start_point(self, start: Head) -> _Start:
        """`start`'s solution in scikit-learn's form, for `fit_from` at this head's (given) C: `start` is a head
        fitted on the same rows at another C. Why: the objective is strictly convex, so the optimum is the one a
        cold start reaches (to the solver's tolerance), and a start one decade of C away is most of the way there;
        cold, the refit at C×10 was the slowest of a head's three full fits."""
        if self.C is None:
            raise ConfigError("LogisticHead.fit_from needs a given C (a C search starts from its own path)")
        linear = start.module_[-1] if isinstance(start.module_, nn.Sequential) else start.module_
        weight, bias = linear.weight.detach().cpu().numpy(), linear.bias.detach().cpu().numpy()
        if len(start.classes_) == 2:  # back to scikit-learn's one row: [0, z] -> z
            weight, bias = weight[1:] - weight[:1], bias[1:] - bias[:1]
        return _Start(weight, bias, f"the head fitted at C={start.fit_report['C']:g}")

    def _choose_C(self, x: np.ndarray, codes: np.ndarray, report: dict) -> tuple[float, _Start | None]:
        """Walk up the C grid, warm-starting each fold's solver from the previous C, and stop once the mean
        held-out log-loss has risen for two grid steps in a row and the best accuracy is two steps behind: past
        that point a larger C only overfits more, and the large-C end (nearly unregularised, slow to converge on
        separable folds) is where almost all of a full LogisticRegressionCV path's time goes. The path walked is
        recorded in the fit report.

        The walk starts each fold at the smallest C's optimum as it is known in closed form for C -> 0 (no
        weights, the intercepts at the log class priors), not at zero: from zero, L-BFGS spent ~100 iterations on
        the smallest C alone (the unpenalised intercepts against heavily penalised weights), a third of the walk
        (e5-small topic heads, 300 rows, 8 classes); the optimum it converges to is the same.

        Returns the chosen C and where the fit on every row may start: the mean of the folds' solutions at
        that C (each fitted on most of the same rows, so near the optimum; None when a fold lacked a class)."""
        rows = _stratified_sample(codes, self.cv_rows, self.seed)
        xs, ys = x[rows], codes[rows]
        counts = np.bincount(ys)
        folds = int(min(self.cv, max(2, counts[counts > 0].min())))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*least populated class.*")
            splits = list(StratifiedKFold(folds, shuffle=True, random_state=self.seed).split(xs, ys))
        n_classes = int(codes.max()) + 1
        models = [_at_class_priors(LogisticRegression(tol=self.cv_tol, max_iter=self.max_iter, warm_start=True,
                                                      random_state=self.seed), ys[train], xs.shape[1])
                  for train, _ in splits]
        grid = np.logspace(-4, 4, self.Cs)
        losses: list[float] = []
        accuracies: list[float] = []
        starts: list[_Start | None] = []
        for C in grid:
            fold_losses, fold_accuracies = [], []
            for (train, held), model in zip(splits, models):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    model.set_params(C=float(C)).fit(xs[train], ys[train])
                proba = np.full((len(held), n_classes), 1e-15)  # a class absent from this fold's training part
                proba[:, model.classes_] = model.predict_proba(xs[held])
                proba /= proba.sum(axis=1, keepdims=True)
                fold_losses.append(held_out_log_loss(ys[held], proba))
                fold_accuracies.append(float(np.mean(proba.argmax(axis=1) == ys[held])))
            losses.append(float(np.mean(fold_losses)))
            accuracies.append(float(np.mean(fold_accuracies)))
            whole = all(len(model.classes_) == n_classes for model in models)
            starts.append(_Start(np.mean([m.coef_ for m in models], axis=0), np.mean([m.intercept_ for m in models], axis=0),
                                 f"the mean of the {folds} CV folds' solutions at this C") if whole else None)
            loss_rose_twice = len(losses) >= 3 and losses[-1] > losses[-2] > losses[-3]
            if loss_rose_twice and int(np.argmax(accuracies)) <= len(accuracies) - 3:
                break
        # highest accuracy; among equal accuracies (common on small sets) the lowest log-loss
        best = min(range(len(losses)), key=lambda i: (-accuracies[i], losses[i]))
        report["C_search"] = {"Cs": [float(c) for c in grid[:len(losses)]], "mean_accuracy": accuracies,
                              "mean_log_loss": losses, "folds": folds, "rows": int(len(rows)),
                              "scoring": "accuracy, ties by log-loss", "tol": self.cv_tol,
                              "stopped": "loss rose twice past the best accuracy" if len(losses) < len(grid)
                              else "grid end"}
        if best == len(grid) - 1 or best == 0:
            report["C_at_grid_edge"] = True
        return float(grid[best]), starts[best]


@dataclass(frozen=True)
class _Start:
    """Where the solver starts instead of zero: coefficients in scikit-learn's form, and what they came from."""

    coef: np.ndarray
    intercept: np.ndarray
    origin: str


def _at_class_priors(model: LogisticRegression, codes: np.ndarray, dim: int) -> LogisticRegression:
    """`model` (warm-started) set to start where the penalised objective's optimum tends as C -> 0: weights
    zero, intercepts the log class priors of `codes` (in scikit-learn's form: one row of log-odds for two
    classes, centred log-priors for more)."""
    present, counts = np.unique(codes, return_counts=True)
    log_prior = np.log(counts / counts.sum())
    if len(present) == 2:
        model.coef_, model.intercept_ = np.zeros((1, dim)), np.array([log_prior[1] - log_prior[0]])
    else:
        model.coef_, model.intercept_ = np.zeros((len(present), dim)), log_prior - log_prior.mean()
    return model


def held_out_log_loss(codes: np.ndarray, proba: np.ndarray) -> float:
    """scikit-learn's `log_loss` (mean -log p of the true class, p clipped to [eps, 1-eps]) on rows whose
    probabilities are already checked and normalised: its input checks (one-hot encoding the labels, array-API
    dispatch) were a tenth of a C search's time, spent ~50 times per head."""
    eps = np.finfo(proba.dtype).eps
    return float(-np.mean(np.log(np.clip(proba[np.arange(len(codes)), codes], eps, 1 - eps))))


def _stratified_sample(codes: np.ndarray, size: int, seed: int) -> np.ndarray:
    """All rows when there are at most `size`, else a seeded sample keeping each class's share (each class at
    least two rows where it has them, so every class can appear on both sides of a fold)."""
    n = len(codes)
    if n <= size:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    keep = []
    for label in np.unique(codes):
        members = np.flatnonzero(codes == label)
        take = min(len(members), max(2, round(size * len(members) / n)))
        keep.append(rng.choice(members, size=take, replace=False))
    return np.sort(np.concatenate(keep))
