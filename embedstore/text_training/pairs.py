"""Rows of the contrastive objectives: unlabeled texts (SimCSE) or translation pairs (alignment), split into
train and validation like task rows, and tokenized."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from embedstore.base.errors import InputError
from embedstore.data.selection import parse_size, subsample
from embedstore.data.tasks import Source, load_rows
from embedstore.encoding.batching import tokenize
from embedstore.estimators.training import split_indices
from embedstore.text_training.objectives import Contrastive, TextPairs
from embedstore.text_training.options import TrainOptions


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


def contrast_rows(source: Source, options: TrainOptions, size: str | int | None = None) -> ContrastRows:
    """A seeded subsample of `size` rows (default: `options.size`), split into train and validation by the
    run's seed and `val_fraction`. Rows with an empty text or positive are an error naming the row."""
    read = load_rows(source)
    left = list(read.texts)
    right = list(read.targets) if source.target else None
    for name, texts in ((source.text, left), (source.target, right)):
        for i, text in enumerate(texts or []):
            if not str(text).strip():
                raise InputError(f"{source.file}: row {i + 1}, column '{name}': empty text; expected a sentence")
    rows = subsample(len(left), parse_size(options.size if size is None else size), options.seed, str(source.file))
    if len(rows) < 4:
        raise InputError(f"{source.file}: {len(rows)} rows; contrastive training needs at least 4 "
                         "(in-batch negatives, and a validation split)")
    train_idx, val_idx = split_indices(len(rows), options.val_fraction, options.seed)

    def take(idx: Any) -> tuple[list[str], list[str] | None]:
        chosen = [rows[i] for i in idx]
        return [left[i] for i in chosen], ([right[i] for i in chosen] if right is not None else None)

    return ContrastRows(take(train_idx), take(val_idx))


def alignment_term(pairs: Source, tokenizer: Any, prefix: str, options: TrainOptions) -> Contrastive:
    """Pair-alignment InfoNCE (both directions) on all of `pairs`, split by the run's seed: the λ term of the
    joint finetune and the alignment objective of the gradient analysis."""
    if pairs.target is None:
        raise InputError(f"{pairs.file}: no target-language column named; the alignment term needs translation pairs")
    train_pairs, val_pairs = contrast_rows(pairs, options, "all").tokenized(tokenizer, prefix, options.max_length)
    return Contrastive(train_pairs, val_pairs, tokenizer.pad_token_id, options.batch_size)
