"""`embedstore encode`: run the expensive transformer once and keep every vector.

Only texts the store lacks are encoded; a finished encode re-runs in the time it takes to hash the inputs,
without loading the model. Rows are committed in whole batches as the run goes, so an interrupted run keeps
its finished work and the next run continues where it stopped. With `distributed=True` the work is split
over the ranks of a torch.distributed job (see `embedstore.encoding.distributed`).
"""
from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from embedstore.base.progress import progress_bar, reporting_steps
from embedstore.base.errors import ConfigError, InputError
from embedstore.data.hashing import ID_BYTES, Text, normalize_text, text_ids
from embedstore.data.tasks import Where, iter_filtered
from embedstore.data.texts import TXT_COLUMN
from embedstore.encoding.models import ModelSpec
from embedstore.encoding.options import ComputeOptions, EncodeOptions, check_combination, compute_in_force
from embedstore.encoding.settings import default_store
from embedstore.encoding.report import EncodeReport, encode_provenance, lacking_matrix
from embedstore.store import Store, StoreKey


#: Distinct texts read, tokenized, batched and encoded together. An encode holds its input a chunk at a time, plus
#: 24 bytes per text (its id and position), so its memory does not grow with the input: tokenizing a 200k-line
#: file up front once took 2.75 GB. Batches are length-sorted within a chunk; 8,192 texts still fill the
#: token-budget batches of each length as a whole-input sort did.
CHUNK_TEXTS = 8192

#: A fresh pass over the texts at each call: an encode reads its input twice (ids and checks, then the texts to
#: encode), never holding it whole.
TextSource = Callable[[], Iterable[Text]]


_CHANGED = ("the input changed while it was being encoded ({}); the vectors written so far are right and kept: "
            "run the encode again")


