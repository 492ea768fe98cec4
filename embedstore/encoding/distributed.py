"""Encoding on several processes with torch.distributed: the ranks write disjoint chunks of one zarr store.

`torchrun --nproc-per-node N -m embedstore encode ...` starts N copies of the command. Each reads the same
input files and joins one process group (gloo on CPU, nccl on CUDA with one GPU per LOCAL_RANK).

Why it is built this way:
- One writer lock, held by rank 0 for the whole job: rank 0 alone decides what is missing, creates key
  groups, grows arrays and advances `committed_rows`. The other ranks never write metadata, so the store's
  single-writer commit protocol holds and readers still trust only `committed_rows`.
- zarr is safe across processes only when they write different chunks. The plan lays out each key's missing
  texts exactly as a single-process encode would (sorted by token length, then text id, from the committed
  count on) and cuts those rows into blocks at chunk multiples, so no chunk is written by two processes; a
  partial first chunk (an earlier run committed mid-chunk) and the partial last chunk each belong to a single
  block.
- Blocks go to ranks by estimated cost (padded tokens), each to the least loaded rank, in row order. Texts
  are sorted longest first, so the first blocks cost far more than the last; dealing them out in turn would
  leave rank 0 with the most work. The ranks never wait for each other until the end, so a rank slowed by
  a neighbour on a shared machine delays only itself.
- Commits follow the work without stopping it: every rank writes a row's vector before its text id, and
  rank 0 (between its own batches, and while it waits for the others at the end) reads the ids of the next
  blocks back from disk and advances `committed_rows` over every leading block whose ids are all there.
  Ids a killed run left above the committed count are zeroed first, so an id on disk always means this run
  wrote the row. Reading ids back also catches a node that writes to a directory rank 0 does not see.
- When a rank dies, torchrun stops the job. The committed prefix stays; rows after the first unfinished block
  are invisible and get encoded by the next run of the same command, which finds only what is missing.
  Because blocks are dealt out in row order, at most about one block per rank is lost.
- Only rank 0 reads the store's state. It broadcasts what the others need (which texts each key lacks, the
  committed counts and chunk sizes) once, and every rank derives the same plan from it. Token lengths, which
  set the order, are computed a slice per rank and gathered, so no rank tokenizes the whole corpus twice.
"""
from __future__ import annotations

import hashlib
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist

from embedstore.base import errors
from embedstore.encoding.options import ComputeOptions, EncodeOptions
from embedstore.encoding.report import EncodeReport, encode_provenance, lacking_matrix
from embedstore.encoding.backend import load_encoder, planned_choice
from embedstore.encoding.batching import length_order, token_budget_cuts, tokenize
from embedstore.encoding.encoder import collate
from embedstore.base.errors import ConfigError, EmbedstoreError, InputError, StoreError
from embedstore.data.hashing import Text
from embedstore.encoding.models import ModelSpec, resolve_device
from embedstore.base.parent import exit_with_parent
from embedstore.base.progress import progress_bar
from embedstore.encoding.launch import ENV_VARS
from embedstore.store import KeyWriter, RowWriter, Store, StoreKey, require_shared_writes

POLL_SECONDS = 0.5  # how often rank 0 looks for finished blocks to commit
VISIBLE_TIMEOUT = 120.0  # after all ranks finished, how long rank 0 waits for their rows to show (NFS caches)


@dataclass(frozen=True)
class Rank:
    rank: int
    world_size: int
    device: torch.device


def rank_device(option: str, local_rank: int) -> torch.device:
    """One GPU per process: where the one device rule (`models.resolve_device`) gives "auto" or "cuda" a CUDA
    device, this rank's is cuda:LOCAL_RANK; anything else (the CPU, an explicit cuda:N) is used as it decides."""
    chosen = resolve_device(option)
    if option not in ("auto", "cuda") or chosen.type != "cuda":
        return chosen
    if local_rank >= torch.cuda.device_count():
        raise ConfigError(f"LOCAL_RANK {local_rank}: this node has {torch.cuda.device_count()} GPUs; "
                          "start at most one process per GPU (--nproc-per-node)")
    return torch.device("cuda", local_rank)


