"""PyTorch's CPU pass with whole batches side by side, one core each, instead of every core on each batch.

Why: intra-op threads split each product of one batch across the cores, and an encoder of e5-small's size
(hidden 384, a batch of at most 2,048 tokens) gives two threads too little to share well: with oneDNN's packed
weights (`packed_linear`) one thread reached 102-108 GFLOP/s a core, two threads on one batch 65-90 a core. Two
batches at a time, each on one intra-op thread, keep each core on products of its own. Measured on the quiet AMD
EPYC (2 cores, AVX2 + AVX-512) over 3,000 help texts (82,464 tokens, the default 2,048-token batches, e5-small,
packed weights, alternated): 20.8 and 21.2 s side by side against 23.2 and 24.3 s with two intra-op threads, and
the same vectors to the bit (one kernel per product either way). Python threads suffice: PyTorch releases the GIL
inside each op, and Python's part of an op is microseconds against its milliseconds.

ONNX Runtime on CPU gains the same way: its session then has one intra-op thread (`OnnxEncoder`), and two Python
threads run batches through it at once (a session's `run` is thread-safe and releases the GIL). Measured on an AMD
EPYC (2 cores, AVX2 only): over 600 help texts in batches of 32 under load, 1.33-1.37x the two-thread session's
speed; on the quiet machine about even (the encode benchmark's `--backend onnx` at 0.969x the bare two-thread pass,
which includes encode's own work); the same hidden states to the bit (each output element is one thread's sum).

Only the plain fp32 `Encoder` and the `OnnxEncoder` on CPU run so: autocast is a per-thread state (a thread would
drop a reduced precision without a word), and a GPU runs one batch at a time.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

import torch

from embedstore.encoding.encoder import Encoder

Item, Result = TypeVar("Item"), TypeVar("Result")


@contextmanager
def batch_workers(encoder: object) -> Iterator[int]:
    """How many batches may run side by side on `encoder` inside the block: for the PyTorch encoder its intra-op
    threads (set to one meanwhile and restored after), for the ONNX Runtime one the threads its one-thread session
    stands for (`OnnxEncoder.side_by_side`); 1, changing nothing, for any other engine, a GPU, autocast or one
    thread."""
    side_by_side = getattr(encoder, "side_by_side", None)
    if side_by_side is not None:
        yield side_by_side
        return
    threads = torch.get_num_threads()
    if type(encoder) is not Encoder or encoder.device.type != "cpu" or threads < 2 \
            or torch.is_autocast_enabled("cpu"):
        yield 1
        return
    torch.set_num_threads(1)
    try:
        yield threads
    finally:
        torch.set_num_threads(threads)


def in_order(run: Callable[[Item], Result], items: Iterable[Item], workers: int, *,
             first_alone: bool = True) -> Iterator[Result]:
    """`run(item)` of each item, on `workers` threads, yielded in the items' order. The first runs alone unless
    `first_alone` is false (a model's lazy set-up on its first call, such as transformers installing its output
    hooks, never races; a pass timed after a warm-up asks for none, or its first batch would run on one core),
    then at most 2 x `workers` are in flight, so a long stream holds a few batches, not all of them."""
    items = iter(items)
    if workers < 2:
        yield from map(run, items)
        return
    if first_alone:
        first = next(items, _NONE)
        if first is _NONE:
            return
        yield run(first)
    # each thread sets its own team size: an OpenMP setting belongs to the thread that made it
    pool = ThreadPoolExecutor(workers, thread_name_prefix="embedstore-batch", initializer=torch.set_num_threads,
                              initargs=(1,))
    window = deque()
    try:
        for item in items:
            window.append(pool.submit(run, item))
            if len(window) >= 2 * workers:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


_NONE = object()
