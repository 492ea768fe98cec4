"""Encoding and what holds its results: `encode`, `models pull`, `store info|verify|merge`, `cache list|prune`.

Estimators (torch, scikit-learn) are imported by the functions that need them, so `encode_files` (and a re-run of
a finished `embedstore encode`) never pays for them.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from embedstore.api.commands import command
from embedstore.api.values import PathLike, WhereLike, as_where, encoding_options, model_with_settings, store_path
from embedstore.base.errors import StoreError
from embedstore.base.progress import watched
from embedstore.data.hashing import Text
from embedstore.encoding.options import ComputeOptions, EncodeOptions
from embedstore.encoding.report import EncodeReport


def encode(texts: Sequence[Text], *, store: PathLike | None = None, encoding: EncodeOptions | None = None,
           batch_size: int = ComputeOptions.batch_size, device: str = ComputeOptions.device,
           progress: bool | None = None, **options: Any) -> np.ndarray:
    """Vectors of `texts` (strings, or (premise, hypothesis) pairs) in input order, float32; what the store lacks
    is encoded and kept, so asking again costs a lookup. `options`: model, layer, pooling, max_length, prefix,
    dtype (as `embedstore encode`)."""
    from embedstore.encoding.encode import embed

    progress = watched(progress)
    return embed(list(texts), store=store_path(store), options=encoding_options(encoding, **options),
                 compute=ComputeOptions(batch_size=batch_size, device=device), progress=progress)


@command("encode")
def encode_files(files: PathLike | Sequence[PathLike], *, columns: str | Sequence[str] | None = None,
                 pair_column: str | None = None, where: WhereLike = None, store: PathLike | None = None,
                 encoding: EncodeOptions | None = None, compute: ComputeOptions = ComputeOptions(),
                 progress: bool | None = None, distributed: bool | None = None, **options: Any) -> EncodeReport:
    """`embedstore encode FILES`: the named columns of the rows passing `where` go into the store; returns the
    report (texts, unique, already stored, encoded, seconds, keys). `distributed` None: on when this process is
    one rank of a torchrun job (WORLD_SIZE > 1)."""
    from embedstore.encoding.encode import encode_files as run
    from embedstore.encoding.launch import launched_distributed

    progress = watched(progress)
    paths = [files] if isinstance(files, (str, os.PathLike)) else list(files)
    return run(paths, columns=columns, pair_column=pair_column, where=as_where(where), store=store_path(store),
               options=encoding_options(encoding, **options), compute=compute, progress=progress,
               distributed=launched_distributed() if distributed is None else distributed)


@command("models pull")
def pull_model(name: str | None = None, *, force: bool = False):
    """`embedstore models pull`: build (the offline default) or download `name` (None: the project's model) into
    the cache; returns where, how big, how long, and its fingerprint (`PullResult`)."""
    from embedstore.encoding.models import pull

    return pull(model_with_settings(name), force=force)


@command("store info")
def store_info(path: PathLike) -> dict:
    """`embedstore store info`: the store's keys, rows, dimension and size on disk."""
    from embedstore.store import Store

    return Store.open(path).info()


@command("store verify")
def verify_store(path: PathLike, *, repair: bool = False):
    """`embedstore store verify`: every committed row read back and checked against its digest. Returns the
    damage found (a list of `Damage`, empty when intact), or with `repair` what was mended (`Repair`: rows
    dropped, which the next encode recomputes, and digests rebuilt)."""
    from embedstore.store import Store

    st = Store.open(path)
    if not st.exists():
        raise StoreError(f"{path}: no store here")
    return st.repair() if repair else st.verify()


@command("store merge")
def merge_stores(inputs: Sequence[PathLike], out: PathLike, *, force: bool = False, tolerance: float = 1e-5):
    """`embedstore store merge`: the union of `inputs` in `out` (identical keys combined and deduplicated by
    text); returns the `MergeReport`."""
    from embedstore.store import merge_stores as run

    return run(list(inputs), out, force=force, tolerance=tolerance)


@command("cache list")
def list_cache() -> list:
    """`embedstore cache list`: every entry of the cache (`CacheEntry`: kind, path, size), largest first."""
    from embedstore.encoding.cache import cache_entries

    return cache_entries()


@command("cache prune")
def prune_cache(kinds: Sequence[str] = ("onnx",), *, dry_run: bool = False) -> list:
    """`embedstore cache prune`: remove the entries of `kinds` ("onnx", "models"), which rebuild on next use;
    returns them (with `dry_run`, what would be removed)."""
    from embedstore.encoding.cache import prune

    return prune(tuple(kinds), dry_run=dry_run)
