"""The encoding options: everything that shapes a vector, and how to compute it.

One value built at the edge (CLI, sweep config, pipeline manifest) and passed on: it turns into the store key
of each requested layer, so vectors computed under other options are never mixed in.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from embedstore.base.errors import ConfigError
from embedstore.encoding.models import DEFAULT_MODEL, ModelSpec, cache_dir
from embedstore.store import StoreKey

DEFAULT_STORE_NAME = "store.zarr"


def default_store() -> Path:
    return cache_dir() / DEFAULT_STORE_NAME


def absolute_layer(layer: int, num_layers: int) -> int:
    """Hidden-state index: 0 is the embedding output, num_layers the last layer; negatives count from the end."""
    if not -(num_layers + 1) <= layer <= num_layers:
        raise ConfigError(f"layer: {layer} is out of range for a {num_layers}-layer model; "
                          f"expected {-(num_layers + 1)}..{num_layers}")
    return layer if layer >= 0 else num_layers + 1 + layer


@dataclass(frozen=True)
class EncodeOptions:
    """Everything that shapes a vector (it all goes into the store key) plus how to compute it."""

    model: str = DEFAULT_MODEL
    pooling: str = "mean"
    layers: tuple[int, ...] = (-1,)
    max_length: int = 512
    prefix: str | None = None  # None: the model's own default ("query: " for e5)
    dtype: str = "float32"
    batch_size: int = 32
    device: str = "auto"
    chunk_rows: int = 1024

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch_size: {self.batch_size}; expected a positive integer")
        if self.chunk_rows < 1:
            raise ConfigError(f"chunk_rows: {self.chunk_rows}; expected a positive integer")
        if not self.layers:
            raise ConfigError("layers: empty; expected at least one layer index")


def store_keys(spec: ModelSpec, options: EncodeOptions) -> list[StoreKey]:
    prefix = spec.prefix if options.prefix is None else options.prefix
    layers = dict.fromkeys(absolute_layer(layer, spec.num_layers) for layer in options.layers)
    return [StoreKey(model=spec.name, fingerprint=spec.fingerprint, pooling=options.pooling, layer=layer,
                     max_length=options.max_length, prefix=prefix, dtype=options.dtype) for layer in layers]
