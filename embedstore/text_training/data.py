"""Task rows for text training (a `data.tasks.Source` with a label column): the English train/validation split,
tokenization."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from embedstore.base.errors import InputError
from embedstore.data.hashing import Text
from embedstore.data.selection import parse_size, subsample
from embedstore.data.tasks import Source, load_rows
from embedstore.encoding.batching import Tokenized, tokenize
from embedstore.estimators.training import split_indices
from embedstore.text_training.options import TrainOptions


@dataclass
class Split:
    texts: list[Text]
    codes: np.ndarray | None = None  # class indices; None for the test split, which is scored on its labels
    tok: Tokenized | None = None


@dataclass
class TrainingRows:
    """English rows split into train and validation, and the classes their codes index."""

    train: Split
    val: Split
    classes: np.ndarray


def read_task(task: Source) -> tuple[list[Text], list[str]]:
    rows = load_rows(task)
    return rows.texts, rows.labels


def training_rows(task: Source, options: TrainOptions) -> TrainingRows:
    """English rows (a seeded subsample when `size` is set) split into train and validation, and the classes.

    The validation split comes from the same English file: the paper tunes on English alone, and early
    stopping must not peek at the target-language test set.
    """
    texts, labels = read_task(task)
    rows = subsample(len(texts), parse_size(options.size), options.seed, f"{task.file}")
    texts, labels = [texts[i] for i in rows], [labels[i] for i in rows]
    classes = np.array(sorted(set(labels)))
    if len(classes) < 2:
        raise InputError(f"{task.file}: column '{task.label}' holds a single label ({classes[0]!r}); "
                         "expected at least two classes")
    train_idx, val_idx = split_indices(len(texts), options.val_fraction, options.seed)
    return TrainingRows(_split(texts, labels, train_idx, classes), _split(texts, labels, val_idx, classes), classes)


def _split(texts: list[Text], labels: list[str], idx: np.ndarray, classes: np.ndarray) -> Split:
    codes = np.searchsorted(classes, np.array([labels[i] for i in idx])).astype(np.int64)
    return Split([texts[i] for i in idx], codes)


def tokenize_splits(tokenizer: Any, prefix: str, max_length: int, *splits: Split) -> None:
    for split in splits:
        split.tok = tokenize(tokenizer, split.texts, prefix, max_length)
