"""What makes two vectors comparable: the store key.

Everything that changes a vector is in the key, so vectors of different models, poolings, layers, lengths,
prefixes or storage precisions can never be mixed by accident; each key is its own group in the store.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, fields

from embedstore.base.errors import ConfigError

POOLINGS = ("mean", "cls", "max")
DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class StoreKey:
    """`layer` is an absolute hidden-state index (0 = embeddings, num_layers = last), so -1 and 12 of a
    12-layer model are one key."""

    model: str
    fingerprint: str
    pooling: str
    layer: int
    max_length: int
    prefix: str
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ConfigError(f"pooling: '{self.pooling}' is not supported; expected one of {', '.join(POOLINGS)}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype: '{self.dtype}' is not supported; expected one of {', '.join(DTYPES)}")
        if self.max_length < 2:
            raise ConfigError(f"max_length: {self.max_length} is too small; expected at least 2 tokens")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "StoreKey":
        return cls(**{f.name: d[f.name] for f in fields(cls)})

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    @property
    def group_name(self) -> str:
        """Readable enough to recognise in a directory listing, unique through the digest."""
        slug = re.sub(r"[^A-Za-z0-9]+", "-", self.model.rstrip("/").split("/")[-1]).strip("-")[:40] or "model"
        return f"{slug}.{self.pooling}.L{self.layer}.{self.digest}"

    def describe(self) -> str:
        return (f"{self.model} [{self.fingerprint[:8]}] pooling={self.pooling} layer={self.layer} "
                f"max_length={self.max_length} prefix={self.prefix!r} dtype={self.dtype}")
