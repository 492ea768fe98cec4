"""`base.metrics.classification_metrics` gives scikit-learn's figures to the bit, computed in numpy."""
import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from embedstore.base.metrics import classification_metrics


def sklearn_metrics(y_true, y_pred, labels=None) -> dict:
    """The definition: what classification_metrics computed with scikit-learn's functions before."""
    y_true, y_pred = np.asarray(y_true).astype(str), np.asarray(y_pred).astype(str)
    labels = sorted(set(y_true) | set(y_pred)) if labels is None else [str(x) for x in labels]
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    return {"accuracy": float(accuracy_score(y_true, y_pred)),
            "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
            "n": int(len(y_true)),
            "per_class": {lab: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                                "support": int(s[i])} for i, lab in enumerate(labels)},
            "labels": list(labels), "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist()}


@pytest.mark.parametrize("seed", range(20))
def test_the_figures_are_sklearns(seed):
    rng = np.random.default_rng(seed)
    classes = [f"c{i}" for i in range(int(rng.integers(2, 9)))]
    n = int(rng.integers(1, 700))
    y_true = rng.choice(classes, n)
    y_pred = np.where(rng.random(n) < rng.random(), y_true, rng.choice(classes + ["other"], n))
    # labels as a sweep passes them (the test rows' labels: a prediction outside them, a label never predicted)
    # and as evaluate does (none given: every label seen)
    for labels in (sorted(set(y_true)), None, classes[:1] + ["absent"]):
        assert classification_metrics(list(y_true), list(y_pred), labels) == sklearn_metrics(y_true, y_pred, labels)


def test_numbers_as_labels_and_a_class_never_predicted():
    got = classification_metrics([1, 1, 2, 3], [1, 2, 2, 2], labels=[1, 2, 3])
    assert got == sklearn_metrics([1, 1, 2, 3], [1, 2, 2, 2], labels=[1, 2, 3])
    assert got["per_class"]["3"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
