"""Rows of the contrastive objectives: unlabeled texts (SimCSE) or translation pairs (alignment), split into
train and validation like task rows, and tokenized."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedstore.base.errors import InputError
from embedstore.data.selection import parse_size, subsample
from embedstore.data.tasks import Source, Where, load_rows
from embedstore.encoding.batching import tokenize
from embedstore.estimators.training import split_indices
from embedstore.text_training.objectives import Contrastive, TextPairs
from embedstore.text_training.options import TrainOptions


@dataclass(frozen=True)
class ContrastFile:
    """Where the texts of a contrastive objective are: `column`, and in `positive_column` each text's positive
    (its translation); no positive column means each text is its own positive (SimCSE)."""

    path: Path
    column: str = "en"
    positive_column: str | None = None
    where: Where = ()  # row filters (`data.tasks.parse_where`)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def source(self) -> Source:
        """These rows as the one rows-of-a-file value (`data.tasks.Source`), read by `load_rows`."""
        return Source(self.path, self.column, target=self.positive_column, where=self.where)

    @property
    def columns(self) -> list[Any]:
        return [self.column, self.positive_column, *([dict(self.where)] if self.where else [])]

    def record(self, rows: int) -> dict[str, Any]:
        return self.source.identity(rows=rows)


@dataclass
class ContrastRows:
    """Texts (and positives) split into train and validation; `tokenized` fills the TextPairs."""

    train: tuple[list[str], list[str] | None]
    val: tuple[list[str], list[str] | None]

    def tokenized(self, tokenizer: Any, prefix: str, max_length: int) -> tuple[TextPairs, TextPairs]:
        def pairs(left: list[str], right: list[str] | None) -> TextPairs:
            return TextPairs(tokenize(tokenizer, left, prefix, max_length),
                             tokenize(tokenizer, right, prefix, max_length) if right is not None else None)

        return pairs(*self.train), pairs(*self.val)


def contrast_rows(source: ContrastFile, options: TrainOptions, size: str | int | None = None) -> ContrastRows:
    """A seeded subsample of `size` rows (default: `options.size`), split into train and validation by the
    run's seed and `val_fraction`. Rows with an empty text or positive are an error naming the row."""
    read = load_rows(source.source)
    left = list(read.texts)
    right = list(read.targets) if source.positive_column else None
    for name, texts in ((source.column, left), (source.positive_column, right)):
        for i, text in enumerate(texts or []):
            if not str(text).strip():
                raise InputError(f"{source.path}: row {i + 1}, column '{name}': empty text; expected a sentence")
    rows = subsample(len(left), parse_size(options.size if size is None else size), options.seed, str(source.path))
    if len(rows) < 4:
        raise InputError(f"{source.path}: {len(rows)} rows; contrastive training needs at least 4 "
                         "(in-batch negatives, and a validation split)")
    train_idx, val_idx = split_indices(len(rows), options.val_fraction, options.seed)

    def take(idx: Any) -> tuple[list[str], list[str] | None]:
        chosen = [rows[i] for i in idx]
        return [left[i] for i in chosen], ([right[i] for i in chosen] if right is not None else None)

    return ContrastRows(take(train_idx), take(val_idx))


def alignment_term(pairs: ContrastFile, tokenizer: Any, prefix: str, options: TrainOptions) -> Contrastive:
    """Pair-alignment InfoNCE (both directions) on all of `pairs`, split by the run's seed: the λ term of the
    joint finetune and the alignment objective of the gradient analysis."""
    if pairs.positive_column is None:
        raise InputError(f"{pairs.path}: no target-language column named; the alignment term needs translation pairs")
    train_pairs, val_pairs = contrast_rows(pairs, options, "all").tokenized(tokenizer, prefix, options.max_length)
    return Contrastive(train_pairs, val_pairs, tokenizer.pad_token_id, options.batch_size)
