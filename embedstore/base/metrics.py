"""Classification metrics, in one place so cached runs, end-to-end runs and `evaluate` report the same things.

Computed from one label-by-label count of the rows in numpy, with scikit-learn's definitions (precision over the
rows predicted as a label, recall over the rows that are it, F1 = 2·tp / (true + predicted), 0 where a count is 0,
macro-F1 their plain mean over `labels`, the confusion matrix over `labels` only) and its float operations, so the
figures are scikit-learn's to the bit (`tests/test_metrics.py` checks). Why not its functions: their input checks
cost ~45 ms a call, and a sweep scores every cell three times (at its C, C/10 and C×10): 16 % of the demo's cell
CPU (docs/performance.md, "The demo")."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator as float64, 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    numerator, denominator = np.asarray(numerator, np.float64), np.asarray(denominator, np.float64)
    return np.where(denominator == 0, 0.0, numerator / np.where(denominator == 0, 1.0, denominator))


def classification_metrics(y_true: Sequence, y_pred: Sequence, labels: Sequence | None = None) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix (rows = truth)."""
    y_true, y_pred = np.asarray(y_true).astype(str), np.asarray(y_pred).astype(str)
    labels = sorted(set(y_true) | set(y_pred)) if labels is None else [str(x) for x in labels]
    names = np.asarray(labels, dtype=str)
    truth, said = y_true[:, None] == names[None, :], y_pred[:, None] == names[None, :]  # rows × labels
    true_sum, pred_sum = truth.sum(0), said.sum(0)
    tp = (truth & said).sum(0)
    p, r, f = _divide(tp, pred_sum), _divide(tp, true_sum), _divide(2.0 * tp, 1.0 * true_sum + pred_sum)
    return {
        "accuracy": float(np.average(y_true == y_pred)),
        "macro_f1": float(np.average(f)),
        "n": int(len(y_true)),
        "per_class": {lab: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                            "support": int(true_sum[i])} for i, lab in enumerate(labels)},
        "labels": list(labels),
        "confusion": (truth.T.astype(np.int64) @ said.astype(np.int64)).tolist(),
    }
