"""Texts into token ids and batches, as every engine needs them, without torch: the exported ONNX pipeline
(`export.onnx_graph.OnnxPipeline`) serves with onnxruntime and a tokenizer alone, and cuts, tokenizes and batches
exactly as `embedstore encode` does because it runs this very code.

Batches are formed over texts sorted by token length (longest first, so an out-of-memory error shows up in
the first batch, not after an hour), which keeps padding, and so wasted compute, near zero, and are cut by a
token budget rather than a fixed count. With the order fixed by (length, text id), batches cut greedily and
commits on batch boundaries, a resumed run re-forms the very same batches, so its vectors equal an
uninterrupted run's bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from embedstore.data.hashing import Text


@dataclass
class Tokenized:
    """Unpadded token ids of every text; padding happens per batch."""

    features: dict[str, list[list[int]]]

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(ids) for ids in self.features["input_ids"]), dtype=np.int64)

    def take(self, rows: np.ndarray) -> "Tokenized":
        return Tokenized({name: [seqs[r] for r in rows] for name, seqs in self.features.items()})


CHARS_PER_TOKEN = 8
"""Where `cut_text` first tries to cut: max_length x 8 characters. XLM-R/e5 pieces average about 3-4 characters
of Latin-script text and fewer of CJK, so one try nearly always suffices; a text with fewer tokens per character
(long runs of spaces, which tokenizers drop) gets a bound twice as large until it qualifies."""


def cut_text(tokenizer, text: str, max_length: int) -> str:
    """The shortest leading part of `text`, ending where a word ends, that still gives the tokenizer at least
    `max_length` tokens: those are all a truncating tokenizer keeps of the whole text, so the result is the same.

    Why this cannot change the tokens kept: the tokenizers of encoder models (SentencePiece Metaspace, WordPiece,
    byte-level BPE) split the text into words at spaces before splitting words into tokens, and tokenize each word
    on its own. A prefix that ends just before a space therefore tokenizes to exactly the first tokens of the
    whole text; when there are at least `max_length` of them, truncation keeps the same ones. A bound in
    characters alone would not do (a run of spaces has no tokens at all; a cut inside a word changes its last
    token), hence the check. A text without a space in reach is handed over whole.

    Without it a 1 MB text was tokenized whole (minutes and ~1 GB) only for all but 512 tokens to be dropped.
    """
    bound = max_length * CHARS_PER_TOKEN
    while bound < len(text):
        space = text.rfind(" ", 0, bound + 1)
        if space > 0:
            head = text[:space]
            if len(tokenizer(head, add_special_tokens=False)["input_ids"]) >= max_length:
                return head
        bound *= 2
    return text


def tokenize(tokenizer, texts: Sequence[Text], prefix: str, max_length: int) -> Tokenized:
    """The prefix goes before the (first) text: e5 was trained with "query: " in front of every input.

    Long texts are cut first (`cut_text`; each side of a pair on its own: one that keeps `max_length` tokens is
    still the longer side, so truncation trims the other side exactly as it would have)."""
    def cut(text: str) -> str:
        return cut_text(tokenizer, text, max_length)

    if texts and isinstance(texts[0], tuple):
        first = [prefix + cut(a) for a, _ in texts]
        second = [cut(b) for _, b in texts]
        enc = tokenizer(first, second, truncation=True, max_length=max_length, padding=False)
    else:
        enc = tokenizer([prefix + cut(t) for t in texts], truncation=True, max_length=max_length, padding=False)
    keep = ("input_ids", "attention_mask", "token_type_ids")
    return Tokenized({k: enc[k] for k in keep if k in enc})


def length_order(lengths: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Longest first; ties broken by text id so the order never depends on input order."""
    tie = np.frombuffer(np.ascontiguousarray(ids[:, :8]).tobytes(), dtype=">u8") if len(ids) else np.zeros(0)
    return np.lexsort((tie, -lengths))


def token_budget_cuts(sorted_lengths: np.ndarray, max_tokens: int, max_rows: int) -> list[tuple[int, int]]:
    """(start, stop) of each batch over texts sorted longest first: as many as fit in `max_tokens` padded tokens
    (rows x the first, longest, length), at most `max_rows`, at least one.

    Greedy from the start, so the batches from any batch boundary on are the same whatever came before it: a
    resumed run (which restarts at a committed batch boundary) re-forms the very batches of an uninterrupted one.
    """
    cuts, start, n = [], 0, len(sorted_lengths)
    while start < n:
        rows = min(max_rows, max(1, max_tokens // max(int(sorted_lengths[start]), 1)), n - start)
        cuts.append((start, start + rows))
        start += rows
    return cuts


def length_sorted_batches(lengths: np.ndarray, ids: np.ndarray, max_tokens: int, max_rows: int) -> list[np.ndarray]:
    """Row indices of each batch: length-sorted (`length_order`), cut by the token budget (`token_budget_cuts`)."""
    order = length_order(lengths, ids)
    return [order[a:b] for a, b in token_budget_cuts(lengths[order], max_tokens, max_rows)]


def pad_batch(tok: Tokenized, rows: np.ndarray, pad_id: int) -> dict[str, np.ndarray]:
    """The rows' features padded on the right to the longest of them (int64, as both engines take them)."""
    width = max(len(tok.features["input_ids"][r]) for r in rows)
    batch = {}
    for name, seqs in tok.features.items():
        fill = pad_id if name == "input_ids" else 0
        out = np.full((len(rows), width), fill, dtype=np.int64)
        for i, r in enumerate(rows):
            out[i, : len(seqs[r])] = seqs[r]
        batch[name] = out
    return batch
