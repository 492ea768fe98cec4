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
  block. Blocks are dealt out round by round (block b to rank b mod world size), so the ranks of one round
  get neighbouring lengths and finish together.
- Rounds commit the work as it goes: after each round the ranks meet at a barrier, rank 0 checks that every
  row of the round is on disk with the expected text id (which catches a node writing to a directory the
  others do not see) and commits the round. When a rank dies, torchrun stops the job: finished rounds stay
  committed, the current round's rows stay invisible (they are overwritten later), and re-running the same
  command encodes only what is still missing. A failure costs at most one round, one block per rank.
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
from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist

from . import errors
from .encode import EncodeOptions, EncodeReport, encode_provenance, lacking_matrix, load_once
from .encoder import Encoder, collate, length_sorted_batches, resolve_device, tokenize
from .errors import ConfigError, EmbedstoreError, InputError, StoreError
from .hashing import Text
from .models import ModelSpec
from .progress import progress_bar
from .store import KeyWriter, RowWriter, Store, StoreKey, require_shared_writes

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched_distributed() -> bool:
    """True when a launcher (torchrun or another) started this process as one of several ranks."""
    world = os.environ.get("WORLD_SIZE", "1")
    if not world.isdigit() or int(world) < 1:
        raise ConfigError(f"WORLD_SIZE: {world!r} in the environment; expected a positive integer")
    return int(world) > 1


@dataclass(frozen=True)
class Rank:
    rank: int
    world_size: int
    device: torch.device


def rank_device(option: str, local_rank: int) -> torch.device:
    """One GPU per process: "auto" and "cuda" mean cuda:LOCAL_RANK; an explicit device is used as given."""
    if option == "cuda" or (option == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("device: cuda is not available on this machine; expected cpu or auto")
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local_rank}: this node has {torch.cuda.device_count()} GPUs; "
                              "start at most one process per GPU (--nproc-per-node)")
        return torch.device("cuda", local_rank)
    return resolve_device("cpu" if option == "auto" else option)


