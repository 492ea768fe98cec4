"""The Python API: the commands of the CLI as functions with keyword options, re-exported by `embedstore`.

    import embedstore
    vectors = embedstore.encode(["첫 번째 문장", "second sentence"])          # (2, 384) float32, stored
    embedstore.train_aligner("pairs.parquet", target_column="ko", out="cache/al")
    embedstore.train_head("task.en.parquet", label_column="label", aligner="cache/al", out="cache/pipe")
    pipe = embedstore.Pipeline.load("cache/pipe")
    pipe.predict(["새 문서를 여는 방법"])                                        # ["shared"]: one label per text
    pipe.predict_proba(["새 문서를 여는 방법"])                                  # (1, n_classes), pipe.classes_ order

This module is where keyword options become the library's values (row sources, encoding options, sizes, the
store), and the CLI commands call these same functions with what they parsed: a command and its function cannot
drift apart. What a call leaves unset (the store, the model, the encoding options) comes from the project settings
(`embedstore.toml`, `EMBEDSTORE_*` variables: `embedstore.base.settings`), then the defaults, and every record
returned says under "settings" where each value came from. Estimators (torch, scikit-learn) are imported by the functions that need them, so `encode_files`
(and a re-run of a finished `embedstore encode`) never pays for them; `arch`, `head` and `recipe` None mean the
registries' defaults.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from embedstore.base.errors import ConfigError
from embedstore.base.schema import check_keys
from embedstore.base.settings import project_settings
from embedstore.data.hashing import Text
from embedstore.data.selection import parse_size
from embedstore.data.tasks import Source, Where, parse_where, where_from_table
from embedstore.encoding.options import ENCODING_FIELDS, ComputeOptions, EncodeOptions, default_store, \
    options_with_settings
from embedstore.encoding.report import EncodeReport
from embedstore.store.object_backend import is_url

if TYPE_CHECKING:
    from embedstore.pipelines.pipeline import Pipeline

__all__ = ["encode", "encode_files", "evaluate", "load_pipeline", "train_aligner", "train_head"]

PathLike = str | os.PathLike[str]
#: A row filter as the API takes it: {"fold": [0, 1, 2]} (a value or a list) or CLI-style ["fold=0,1,2"].
WhereLike = Mapping[str, Any] | Sequence[str] | None


def as_where(where: WhereLike) -> Where:
    if where is None:
        return ()
    if isinstance(where, Mapping):
        return where_from_table(dict(where), "where")
    if isinstance(where, str):
        return parse_where([where])
    return parse_where(list(where))


def store_path(store: PathLike | None) -> Path | str:
    """The store to use: the one named (a path, or a URL such as s3://bucket/prefix/store.zarr), else
    `default_store()`."""
    if store is None:
        return default_store()
    return str(store) if is_url(store) else Path(store)


def encoding_options(encoding: EncodeOptions | None = None, *, layer: int | Sequence[int] | None = None,
                     **options: Any) -> EncodeOptions:
    """One `EncodeOptions` from either a built value or keywords (model, layer, pooling, max_length, prefix, dtype);
    what neither sets comes from the project settings, then the defaults."""
    check_keys("encoding option ", options, ENCODING_FIELDS)  # `layer` is a keyword of its own
    if encoding is not None:
        if options or layer is not None:
            raise ConfigError("give the encoding options either as encoding=EncodeOptions(...) or as keywords, "
                              "not both")
        return encoding
    given = {k: v for k, v in options.items() if v is not None}
    if layer is not None:
        given["layer"] = layer
    return options_with_settings(given)


def _settings(store: PathLike | None, options: Mapping[str, Any], names: Sequence[str] | None = None) -> dict:
    """Where this call's settings came from (its own arguments count as flags)."""
    given = {k for k, v in options.items() if v is not None} | ({"store"} if store is not None else set())
    record = project_settings().record(given)
    return record if names is None else {name: record[name] for name in names}


def encode(texts: Sequence[Text], *, store: PathLike | None = None, encoding: EncodeOptions | None = None,
           batch_size: int = ComputeOptions.batch_size, device: str = ComputeOptions.device,
           progress: bool = False, **options: Any) -> np.ndarray:
    """Vectors of `texts` (strings, or (premise, hypothesis) pairs) in input order, float32; what the store lacks
    is encoded and kept, so asking again costs a lookup. `options`: model, layer, pooling, max_length, prefix,
    dtype (as `embedstore encode`)."""
    from embedstore.encoding.encode import embed

    return embed(list(texts), store=store_path(store), options=encoding_options(encoding, **options),
                 compute=ComputeOptions(batch_size=batch_size, device=device), progress=progress)


def encode_files(files: PathLike | Sequence[PathLike], *, columns: str | Sequence[str] | None = None,
                 pair_column: str | None = None, where: WhereLike = None, store: PathLike | None = None,
                 encoding: EncodeOptions | None = None, compute: ComputeOptions = ComputeOptions(),
                 progress: bool = False, distributed: bool = False, **options: Any) -> EncodeReport:
    """`embedstore encode FILES`: the named columns of the rows passing `where` go into the store; returns the
    report (texts, unique, already stored, encoded, seconds, keys)."""
    from embedstore.encoding.encode import encode_files as run

    paths = [files] if isinstance(files, (str, os.PathLike)) else list(files)
    return run(paths, columns=columns, pair_column=pair_column, where=as_where(where), store=store_path(store),
               options=encoding_options(encoding, **options), compute=compute, progress=progress,
               distributed=distributed)


def train_aligner(pairs: PathLike, *, target_column: str, out: PathLike, source_column: str = "en",
                  arch: str | None = None, size: str | int = "all", reverse: bool = False,
                  where: WhereLike = None, seed: int = 0, recipe: str | None = None,
                  store: PathLike | None = None, encoding: EncodeOptions | None = None, progress: bool = False,
                  check_size: str | int = "all", **options: Any) -> dict:
    """`embedstore train-aligner`: fit an aligner on the pairs file's rows → `out`; returns its record (its
    `held_out`: retrieval and collapse on `check_size` of the file's pairs it was not fitted on)."""
    from embedstore.estimators.aligners import DEFAULT_ALIGNER
    from embedstore.estimators.training import DEFAULT_RECIPE
    from embedstore.pipelines.steps import train_aligner as run

    src = Source(file=Path(pairs), text=source_column, target=target_column, where=as_where(where))
    record = run(src, arch=arch or DEFAULT_ALIGNER, out=Path(out), size=parse_size(size), reverse=reverse, seed=seed,
                 recipe=recipe or DEFAULT_RECIPE, store=store_path(store),
                 options=encoding_options(encoding, **options), progress=progress, check_size=parse_size(check_size))
    return {**record, "settings": _settings(store, options)}


def train_head(train: PathLike, *, out: PathLike, text_column: str = "text", label_column: str = "label",
               size: str | int = "all", aligner: PathLike | None = None, share: bool = False,
               head: str | None = None, where: WhereLike = None, seed: int = 0, recipe: str | None = None,
               store: PathLike | None = None, encoding: EncodeOptions | None = None, progress: bool = False,
               head_params: Mapping[str, Any] | None = None, single_label: bool = False, **options: Any) -> dict:
    """`embedstore train-head`: a head on the English rows (behind `aligner` when given) → the pipeline
    directory `out`; returns its manifest. Load it with `Pipeline.load(out)`."""
    from embedstore.estimators.heads import DEFAULT_HEAD
    from embedstore.estimators.training import DEFAULT_RECIPE
    from embedstore.pipelines.steps import train_head as run

    src = Source(file=Path(train), text=text_column, label=label_column, where=as_where(where))
    record = run(src, out=Path(out), size=parse_size(size), head=head or DEFAULT_HEAD,
                 aligner_dir=Path(aligner) if aligner else None, share=share, seed=seed, recipe=recipe or DEFAULT_RECIPE,
                 store=store_path(store), options=encoding_options(encoding, **options), progress=progress,
                 head_params=dict(head_params or {}), single_label=single_label)
    return {**record, "settings": _settings(store, options)}


def evaluate(pipeline: PathLike, test: PathLike, *, text_column: str = "text", label_column: str = "label",
             where: WhereLike = None, store: PathLike | None = None, model: PathLike | None = None,
             progress: bool = False, single_label: bool = False) -> dict:
    """`embedstore evaluate`: accuracy, macro-F1, per class and confusion, the pipeline's own result first and
    the other (with or without the aligner) as a diagnostic."""
    from embedstore.pipelines.steps import evaluate as run

    src = Source(file=Path(test), text=text_column, label=label_column, where=as_where(where))
    result = run(Path(pipeline), src, store=store_path(store), model=model, progress=progress,
                 single_label=single_label)
    return {**result, "settings": _settings(store, {}, ["store"])}  # the pipeline pins its encoding


def load_pipeline(directory: PathLike, *, store: PathLike | None = None, model: PathLike | None = None) -> Pipeline:
    """`Pipeline.load(directory, store=..., model=...)`, the store resolved as every command resolves it."""
    from embedstore.pipelines.pipeline import Pipeline

    return Pipeline.load(directory, store=store_path(store), model=model)