def _batched(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _scan(source: TextSource) -> tuple[int, np.ndarray, np.ndarray]:
    """(number of texts, ids of the distinct normalised texts in order of first appearance, the input positions of
    those first appearances): the first pass, which also checks every row before anything is encoded."""
    ids = [text_ids([normalize_text(t) for t in chunk]) for chunk in _batched(source(), CHUNK_TEXTS)]
    ids = np.concatenate(ids) if ids else np.zeros((0, ID_BYTES), np.uint8)
    _, first = np.unique(ids, axis=0, return_index=True)
    first.sort()
    return len(ids), ids[first], first


def _chunks(source: TextSource, n_texts: int, first: np.ndarray,
            wanted: np.ndarray) -> Iterator[tuple[np.ndarray, list[Text]]]:
    """(ranks, normalised texts) of the distinct texts `wanted` marks (by rank: order of first appearance), read
    in a fresh pass, CHUNK_TEXTS ranks at a time. Chunks are fixed ranges of ranks whatever is still wanted, so a
    resumed run forms the same chunks, and (commits on batch boundaries) the same batches, as an uninterrupted one."""
    rank = np.full(n_texts, -1, np.int64)
    rank[first] = np.arange(len(first))
    ranks: list[int] = []
    texts: list[Text] = []
    boundary, read = CHUNK_TEXTS, 0
    for position, text in enumerate(source()):
        read = position + 1
        if position >= n_texts:
            raise InputError(_CHANGED.format(f"it now has more than {n_texts:,} texts"))
        r = int(rank[position])
        if r < 0:
            continue
        if r >= boundary:
            if ranks:
                yield np.asarray(ranks), texts
            ranks, texts, boundary = [], [], (r // CHUNK_TEXTS + 1) * CHUNK_TEXTS
        if wanted[r]:
            ranks.append(r)
            texts.append(normalize_text(text))
    if read < n_texts:
        raise InputError(_CHANGED.format(f"it now has {read:,} texts, not {n_texts:,}"))
    if ranks:
        yield np.asarray(ranks), texts


def encode(texts: Sequence[Text], *, store: str | Path | None = None, options: EncodeOptions = EncodeOptions(),
           compute: ComputeOptions | None = None, progress: bool = False,
           distributed: bool = False, spec: ModelSpec | None = None,
           keys: Sequence[StoreKey] | None = None) -> EncodeReport:
    """Encode what `store` lacks of `texts` under every requested layer's key; returns what was done, with the
    keys as `StoreKey`s for the caller to read with.

    `distributed`: this process is one rank of a torch.distributed job (torchrun) and encodes its share. `spec`:
    the model as the caller already resolved it (checked against a pinned fingerprint), so a command resolves
    its model once; `keys`: `options.keys(spec)` as the caller already computed them, so a command computes its
    store keys once and every step reads and writes under the same objects.
    """
    return encode_source(lambda: texts, store=store, options=options, compute=compute, progress=progress,
                         distributed=distributed, spec=spec, keys=keys)


def encode_source(source: TextSource, *, store: str | Path | None = None, options: EncodeOptions = EncodeOptions(),
                  compute: ComputeOptions | None = None, progress: bool = False,
                  distributed: bool = False, spec: ModelSpec | None = None,
                  keys: Sequence[StoreKey] | None = None) -> EncodeReport:
    """`encode` over texts read from `source` in chunks (`CHUNK_TEXTS`), never whole (but for a distributed
    encode, whose ranks share out the distinct texts)."""
    t0 = time.perf_counter()
    compute = compute_in_force(compute)
    check_combination(options, compute)
    n_texts, ids, first = _scan(source)  # a bad row stops the run before a model is built or loaded
    spec = options.resolve() if spec is None else spec
    keys = options.keys(spec) if keys is None else list(keys)
    st = Store.open(store or default_store())
    if distributed:
        from embedstore.encoding.distributed import encode_distributed

        is_first = np.zeros(n_texts, bool)
        is_first[first] = True
        unique = [normalize_text(t) for t, keep in zip(source(), is_first) if keep]
        report = encode_distributed(st, spec, keys, n_texts, unique, ids, options, compute, progress)
        report.seconds = time.perf_counter() - t0
        return report
    lacking = lacking_matrix(st, keys, ids)
    report = EncodeReport(store=str(st.path), keys=keys, texts=n_texts, unique=len(ids),
                          present=int((~lacking.any(0)).sum()), encoded=0, tokens=0, seconds=0.0, model_loaded=False)
    if lacking.any():
        st.check_writable()  # a read-only or unwritable store fails before the model loads
        chunks = _chunks(source, n_texts, first, lacking.any(0))
        _encode_missing(st, spec, keys, chunks, ids, int(lacking.any(0).sum()), options, compute, report, progress)
    report.seconds = time.perf_counter() - t0
    return report


def _encode_missing(st: Store, spec: ModelSpec, keys: list[StoreKey], chunks: Iterator[tuple[np.ndarray, list[Text]]],
                    ids: np.ndarray, todo: int, options: EncodeOptions, compute: ComputeOptions,
                    report: EncodeReport, progress: bool) -> None:
    """Encode the chunks' texts (`todo` of them) and append their vectors to every key that lacks them."""
    from embedstore.encoding.backend import load_encoder
    from embedstore.encoding.batch_threads import batch_workers, in_order
    from embedstore.encoding.batching import length_sorted_batches, tokenize
    from embedstore.encoding.encoder import collate
    from embedstore.encoding.models import load_tokenizer, resolve_device

    device = resolve_device(compute.device)
    tokenizer = load_tokenizer(spec)

    def tokenized(ranks: np.ndarray, texts: list[Text]):
        if not np.array_equal(text_ids(texts), ids[ranks]):
            raise InputError(_CHANGED.format("a text differs from its first reading"))
        return tokenize(tokenizer, texts, keys[0].prefix, options.max_length)

    # the first chunk is tokenized before the engine loads: the job's size (its tokens per text times the texts
    # to encode) decides whether `--backend auto` exports a graph
    head_ranks, head_texts = next(chunks)  # there is one: `todo` > 0, and `_chunks` raises if the input shrank
    head = tokenized(head_ranks, head_texts)
    head_batches = length_sorted_batches(head.lengths, ids[head_ranks], compute.batch_tokens, compute.batch_size)
    layers, pooling = [k.layer for k in keys], keys[0].pooling
    measured: dict[int, dict[int, np.ndarray]] = {}  # head batch -> PyTorch's pooled vectors made while timing it

    def job_rate(torch_encoder) -> tuple[float, int]:
        """PyTorch's tokens/s on some of the job's own batches (`job_probe_batches`), their vectors kept."""
        from embedstore.encoding.engine_choice import job_probe_batches

        picks = job_probe_batches([int(head.lengths[rows].sum()) for rows in head_batches])

        def run(i: int) -> dict[int, np.ndarray]:
            return torch_encoder.forward(collate(head, head_batches[i], tokenizer.pad_token_id, device), layers,
                                         pooling)

        measured[picks[0]] = run(picks[0])  # the warm-up (the model's first call), untimed unless it is the only batch
        timed = picks[1:] or picks
        t0 = time.perf_counter()
        # timed as the encode runs them, side by side where it does (the warm-up made the first call: no batch
        # alone), so the rate is the one the job would see
        with batch_workers(torch_encoder) as workers:
            measured.update(zip(timed, in_order(run, timed, workers, first_alone=False)))
        seconds = time.perf_counter() - t0
        tokens = sum(int(head.lengths[head_batches[i]].sum()) for i in timed)
        return tokens / max(seconds, 1e-9), tokens

    t0 = time.perf_counter()
    with reporting_steps(progress):  # a graph export or the engines' measurement says when it starts
        encoder, choice, check = load_encoder(spec, options, compute, keys, device,
                                              job_tokens=int(head.lengths.sum() * todo / len(head_ranks)),
                                              job_rate=job_rate)
    report.load_seconds = time.perf_counter() - t0
    # the chosen engine has already run when PyTorch was timed on the job's batches (and, for ONNX Runtime, probed
    # beside it): no batch of the encode need run alone for the model's first call (`in_order`)
    warmed = bool(measured)
    if choice.backend != "torch":
        measured.clear()  # PyTorch's, while another engine encodes the job: one engine's vectors per encode
    provenance = encode_provenance(spec, compute, str(device), choice, check, getattr(encoder, "linear", None))
    report.model_loaded, report.provenance = True, provenance
    with st.writer() as writer:
        # re-checked under the lock: another writer may have finished some of these meanwhile
        lacking = lacking_matrix(st, keys, ids)
        writers = [writer.key(k, spec.dim, provenance, compute.chunk_rows) for k in keys]
        buffered: list[tuple[np.ndarray, dict[int, np.ndarray]]] = []
        buffered_rows = 0

        def flush() -> None:
            nonlocal buffered, buffered_rows
            if not buffered:
                return
            ranks = np.concatenate([r for r, _ in buffered])
            for key, kw, lack in zip(keys, writers, lacking):
                vecs = np.concatenate([v[key.layer] for _, v in buffered])
                need = lack[ranks]
                if need.any():
                    kw.append(ids[ranks[need]], vecs[need])
            report.encoded += len(ranks)
            buffered, buffered_rows = [], 0

        with progress_bar("texts", enabled=progress) as bar, batch_workers(encoder) as workers:
            task = bar.add_task("encoding", total=todo)
            for ranks, texts in itertools.chain([(head_ranks, head_texts)], chunks):
                need = lacking[:, ranks].any(0)
                whole_head = ranks is head_ranks and need.all()
                tok = head if whole_head else tokenized(ranks[need], [t for t, keep in zip(texts, need) if keep])
                bar.advance(task, int((~need).sum()))  # finished by another writer meanwhile
                ranks = ranks[need]
                lengths = tok.lengths
                batches = head_batches if whole_head else \
                    length_sorted_batches(lengths, ids[ranks], compute.batch_tokens, compute.batch_size)
                kept = measured if whole_head else {}
                work = [(rows, kept.pop(i, None)) for i, rows in enumerate(batches)]

                def pooled_of(item, tok=tok):
                    rows, done = item
                    return done if done is not None else \
                        encoder.forward(collate(tok, rows, tokenizer.pad_token_id, device), layers, pooling)

                for (rows, _), pooled in zip(work, in_order(pooled_of, work, workers, first_alone=not warmed)):
                    buffered.append((ranks[rows], {layer: spec.folder.apply(v) for layer, v in pooled.items()}))
                    buffered_rows += len(rows)
                    report.tokens += int(lengths[rows].sum())
                    if buffered_rows >= compute.chunk_rows:
                        flush()
                    bar.advance(task, len(rows))
            flush()


def _input_columns(columns: Sequence[str] | str | None, pair_column: str | None) -> list[str]:
    columns = [columns] if isinstance(columns, str) else list(columns or [TXT_COLUMN])
    if pair_column is not None and len(columns) > 1:
        raise ConfigError(f"pair_column {pair_column!r} with {len(columns)} columns; a pair is one text column and "
                          "its pair column")
    return columns


def iter_inputs(paths: Sequence[str | Path], *, columns: Sequence[str] | str | None = None,
                pair_column: str | None = None, where: Where = ()) -> Iterator[Text]:
    """The texts of every named column (or (column, pair_column) pairs) of the rows passing `where`, file by
    file and column by column, read as they are consumed (`data.tasks.iter_filtered`)."""
    columns = _input_columns(columns, pair_column)
    for path in map(Path, paths):
        for column in columns:
            for row in iter_filtered(path, [column, *([pair_column] if pair_column else [])], where):
                yield (row[column], row[pair_column]) if pair_column else row[column]


def encode_files(paths: Sequence[str | Path], *, columns: Sequence[str] | str | None = None,
                 pair_column: str | None = None, where: Where = (), store: str | Path | None = None,
                 options: EncodeOptions = EncodeOptions(), compute: ComputeOptions | None = None,
                 progress: bool = False, distributed: bool = False) -> EncodeReport:
    """Every file is read and checked (the first pass) before the model is touched: a bad row costs no encoding;
    the texts to encode are read again, a chunk at a time."""
    _input_columns(columns, pair_column)
    return encode_source(lambda: iter_inputs(paths, columns=columns, pair_column=pair_column, where=where),
                         store=store, options=options, compute=compute, progress=progress, distributed=distributed)


def embed(texts: Sequence[Text], *, store: str | Path | None = None, options: EncodeOptions = EncodeOptions(),
          compute: ComputeOptions | None = None, progress: bool = False,
          spec: ModelSpec | None = None, keys: Sequence[StoreKey] | None = None) -> np.ndarray:
    """Vectors of `texts` (first layer of `options.layers`) in input order, encoding what the store lacks;
    `spec` and `keys` as in `encode`."""
    report = encode(texts, store=store, options=options, compute=compute, progress=progress, spec=spec, keys=keys)
    return Store.open(report.store).get(report.keys[0], texts)