def init_process_group(device_option: str) -> Rank:
    """Join the job described by the torch.distributed environment that torchrun (or another launcher) sets."""
    missing = [v for v in ENV_VARS if v not in os.environ]
    if missing:
        raise ConfigError(f"--distributed: {', '.join(missing)} not set; start the command with "
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


def plan_rounds(committed: Sequence[int], block_rows: Sequence[int], positions: Sequence[np.ndarray],
                world_size: int) -> list[list[list[Block]]]:
    """rounds[r][rank]: the blocks `rank` writes in round r.

    Per key, rows run from its committed count on, one per position; they are cut at multiples of that key's
    `block_rows` (a multiple of its chunk size), so every chunk lies in exactly one block.
    """
    per_key: list[list[Block]] = []
    for k, (start, rows, pos) in enumerate(zip(committed, block_rows, positions)):
        stop = start + len(pos)
        cuts = [start, *range(start - start % rows + rows, stop, rows), stop] if len(pos) else []
        per_key.append([Block(k, a, pos[a - start:b - start]) for a, b in zip(cuts, cuts[1:])])
    n_rounds = max((-(-len(blocks) // world_size) for blocks in per_key), default=0)
    return [[[blocks[r * world_size + i] for blocks in per_key if r * world_size + i < len(blocks)]
             for i in range(world_size)] for r in range(n_rounds)]


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


class _Plan:
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


def _setup_on_rank0(st: Store, spec: ModelSpec, keys: list[StoreKey], ids: np.ndarray, options: EncodeOptions,
                    provenance: dict, stack: ExitStack) -> tuple[dict, list[KeyWriter]]:
    """Take the lock (only if there is work), create groups and reserve every row the plan will write."""
    lacking = lacking_matrix(st, keys, ids)
    present = int((~lacking.any(0)).sum())
    if not lacking.any():
        return {"present": present, "lacking": None}, []
    writer = stack.enter_context(st.writer())
    lacking = lacking_matrix(st, keys, ids)  # re-check under the lock: another writer may have finished some
    kws = [writer.key(k, spec.hidden_size, provenance, options.chunk_rows) for k in keys]
    for kw, lack in zip(kws, lacking):
        kw.reserve(kw.committed + int(lack.sum()))
    header = {"present": present, "lacking": np.packbits(lacking, axis=1),
              "committed": [kw.committed for kw in kws], "chunk_rows": [kw.chunk_rows for kw in kws]}
    return header, kws


class _RankEncoder:
    """Encodes one rank's blocks of a round and writes them; holds what stays fixed across rounds."""

    def __init__(self, encoder: Encoder, keys: list[StoreKey], unique: list[Text], ids: np.ndarray,
                 order: np.ndarray, options: EncodeOptions, rows: RowWriter, dim: int) -> None:
        self.encoder, self.keys, self.unique, self.ids, self.order = encoder, keys, unique, ids, order
        self.options, self.rows, self.dim = options, rows, dim

    def run(self, blocks: list[Block]) -> int:
        """Forward every distinct text of `blocks` once (keys share texts), write each block; returns tokens."""
        if not blocks:
            return 0
        positions = np.unique(np.concatenate([b.positions for b in blocks]))  # ascending = length order
        tokenizer, opts = self.encoder.tokenizer, self.options
        tok = tokenize(tokenizer, [self.unique[i] for i in self.order[positions]], self.keys[0].prefix,
                       opts.max_length)
        layers = [k.layer for k in self.keys]
        vectors = {layer: np.empty((len(positions), self.dim), np.float32) for layer in layers}
        for s in range(0, len(positions), opts.batch_size):
            batch_rows = np.arange(s, min(s + opts.batch_size, len(positions)))
            batch = collate(tok, batch_rows, tokenizer.pad_token_id, self.encoder.device)
            for layer, v in self.encoder.forward(batch, layers, opts.pooling).items():
                vectors[layer][batch_rows] = v
        for b in blocks:
            key = self.keys[b.key]
            local = np.searchsorted(positions, b.positions)
            self.rows.write(key, b.start, self.ids[self.order[b.positions]], vectors[key.layer][local])
        return int(tok.lengths.sum())


def _commit_round(st: Store, kws: list[KeyWriter], round_blocks: list[list[Block]], ids: np.ndarray,
                  order: np.ndarray) -> None:
    """Rank 0, after the round's barrier: every row must be on disk with its text id before it is committed."""
    for rank, blocks in enumerate(round_blocks):
        for b in blocks:
            if not np.array_equal(kws[b.key].read_ids(b.start, b.stop), ids[order[b.positions]]):
                raise StoreError(f"{st.path}: rows {b.start}..{b.stop} written by rank {rank} are not in the store "
                                 "rank 0 sees; every rank must write the same store directory (a filesystem "
                                 "shared by all nodes)")
    for k, kw in enumerate(kws):
        stops = [b.stop for blocks in round_blocks for b in blocks if b.key == k]
        if stops:
            kw.commit(max(stops))


def encode_distributed(st: Store, spec: ModelSpec, keys: list[StoreKey], n_texts: int, unique: list[Text],
                       ids: np.ndarray, options: EncodeOptions, progress: bool) -> EncodeReport:
    """This process's part of a distributed encode; every rank returns the job's totals."""
    require_shared_writes(st)  # before joining: every rank fails at once with the same message
    me = init_process_group(options.device)
    try:
        with ExitStack() as stack:
            return _encode(st, spec, keys, n_texts, unique, ids, options, progress, me, stack)
    finally:
        dist.destroy_process_group()


def _encode(st: Store, spec: ModelSpec, keys: list[StoreKey], n_texts: int, unique: list[Text], ids: np.ndarray,
            options: EncodeOptions, progress: bool, me: Rank, stack: ExitStack) -> EncodeReport:
    _check_same_inputs(ids, keys, me)
    provenance = {**encode_provenance(spec, options, str(me.device)), "world_size": me.world_size}
    kws: list[KeyWriter] = []
    header: list = [None]
    if me.rank == 0:
        try:
            header[0], kws = _setup_on_rank0(st, spec, keys, ids, options, provenance, stack)
        except EmbedstoreError as e:
            dist.broadcast_object_list([{"error": (type(e).__name__, str(e))}], src=0)
            raise
    dist.broadcast_object_list(header, src=0)
    if "error" in header[0]:
        _raise_broadcast_error(header[0]["error"])
    plan = _Plan(header[0], len(ids))
    todo = plan.todo
    report = EncodeReport(store=str(st.path), keys=[k.to_dict() for k in keys], texts=n_texts, unique=len(unique),
                          present=plan.present, encoded=0, tokens=0, seconds=0.0, model_loaded=False,
                          rank=me.rank, world_size=me.world_size)
    if not len(todo):
        return report

    t0 = time.perf_counter()
    model, tokenizer = load_once(spec, me.device)
    load_seconds = time.perf_counter() - t0
    encoder = Encoder(model, tokenizer, me.device)
    report.model_loaded, report.provenance = True, provenance
    mine = np.array_split(todo, me.world_size)[me.rank]
    my_lengths = (tokenize(tokenizer, [unique[i] for i in mine], keys[0].prefix, options.max_length).lengths
                  if len(mine) else np.zeros(0, np.int64))
    gathered: list = [None] * me.world_size
    dist.all_gather_object(gathered, my_lengths)
    # the order a single-process encode writes rows in: one "batch" as long as the whole to-do list
    order = todo[length_sorted_batches(np.concatenate(gathered), ids[todo], len(todo))[0]]
    block_rows = [c * -(-options.batch_size // c) for c in plan.chunk_rows]  # whole chunks, at least one batch
    rounds = plan_rounds(plan.committed, block_rows, [np.flatnonzero(lack[order]) for lack in plan.lacking],
                         me.world_size)

    worker = _RankEncoder(encoder, keys, unique, ids, order, options, RowWriter(st), spec.hidden_size)
    tokens = 0
    with progress_bar("texts", enabled=progress and me.rank == 0) as bar:
        task = bar.add_task(f"encoding on {me.world_size} ranks", total=len(todo))
        for round_blocks in rounds:
            tokens += worker.run(round_blocks[me.rank])
            dist.barrier()
            if me.rank == 0:
                _commit_round(st, kws, round_blocks, ids, order)
            bar.advance(task, len(np.unique(np.concatenate([b.positions for bl in round_blocks for b in bl]))))
    totals: list = [None] * me.world_size
    dist.all_gather_object(totals, (tokens, load_seconds))  # also holds every rank until rank 0's last commit
    report.encoded, report.tokens = len(todo), sum(t for t, _ in totals)
    report.load_seconds = max(s for _, s in totals)
    return report