def init_process_group(device_option: str) -> Rank:
    """Join the job described by the torch.distributed environment that torchrun (or another launcher) sets.

    The rank first ties its life to its launcher's: torchrun starts ranks in sessions of their own, so a
    SIGKILLed torchrun would leave them encoding (and then waiting in a collective) with nobody to collect them.
    """
    exit_with_parent(os.getppid())
    missing = [v for v in ENV_VARS if v not in os.environ]
    if missing:
        raise ConfigError(f"distributed: {', '.join(missing)} not set; start the command with "
                          "`torchrun --nproc-per-node N -m embedstore encode ...` or a launcher that sets "
                          f"{', '.join(ENV_VARS)}")
    device = rank_device(device_option, int(os.environ["LOCAL_RANK"]))
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl", device_id=device)
    else:
        dist.init_process_group(backend="gloo")
    return Rank(dist.get_rank(), dist.get_world_size(), device)


@dataclass(frozen=True)
class Block:
    """Rows `start`.. of key `key`, holding the texts at `positions` of the length-sorted to-do list."""

    key: int
    start: int
    positions: np.ndarray

    @property
    def stop(self) -> int:
        return self.start + len(self.positions)


@dataclass(frozen=True)
class Unit:
    """One rank's piece of work: texts encoded once, written to every key's block that holds exactly them."""

    positions: np.ndarray
    blocks: tuple[Block, ...]
    rank: int


def padded_tokens(lengths: np.ndarray, batch_size: int) -> int:
    """Cost of encoding length-sorted texts in batches: each batch is padded to its longest text."""
    return sum(len(lengths[i:i + batch_size]) * int(lengths[i:i + batch_size].max())
               for i in range(0, len(lengths), batch_size))


def plan(committed: Sequence[int], block_rows: Sequence[int], positions: Sequence[np.ndarray],
         lengths: np.ndarray, batch_size: int, world_size: int) -> tuple[list[list[Block]], list[Unit]]:
    """Each key's blocks in row order, and the units of work with their ranks.

    Key k's new rows run from `committed[k]`, one per entry of `positions[k]` (indices into the sorted to-do
    list, whose token lengths are `lengths`); they are cut at multiples of `block_rows[k]` (a multiple of the
    key's chunk size), so every chunk lies in exactly one block. Blocks of different keys that hold the same
    texts (the usual case: all keys lack the same texts) form one unit, so those texts are encoded once.
    """
    per_key: list[list[Block]] = []
    for k, (start, rows, pos) in enumerate(zip(committed, block_rows, positions)):
        stop = start + len(pos)
        cuts = [start, *range(start - start % rows + rows, stop, rows), stop] if len(pos) else []
        per_key.append([Block(k, a, pos[a - start:b - start]) for a, b in zip(cuts, cuts[1:])])
    same_texts: dict[bytes, list[Block]] = {}
    for blocks in per_key:
        for b in blocks:
            same_texts.setdefault(b.positions.tobytes(), []).append(b)
    load = np.zeros(world_size)
    units = []
    for blocks in sorted(same_texts.values(), key=lambda bl: int(bl[0].positions[0])):
        rank = int(np.argmin(load))
        load[rank] += padded_tokens(lengths[blocks[0].positions], batch_size)
        units.append(Unit(blocks[0].positions, tuple(blocks), rank))
    return per_key, units


def _raise_broadcast_error(error: tuple[str, str]) -> None:
    """Rank 0's user error, re-raised on every rank, so each exits with the same one-line message."""
    cls = getattr(errors, error[0], EmbedstoreError)
    raise cls(error[1])


