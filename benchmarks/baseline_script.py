"""The obvious script beside the tool (issue 29.7): sentence-transformers encode + scipy's orthogonal Procrustes +
scikit-learn's LogisticRegressionCV, on the same folds of the bundled en-ko sample as the tool's LangAlign
Procrustes pipeline (pairs: folds 0-5, English task rows: 6-7, Korean test rows: 8-9; single-label rows), and
the paired difference of the two on the same test rows with its 95 % interval (a bootstrap over test rows: the
test set's own noise). Accuracy only; nothing is timed.

    python benchmarks/baseline_script.py [MODEL]     # default: the project's model (EMBEDSTORE_MODEL, ...)
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np


def rows(fold: set[str]) -> list[list[str]]:
    from embedstore.study.demo import sample_path

    lines = sample_path().read_text(encoding="utf-8").splitlines()[1:]
    return [r for r in (line.split("\t") for line in lines) if r[3] in fold and "," not in r[2]]


def obvious_script(model: str) -> np.ndarray:
    """The 13 lines a user fluent in the field writes; returns the predicted labels of the test rows."""
    from scipy.linalg import orthogonal_procrustes
    from sentence_transformers import SentenceTransformer
    from sklearn.linear_model import LogisticRegressionCV

    st = SentenceTransformer(model, device="cpu")
    pairs, task, test = rows(set("012345")), rows({"6", "7"}), rows({"8", "9"})
    en, ko = (st.encode([r[i] for r in pairs], convert_to_numpy=True) for i in (0, 1))
    mu_en, mu_ko = en.mean(0), ko.mean(0)
    w, _ = orthogonal_procrustes(en - mu_en, ko - mu_ko)
    x = (st.encode([r[0] for r in task], convert_to_numpy=True) - mu_en) @ w + mu_ko
    head = LogisticRegressionCV(max_iter=2000).fit(x, [r[2] for r in task])
    return head.predict(st.encode([r[1] for r in test], convert_to_numpy=True))


def tool_pipeline(model: str, work: Path) -> np.ndarray:
    """The tool's defaults on the same rows: train_aligner (procrustes) → train_head → predict."""
    import embedstore
    from embedstore.study.demo import sample_path

    sample, store = sample_path(), work / "store.zarr"
    embedstore.train_aligner(sample, target_column="ko", where={"fold": list("012345")}, arch="procrustes",
                             out=work / "al", model=model, store=store)
    embedstore.train_head(sample, text_column="en", label_column="apps", where={"fold": ["6", "7"]},
                          single_label=True, aligner=work / "al", out=work / "pipe", model=model, store=store)
    pipe = embedstore.Pipeline.load(work / "pipe", store=store, model=model)
    return np.asarray(pipe.predict([r[1] for r in rows({"8", "9"})]))


def main() -> None:
    from embedstore.encoding.models import resolve_model
    from embedstore.encoding.settings import model_with_settings

    model = str(resolve_model(model_with_settings(sys.argv[1] if len(sys.argv) > 1 else None)).path)
    truth = np.asarray([r[2] for r in rows({"8", "9"})])
    with tempfile.TemporaryDirectory() as work:
        tool = tool_pipeline(model, Path(work)) == truth
    script = obvious_script(model) == truth
    rng = np.random.default_rng(0)
    draws = rng.integers(0, len(truth), size=(2000, len(truth)))
    difference = (tool[draws].mean(1) - script[draws].mean(1))
    low, high = np.percentile(difference, [2.5, 97.5])
    print(f"model {model}; {len(truth)} Korean test rows (folds 8-9 of the bundled sample)")
    print(f"obvious script (sentence-transformers + scipy Procrustes + LogisticRegressionCV): {script.mean():.3f}")
    print(f"embedstore (train-aligner procrustes + train-head, defaults):                    {tool.mean():.3f}")
    print(f"tool - script: {tool.mean() - script.mean():+.3f}, 95% interval [{low:+.3f}, {high:+.3f}] "
          f"(paired bootstrap over test rows)")


if __name__ == "__main__":
    main()
