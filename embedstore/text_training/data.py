"""Task rows for text training: which file and columns, the English train/validation split, tokenization."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedstore.base.errors import InputError
from embedstore.data.hashing import Text
from embedstore.data.selection import parse_size, subsample
from embedstore.data.tasks import Source, Where, load_rows
from embedstore.encoding.batching import Tokenized, tokenize
from embedstore.estimators.training import split_indices
from embedstore.text_training.options import TrainOptions


@dataclass(frozen=True)
class TaskFile:
    """Where a task's texts and labels are: a TSV/CSV/JSONL file and its column names (`pair_column` for
    sentence pairs such as NLI premise/hypothesis)."""

    path: Path
    text_column: str = "text"
    label_column: str = "label"
    pair_column: str | None = None
    where: Where = ()  # row filters, as every command that reads rows takes them (`data.tasks.parse_where`)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def source(self) -> Source:
        """These rows as the one rows-of-a-file value (`data.tasks.Source`), read by `load_rows`."""
        return Source(self.path, self.text_column, pair=self.pair_column, label=self.label_column, where=self.where)

    @property
    def columns(self) -> list[Any]:
        """What a run's identity names of the rows: the columns, and the filters when there are any (so runs
        made before filters existed keep their identity)."""
        return [self.text_column, self.label_column, self.pair_column, *([dict(self.where)] if self.where else [])]

    def record(self, rows: int) -> dict[str, Any]:
        """Provenance: which file (by content hash) and columns, and how many of its rows were used."""
        return self.source.identity(rows=rows)


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


def read_task(task: TaskFile) -> tuple[list[Text], list[str]]:
    rows = load_rows(task.source)
    return rows.texts, rows.labels


def training_rows(task: TaskFile, options: TrainOptions) -> TrainingRows:
    """English rows (a seeded subsample when `size` is set) split into train and validation, and the classes.

    The validation split comes from the same English file: the paper tunes on English alone, and early
    stopping must not peek at the target-language test set.
    """
    texts, labels = read_task(task)
    rows = subsample(len(texts), parse_size(options.size), options.seed, f"{task.path}")
    texts, labels = [texts[i] for i in rows], [labels[i] for i in rows]
    classes = np.array(sorted(set(labels)))
    if len(classes) < 2:
        raise InputError(f"{task.path}: column '{task.label_column}' holds a single label ({classes[0]!r}); "
                         "expected at least two classes")
    train_idx, val_idx = split_indices(len(texts), options.val_fraction, options.seed)
    return TrainingRows(_split(texts, labels, train_idx, classes), _split(texts, labels, val_idx, classes), classes)


def _split(texts: list[Text], labels: list[str], idx: np.ndarray, classes: np.ndarray) -> Split:
    codes = np.searchsorted(classes, np.array([labels[i] for i in idx])).astype(np.int64)
    return Split([texts[i] for i in idx], codes)


def tokenize_splits(tokenizer: Any, prefix: str, max_length: int, *splits: Split) -> None:
    for split in splits:
        split.tok = tokenize(tokenizer, split.texts, prefix, max_length)