def _check_same_inputs(ids: np.ndarray, keys: list[StoreKey], me: Rank) -> None:
    """Every rank reads the input files and resolves the model itself; a node with other files would
    silently encode other texts, or write vectors of another model under rank 0's keys."""
    digest = hashlib.blake2b(np.ascontiguousarray(ids).tobytes(), digest_size=16).hexdigest()
    seen: list = [None] * me.world_size
    dist.all_gather_object(seen, (len(ids), digest, [k.group_name for k in keys]))
    n0, digest0, keys0 = seen[0]
    for r, (n, d, k) in enumerate(seen):
        if d != digest0:
            raise InputError(f"rank {r} read {n} distinct texts that differ from rank 0's {n0}; every rank must "
                             "read the same input files (same paths and contents on every node)")
        if k != keys0:
            raise ConfigError(f"rank {r} has store keys {k}, rank 0 has {keys0}; every node needs the same model "
                              "files (same fingerprint) and the same encode options")


class _Header:
    """What rank 0 found, as every rank knows it after the broadcast."""

    def __init__(self, header: dict, n_texts: int) -> None:
        self.present: int = header["present"]
        if header["lacking"] is None:
            self.lacking = np.zeros((0, n_texts), bool)
        else:
            self.lacking = np.unpackbits(header["lacking"], axis=1, count=n_texts).astype(bool)
        self.committed: list[int] = header.get("committed", [])
        self.chunk_rows: list[int] = header.get("chunk_rows", [])

    @property
    def todo(self) -> np.ndarray:
        return np.flatnonzero(self.lacking.any(0))


def _setup_on_rank0(st: Store, spec: ModelSpec, keys: list[StoreKey], ids: np.ndarray, compute: ComputeOptions,
                    provenance: dict, stack: ExitStack) -> tuple[dict, list[KeyWriter]]:
    """Take the lock (only if there is work), create groups, reserve every row the plan will write, and clear
    what a killed run left above the committed rows."""
    lacking = lacking_matrix(st, keys, ids)
    present = int((~lacking.any(0)).sum())
    if not lacking.any():
        return {"present": present, "lacking": None}, []
    writer = stack.enter_context(st.writer())
    lacking = lacking_matrix(st, keys, ids)  # re-check under the lock: another writer may have finished some
    kws = [writer.key(k, spec.dim, provenance, compute.chunk_rows) for k in keys]
    for kw, lack in zip(kws, lacking):
        kw.clear_uncommitted_ids()
        kw.reserve(kw.committed + int(lack.sum()))
    header = {"present": present, "lacking": np.packbits(lacking, axis=1),
              "committed": [kw.committed for kw in kws], "chunk_rows": [kw.chunk_rows for kw in kws]}
    return header, kws


