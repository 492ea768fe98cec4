"""Content addresses for texts and text pairs.

A vector is looked up by the hash of exactly what was encoded, so the same sentence in two data sets is
encoded once, and a data set's vectors are gathered by hashing its rows. Normalisation happens here, once,
and the encoder sees the normalised text: the address and the vector always describe the same string.
"""
from __future__ import annotations

import hashlib
import unicodedata
from typing import Sequence, Union

import numpy as np

Text = Union[str, tuple[str, str]]
ID_BYTES = 16  # the width of every text id, here and in every store: 128 bits make a collision negligible


def normalize(text: str) -> str:
    """NFC plus outer-whitespace strip: the XLM-R normaliser does not compose decomposed sequences."""
    return unicodedata.normalize("NFC", text).strip()


def normalize_text(text: Text) -> Text:
    if isinstance(text, tuple):
        return (normalize(text[0]), normalize(text[1]))
    return normalize(text)


def text_id(text: Text) -> bytes:
    """blake2b (ID_BYTES bytes) of the normalised text; pairs hash differently from any single text."""
    h = hashlib.blake2b(digest_size=ID_BYTES)
    if isinstance(text, tuple):
        h.update(b"pair\x00" + normalize(text[0]).encode() + b"\x00" + normalize(text[1]).encode())
    else:
        h.update(b"text\x00" + normalize(text).encode())
    return h.digest()


def text_ids(texts: Sequence[Text]) -> np.ndarray:
    """(n, ID_BYTES) uint8: the fixed-width form the store keeps next to the vectors."""
    return pack_ids([text_id(t) for t in texts])


def pack_ids(ids: Sequence[bytes]) -> np.ndarray:
    """Text ids (`text_id`'s bytes) as the (n, ID_BYTES) uint8 matrix the store keeps (`ids_to_bytes` undoes it)."""
    return np.frombuffer(b"".join(ids), dtype=np.uint8).reshape(len(ids), ID_BYTES).copy()


class RememberedIds:
    """`text_ids` that remembers each text's id, for a process that looks up the same texts again and again: a
    sweep's cells gather their task's rows, test rows and pairs from the store cell after cell, and hashing them
    anew was ~8 % of the demo's cell CPU. Bounded: forgets everything past `limit` texts."""

    def __init__(self, limit: int = 1 << 20) -> None:
        self.limit = limit
        self._ids: dict[Text, bytes] = {}

    def __call__(self, texts: Sequence[Text]) -> np.ndarray:
        new = [t for t in dict.fromkeys(texts) if t not in self._ids]
        if len(self._ids) + len(new) > self.limit:
            self._ids.clear()
            new = list(dict.fromkeys(texts))
        self._ids.update(zip(new, map(text_id, new)))
        return pack_ids([self._ids[t] for t in texts])


def ids_to_bytes(ids: np.ndarray) -> list[bytes]:
    return [row.tobytes() for row in np.ascontiguousarray(ids, dtype=np.uint8)]
