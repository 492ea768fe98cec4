"""Batches side by side (`encoding.batch_threads`): the same vectors in the same order, a bounded window, and only
where it is safe (the plain fp32 encoder on CPU)."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from embedstore.encoding.batch_threads import batch_workers, in_order
from embedstore.encoding.models import resolve_model


def test_in_order_keeps_the_items_order_with_uneven_durations():
    def run(i: int) -> int:
        time.sleep(0.002 * ((7 * i) % 5))  # later items often finish first
        return i * i

    assert list(in_order(run, range(40), 2)) == [i * i for i in range(40)]
    assert list(in_order(run, range(5), 1)) == [0, 1, 4, 9, 16]
    assert list(in_order(run, [], 2)) == []


def test_in_order_holds_at_most_twice_its_workers_in_flight():
    started, lock, peak, running = [], threading.Lock(), [0], [0]

    def run(i: int) -> int:
        with lock:
            started.append(i)
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.001)
        with lock:
            running[0] -= 1
        return i

    results = in_order(run, range(100), 2)
    next(results), next(results)  # the first (alone) and the second
    assert len(started) <= 2 + 2 * 2  # nothing runs far ahead of what was taken
    assert list(results) == list(range(2, 100)) and peak[0] <= 2


def test_a_timed_pass_runs_its_first_batches_side_by_side():
    """A pass timed after a warm-up (the engine probe, `--backend auto`'s job rate) must not run its first batch
    alone: the job's rate was measured on one core, half PyTorch's speed, and the demo exported a graph for it."""
    barrier = threading.Barrier(2, timeout=2)

    def run(i: int) -> int:
        barrier.wait()  # passes only when two items run at once
        return i

    assert list(in_order(run, range(4), 2, first_alone=False)) == [0, 1, 2, 3]
    barrier.reset()
    with pytest.raises(threading.BrokenBarrierError):  # the default runs the first alone: it waits for a partner
        list(in_order(run, range(4), 2))


def test_in_order_raises_the_items_error_and_stops():
    def run(i: int) -> int:
        if i == 3:
            raise ValueError("item 3")
        return i

    with pytest.raises(ValueError, match="item 3"):
        list(in_order(run, range(10), 2))


def test_batch_workers_only_for_the_plain_cpu_encoder(tiny_model_dir):
    from embedstore.encoding.encoder import Encoder
    from embedstore.encoding.models import load_once, resolve_model

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model, tokenizer = load_once(resolve_model(str(tiny_model_dir)), torch.device("cpu"))
        encoder = Encoder(model, tokenizer, torch.device("cpu"))
        with batch_workers(encoder) as n:
            assert n == 2 and torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with batch_workers(object()) as n:
            assert n == 1 and torch.get_num_threads() == 2
        with torch.autocast("cpu", dtype=torch.bfloat16), batch_workers(encoder) as n:
            assert n == 1  # autocast is per thread: a worker thread would run fp32 without a word
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_encode_gives_the_same_vectors_side_by_side(tiny_model_dir, tmp_path, backend):
    """Two intra-op threads on each batch, or batches side by side on one thread each: the same store contents
    (ONNX Runtime's to the bit: each output element is one thread's sum either way)."""
    from embedstore.encoding.encode import encode
    from embedstore.encoding.options import ComputeOptions, EncodeOptions
    from embedstore.store import Store

    texts = [f"text number {i} " + "word " * (i % 37) for i in range(300)]
    options = EncodeOptions(model=str(tiny_model_dir))
    threads = torch.get_num_threads()
    vectors = {}
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            report = encode(texts, store=tmp_path / f"s{n}.zarr", options=options,
                            compute=ComputeOptions(backend=backend, batch_tokens=256))
            assert report.encoded == 300
            st = Store.open(tmp_path / f"s{n}.zarr")
            vectors[n] = st.get(report.keys[0], texts)
    finally:
        torch.set_num_threads(threads)
    if backend == "onnx":
        np.testing.assert_array_equal(vectors[1], vectors[2])
    else:
        np.testing.assert_allclose(vectors[1], vectors[2], rtol=0, atol=1e-5)


def test_the_onnx_encoder_runs_batches_side_by_side_on_a_one_thread_session(tiny_model_dir):
    from embedstore.encoding.backend import _load_onnx
    from embedstore.encoding.options import EncodeOptions

    spec = resolve_model(str(tiny_model_dir))
    threads = torch.get_num_threads()
    try:
        for n, workers in ((1, 1), (2, 2)):
            torch.set_num_threads(n)
            encoder = _load_onnx(spec, EncodeOptions(model=str(tiny_model_dir)), [spec.num_layers],
                                 torch.device("cpu"))
            assert encoder.session.get_session_options().intra_op_num_threads == 1
            with batch_workers(encoder) as side_by_side:
                assert side_by_side == workers and torch.get_num_threads() == n  # ONNX Runtime's, not torch's
    finally:
        torch.set_num_threads(threads)