class _Committer:
    """Rank 0's bookkeeping: per key, the blocks in row order and how many leading ones are committed."""

    def __init__(self, st: Store, kws: list[KeyWriter], per_key: list[list[Block]], units: list[Unit],
                 sorted_ids: np.ndarray, on_progress: Callable[[float], None]) -> None:
        self.st, self.kws, self.per_key, self.sorted_ids = st, kws, per_key, sorted_ids
        self.rank_of = {(b.key, b.start): u.rank for u in units for b in u.blocks}
        self.done = [0] * len(per_key)
        self.total = sum(len(blocks) for blocks in per_key)
        self.rows = sum(b.stop - b.start for blocks in per_key for b in blocks)
        self.on_progress = on_progress
        self.last_poll = 0.0

    def _written(self, b: Block) -> bool:
        return np.array_equal(self.kws[b.key].read_ids(b.start, b.stop), self.sorted_ids[b.positions])

    def poll(self) -> bool:
        """Commit every leading block whose ids are on disk; True once all blocks are committed."""
        self.last_poll = time.monotonic()
        for k, blocks in enumerate(self.per_key):
            before = self.done[k]
            while self.done[k] < len(blocks) and self._written(blocks[self.done[k]]):
                self.done[k] += 1
            if self.done[k] > before:
                self.kws[k].commit(blocks[self.done[k] - 1].stop)
        committed = sum(b.stop - b.start for blocks, n in zip(self.per_key, self.done) for b in blocks[:n])
        self.on_progress(committed / max(self.rows, 1))
        return sum(self.done) == self.total

    def poll_now_and_then(self) -> None:
        if time.monotonic() - self.last_poll >= POLL_SECONDS:
            self.poll()

    def finish(self, others_done: dist.Work) -> None:
        """Keep committing while the other ranks work; once they are all done every row must show up."""
        while not others_done.is_completed():
            self.poll()
            time.sleep(POLL_SECONDS)
        others_done.wait()
        deadline = time.monotonic() + VISIBLE_TIMEOUT
        while not self.poll():
            if time.monotonic() > deadline:
                k = next(k for k, blocks in enumerate(self.per_key) if self.done[k] < len(blocks))
                b = self.per_key[k][self.done[k]]
                raise StoreError(f"{self.st.path}: rows {b.start}..{b.stop} written by rank "
                                 f"{self.rank_of[(b.key, b.start)]} are not in the store rank 0 sees after "
                                 f"{VISIBLE_TIMEOUT:.0f} s; every rank must write the same store directory "
                                 "(a filesystem shared by all nodes)")
            time.sleep(POLL_SECONDS)


class _RankEncoder:
    """Encodes this rank's units and writes their blocks; holds what stays fixed across units."""

    def __init__(self, encoder, keys: list[StoreKey], unique: list[Text], order: np.ndarray,
                 sorted_ids: np.ndarray, options: EncodeOptions, compute: ComputeOptions, rows: RowWriter,
                 spec: ModelSpec, after_batch: Callable[[], None]) -> None:
        self.encoder, self.keys, self.unique, self.order, self.sorted_ids = encoder, keys, unique, order, sorted_ids
        self.options, self.compute, self.rows, self.spec, self.after_batch = options, compute, rows, spec, after_batch

    def run(self, unit: Unit) -> int:
        """Forward the unit's texts in batches (as one process batches them), write each block; returns tokens."""
        tokenizer, opts = self.encoder.tokenizer, self.options
        tok = tokenize(tokenizer, [self.unique[i] for i in self.order[unit.positions]], self.keys[0].prefix,
                       opts.max_length)
        layers = sorted({self.keys[b.key].layer for b in unit.blocks})
        vectors = {layer: np.empty((len(unit.positions), self.spec.dim), np.float32) for layer in layers}
        for s, e in token_budget_cuts(tok.lengths, self.compute.batch_tokens, self.compute.batch_size):
            batch_rows = np.arange(s, e)
            batch = collate(tok, batch_rows, tokenizer.pad_token_id, self.encoder.device)
            for layer, v in self.encoder.forward(batch, layers, self.keys[0].pooling).items():
                vectors[layer][batch_rows] = self.spec.folder.apply(v)
            self.after_batch()
        for b in unit.blocks:
            key = self.keys[b.key]
            self.rows.write(key, b.start, self.sorted_ids[b.positions], vectors[key.layer])
        return int(tok.lengths.sum())


def encode_distributed(st: Store, spec: ModelSpec, keys: list[StoreKey], n_texts: int, unique: list[Text],
                       ids: np.ndarray, options: EncodeOptions, compute: ComputeOptions,
                       progress: bool) -> EncodeReport:
    """This process's part of a distributed encode; every rank returns the job's totals."""
    require_shared_writes(st)  # before joining: every rank fails at once with the same message
    st.check_writable()  # likewise, and before any rank loads the model
    me = init_process_group(compute.device)
    try:
        with ExitStack() as stack:
            return _encode(st, spec, keys, n_texts, unique, ids, options, compute, progress, me, stack)
    finally:
        dist.destroy_process_group()


