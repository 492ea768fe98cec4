"""`embedstore encode`: run the expensive transformer once and keep every vector.

Only texts the store lacks are encoded; a finished encode re-runs in the time it takes to hash the inputs,
without loading the model. Rows are committed in whole batches as the run goes, so an interrupted run keeps
its finished work and the next run continues where it stopped. With `distributed=True` the work is split
over the ranks of a torch.distributed job (see `embedstore.encoding.distributed`).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np

from embedstore.base.progress import progress_bar
from embedstore.data.hashing import Text, normalize_text, text_ids
from embedstore.base.errors import ConfigError
from embedstore.data.tasks import Where, filtered_columns
from embedstore.data.texts import TXT_COLUMN
from embedstore.encoding.models import ModelSpec
from embedstore.encoding.options import ComputeOptions, EncodeOptions, check_combination, default_store
from embedstore.encoding.report import EncodeReport, encode_provenance, lacking_matrix
from embedstore.store import Store, StoreKey


def _unique(texts: Sequence[Text]) -> tuple[list[Text], np.ndarray]:
    """First occurrence of each distinct normalised text: duplicates are encoded once."""
    normalized = [normalize_text(t) for t in texts]
    ids = text_ids(normalized)
    _, first = np.unique(ids, axis=0, return_index=True)
    first.sort()
    return [normalized[i] for i in first], ids[first]


def encode(texts: Sequence[Text], *, store: str | Path | None = None, options: EncodeOptions = EncodeOptions(),
           compute: ComputeOptions = ComputeOptions(), progress: bool = False,
           distributed: bool = False, spec: ModelSpec | None = None) -> EncodeReport:
    """Encode what `store` lacks of `texts` under every requested layer's key; returns what was done, with the
    keys as `StoreKey`s for the caller to read with.

    `distributed`: this process is one rank of a torch.distributed job (torchrun) and encodes its share. `spec`:
    the model as the caller already resolved it (checked against a pinned fingerprint), so a command resolves
    its model once.
    """
    t0 = time.perf_counter()
    check_combination(options, compute)
    spec = options.resolve() if spec is None else spec
    keys = options.keys(spec)
    st = Store.open(store or default_store())
    unique, ids = _unique(texts)
    if distributed:
        from embedstore.encoding.distributed import encode_distributed

        report = encode_distributed(st, spec, keys, len(texts), unique, ids, options, compute, progress)
        report.seconds = time.perf_counter() - t0
        return report
    lacking = lacking_matrix(st, keys, ids)
    report = EncodeReport(store=str(st.path), keys=keys, texts=len(texts), unique=len(unique),
                          present=int((~lacking.any(0)).sum()), encoded=0, tokens=0, seconds=0.0, model_loaded=False)
    if lacking.any():
        st.check_writable()  # a read-only or unwritable store fails before the model loads
        _encode_missing(st, spec, keys, unique, ids, options, compute, report, progress)
    report.seconds = time.perf_counter() - t0
    return report


def _encode_missing(st: Store, spec: ModelSpec, keys: list[StoreKey], unique: list[Text], ids: np.ndarray,
                    options: EncodeOptions, compute: ComputeOptions, report: EncodeReport, progress: bool) -> None:
    from embedstore.encoding.backend import load_encoder
    from embedstore.encoding.batching import length_sorted_batches, tokenize
    from embedstore.encoding.encoder import collate
    from embedstore.encoding.models import load_tokenizer, resolve_device

    device = resolve_device(compute.device)
    tokenizer = load_tokenizer(spec)
    # tokenized before the engine loads: the job's size decides whether `--backend auto` exports a graph
    todo = np.flatnonzero(lacking_matrix(st, keys, ids).any(0))
    tok = tokenize(tokenizer, [unique[i] for i in todo], keys[0].prefix, options.max_length)
    t0 = time.perf_counter()
    encoder, choice, check = load_encoder(spec, options, compute, [k.layer for k in keys], device,
                                          job_tokens=int(tok.lengths.sum()))
    report.load_seconds = time.perf_counter() - t0
    provenance = encode_provenance(spec, compute, str(device), choice, check)
    report.model_loaded, report.provenance = True, provenance
    with st.writer() as writer:
        # re-check under the lock: another writer may have finished some of these meanwhile
        lacking = lacking_matrix(st, keys, ids)
        still = np.flatnonzero(lacking.any(0))
        if not np.array_equal(still, todo):
            tok = tok.take(np.searchsorted(todo, still)) if np.isin(still, todo).all() else \
                tokenize(tokenizer, [unique[i] for i in still], keys[0].prefix, options.max_length)
            todo = still
        writers = [writer.key(k, spec.dim, provenance, compute.chunk_rows) for k in keys]
        lengths = tok.lengths
        batches = length_sorted_batches(lengths, ids[todo], compute.batch_tokens, compute.batch_size)
        buffered: list[tuple[np.ndarray, dict[int, np.ndarray]]] = []
        buffered_rows = 0

        def flush() -> None:
            nonlocal buffered, buffered_rows
            if not buffered:
                return
            rows = np.concatenate([r for r, _ in buffered])
            for key, kw, lack in zip(keys, writers, lacking):
                vecs = np.concatenate([v[key.layer] for _, v in buffered])
                need = lack[todo[rows]]
                if need.any():
                    kw.append(ids[todo[rows[need]]], vecs[need])
            report.encoded += len(rows)
            buffered, buffered_rows = [], 0

        with progress_bar("texts", enabled=progress) as bar:
            task = bar.add_task("encoding", total=len(todo))
            for rows in batches:
                batch = collate(tok, rows, tokenizer.pad_token_id, device)
                pooled = encoder.forward(batch, [k.layer for k in keys], keys[0].pooling)
                buffered.append((rows, {layer: spec.folder.apply(v) for layer, v in pooled.items()}))
                buffered_rows += len(rows)
                report.tokens += int(lengths[rows].sum())
                if buffered_rows >= compute.chunk_rows:
                    flush()
                bar.advance(task, len(rows))
            flush()


def read_inputs(paths: Sequence[str | Path], *, columns: Sequence[str] | str | None = None,
                pair_column: str | None = None, where: Where = ()) -> list[Text]:
    """The texts of every named column (or (column, pair_column) pairs) of the rows passing `where`, file by
    file and column by column; every file is read and checked before any is encoded."""
    columns = [columns] if isinstance(columns, str) else list(columns or [TXT_COLUMN])
    if pair_column is not None and len(columns) > 1:
        raise ConfigError(f"pair_column {pair_column!r} with {len(columns)} columns; a pair is one text column and "
                          "its pair column")
    texts: list[Text] = []
    for path in map(Path, paths):
        table = filtered_columns(path, [*columns, *([pair_column] if pair_column else [])], where)
        for column in columns:
            texts.extend(zip(table[column], table[pair_column]) if pair_column else table[column])
    return texts


def encode_files(paths: Sequence[str | Path], *, columns: Sequence[str] | str | None = None,
                 pair_column: str | None = None, where: Where = (), store: str | Path | None = None,
                 options: EncodeOptions = EncodeOptions(), compute: ComputeOptions = ComputeOptions(),
                 progress: bool = False, distributed: bool = False) -> EncodeReport:
    """Every file is read and validated before the model is touched: a bad row costs no encoding."""
    texts = read_inputs(paths, columns=columns, pair_column=pair_column, where=where)
    return encode(texts, store=store, options=options, compute=compute, progress=progress, distributed=distributed)


def embed(texts: Sequence[Text], *, store: str | Path | None = None, options: EncodeOptions = EncodeOptions(),
          compute: ComputeOptions = ComputeOptions(), progress: bool = False,
          spec: ModelSpec | None = None) -> np.ndarray:
    """Vectors of `texts` (first layer of `options.layers`) in input order, encoding what the store lacks;
    `spec` as in `encode`."""
    report = encode(texts, store=store, options=options, compute=compute, progress=progress, spec=spec)
    return Store.open(report.store).get(report.keys[0], texts)