def _encode(st: Store, spec: ModelSpec, keys: list[StoreKey], n_texts: int, unique: list[Text], ids: np.ndarray,
            options: EncodeOptions, compute: ComputeOptions, progress: bool, me: Rank,
            stack: ExitStack) -> EncodeReport:
    _check_same_inputs(ids, keys, me)
    # the keys' provenance names the engine (ranks do not probe: they would time each other, so `auto` takes this
    # machine's cached measurement, else PyTorch); the graph's check record joins the report once the graph loads
    choice = planned_choice(spec, options, compute, [k.layer for k in keys], me.device)
    provenance = {**encode_provenance(spec, compute, str(me.device), choice, None), "world_size": me.world_size}
    kws: list[KeyWriter] = []
    header: list = [None]
    if me.rank == 0:
        try:
            header[0], kws = _setup_on_rank0(st, spec, keys, ids, compute, provenance, stack)
        except EmbedstoreError as e:
            dist.broadcast_object_list([{"error": (type(e).__name__, str(e))}], src=0)
            raise
    dist.broadcast_object_list(header, src=0)
    if "error" in header[0]:
        _raise_broadcast_error(header[0]["error"])
    found = _Header(header[0], len(ids))
    todo = found.todo
    report = EncodeReport(store=str(st.path), keys=list(keys), texts=n_texts, unique=len(unique),
                          present=found.present, encoded=0, tokens=0, seconds=0.0, model_loaded=False,
                          rank=me.rank, world_size=me.world_size)
    if not len(todo):
        return report

    t0 = time.perf_counter()
    encoder, choice, check = load_encoder(spec, options, compute, keys, me.device, measure=False)
    tokenizer = encoder.tokenizer
    load_seconds = time.perf_counter() - t0
    provenance = {**encode_provenance(spec, compute, str(me.device), choice, check, getattr(encoder, "linear", None)),
                  "world_size": me.world_size}
    report.model_loaded, report.provenance = True, provenance
    mine = np.array_split(todo, me.world_size)[me.rank]
    my_lengths = (tokenize(tokenizer, [unique[i] for i in mine], keys[0].prefix, options.max_length).lengths
                  if len(mine) else np.zeros(0, np.int64))
    gathered: list = [None] * me.world_size
    dist.all_gather_object(gathered, my_lengths)
    lengths = np.concatenate(gathered)
    # the order a single-process encode writes rows in: one "batch" as long as the whole to-do list
    sorted_idx = length_order(lengths, ids[todo])
    order = todo[sorted_idx]
    block_rows = [c * -(-compute.batch_size // c) for c in found.chunk_rows]  # whole chunks, at least a batch
    per_key, units = plan(found.committed, block_rows, [np.flatnonzero(lack[order]) for lack in found.lacking],
                          lengths[sorted_idx], compute.batch_size, me.world_size)

    tokens = 0
    with progress_bar("texts", enabled=progress and me.rank == 0) as bar:
        task = bar.add_task(f"encoding on {me.world_size} ranks", total=len(todo))
        committer = None
        if me.rank == 0:
            committer = _Committer(st, kws, per_key, units, ids[order],
                                   lambda share: bar.update(task, completed=round(share * len(todo))))
        worker = _RankEncoder(encoder, keys, unique, order, ids[order], options, compute, RowWriter(st),
                              spec,
                              committer.poll_now_and_then if committer else lambda: None)
        for unit in units:
            if unit.rank == me.rank:
                tokens += worker.run(unit)
        if committer:
            committer.finish(dist.barrier(async_op=True))
        else:
            dist.barrier()
    totals: list = [None] * me.world_size
    dist.all_gather_object(totals, (tokens, load_seconds))  # also holds every rank until rank 0's last commit
    report.encoded, report.tokens = len(todo), sum(t for t, _ in totals)
    report.load_seconds = max(s for _, s in totals)
    return report
