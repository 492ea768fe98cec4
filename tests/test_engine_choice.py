"""`--backend auto`: the faster engine by a measured probe, cached per machine, no export a job cannot earn back.

The timer is replaced (`measure_pass`), so these tests decide nothing about real speed: they check the decisions
taken on given measurements, what is cached, and when it is measured again."""
from types import SimpleNamespace

import pytest

from embedstore.encoding import engine_choice
from embedstore.encoding.encode import encode
from embedstore.encoding.models import resolve_model
from embedstore.encoding.options import ComputeOptions, EncodeOptions
from embedstore.encoding.packed_linear import linear_gflop_per_token
from embedstore.store import Store



def fake_model():
    """Two layers of a hidden-32, FFN-64 encoder (q, k, v, o and the FFN's two products each), and a pooler."""
    import torch.nn as nn

    model = nn.Module()
    model.encoder = nn.ModuleList(nn.Linear(i, o) for _ in range(2) for i, o in [(32, 32)] * 4 + [(32, 64), (64, 32)])
    model.pooler = nn.Linear(32, 32)
    return model


class FakeEncoder:
    def __init__(self, name: str) -> None:
        self.name, self.tokenizer, self.model = name, None, fake_model()


@pytest.fixture
def fake_engines(monkeypatch, tmp_path):
    """Engines whose passes take the seconds in `seconds`; counts of loads and timed passes."""
    monkeypatch.setenv("EMBEDSTORE_CACHE", str(tmp_path / "cache"))
    state = SimpleNamespace(seconds={"torch": 2.0, "onnx": 1.0}, loads=[], passes=[])
    monkeypatch.setattr(engine_choice, "measure_pass",
                        lambda encoder, *a: state.passes.append(encoder.name) or state.seconds[encoder.name])
    monkeypatch.setattr(engine_choice, "fp32_peak", lambda shapes, threads: 100.0)

    def choose(spec, job_tokens=10**9, graph_cached=True):
        def loader(name):
            return lambda: state.loads.append(name) or FakeEncoder(name)
        return engine_choice.choose(spec, (2,), "mean", "cpu", 2, job_tokens, loader("torch"), loader("onnx"),
                                    graph_cached, lambda tokenizer: ([{}], 1000))
    state.choose = choose
    return state


def _spec(tiny_model_dir, tmp_path):
    """The tiny model, copied without the measurements other tests recorded beside it, so the record is this
    test's own."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model, ignore=shutil.ignore_patterns(engine_choice.ENGINES_SIDECAR))
    return resolve_model(model)


@pytest.mark.parametrize("faster", ["torch", "onnx"])
def test_auto_picks_the_engine_the_probe_measured_faster(fake_engines, tiny_model_dir, tmp_path, faster):
    fake_engines.seconds = {"torch": 1.0, "onnx": 2.0} if faster == "torch" else {"torch": 2.0, "onnx": 1.0}
    choice, encoder = fake_engines.choose(_spec(tiny_model_dir, tmp_path))
    assert choice.backend == faster and encoder.name == faster
    assert choice.measured["tokens_per_second"][faster] == 2 * choice.measured["tokens_per_second"][
        {"torch": "onnx", "onnx": "torch"}[faster]]
    assert sorted(set(fake_engines.passes)) == ["onnx", "torch"]  # both measured, back to back


def test_the_measurement_is_cached_beside_the_model_and_reused(fake_engines, tiny_model_dir, tmp_path):
    spec = _spec(tiny_model_dir, tmp_path)
    first, _ = fake_engines.choose(spec)
    assert (spec.path / engine_choice.ENGINES_SIDECAR).is_file()
    fake_engines.passes.clear(), fake_engines.loads.clear()
    fake_engines.seconds = {"torch": 1.0, "onnx": 2.0}  # would now pick torch, if it measured again
    again, encoder = fake_engines.choose(spec)
    assert fake_engines.passes == [] and fake_engines.loads == ["onnx"]  # no probe, only the chosen engine loads
    assert again.backend == first.backend == "onnx" and "measured here on" in again.reason


def test_a_changed_machine_measures_again(fake_engines, tiny_model_dir, tmp_path, monkeypatch):
    spec = _spec(tiny_model_dir, tmp_path)
    fake_engines.choose(spec)
    real = engine_choice.machine_fingerprint
    monkeypatch.setattr(engine_choice, "machine_fingerprint", lambda d, t: {**real(d, t), "cpu": "another CPU"})
    fake_engines.passes.clear()
    fake_engines.seconds = {"torch": 1.0, "onnx": 2.0}
    choice, _ = fake_engines.choose(spec)
    assert fake_engines.passes and choice.backend == "torch" and choice.measured["machine"]["cpu"] == "another CPU"


def test_a_small_first_job_does_not_pay_an_export_a_large_one_earns(fake_engines, tiny_model_dir, tmp_path):
    """No graph cached: PyTorch is measured alone; the graph is exported (load_onnx) only when the job's expected
    saving exceeds the export's cost."""
    spec = _spec(tiny_model_dir, tmp_path)
    small, _ = fake_engines.choose(spec, job_tokens=100, graph_cached=False)  # 0.2 s of PyTorch
    assert small.backend == "torch" and fake_engines.loads == ["torch"] and set(fake_engines.passes) == {"torch"}
    assert small.measured["export"]["expected_saving_seconds"] < small.measured["export"]["export_seconds"]
    fake_engines.passes.clear(), fake_engines.loads.clear()
    big, _ = fake_engines.choose(spec, job_tokens=10**9, graph_cached=False)
    assert fake_engines.loads == ["torch", "onnx"] and big.backend == "onnx"
    assert set(fake_engines.passes) == {"torch", "onnx"} and "export_seconds" in big.measured


def test_the_export_decision_takes_a_measured_speedup_over_the_prior(fake_engines, tiny_model_dir, tmp_path,
                                                                     monkeypatch):
    """A job whose PyTorch time is twice the export's cost: the bound (any fp32 engine at the peak) would export,
    the prior speedup (1.25x saves a fifth) does not; once this machine measured ONNX Runtime 3x faster on another
    layer set of the model, the same job exports."""
    monkeypatch.setattr(engine_choice, "_weight_bytes", lambda spec: 10**9)  # export prior: 8.5 + 19 s
    spec = _spec(tiny_model_dir, tmp_path)
    job = 45_000  # 90 s at the fake PyTorch's 500 tokens/s
    first, _ = fake_engines.choose(spec, job_tokens=job, graph_cached=False)
    decision = first.measured["export"]
    assert first.backend == "torch" and decision["onnx_speedup_from"] == "prior"
    assert decision["export_seconds"] > decision["expected_saving_seconds"]
    # the bound alone would have exported; it only caps a saving, so the fp32 peak was not even measured
    bound = engine_choice.most_saved(job, 500.0, linear_gflop_per_token(fake_model()), 100.0)
    assert bound > decision["export_seconds"] and decision["most_saved_seconds"] is None
    assert "peak_gflops" not in first.measured
    records = engine_choice.EngineRecords(spec)
    other_layers = {**first.measured, "layers": [1], "tokens_per_second": {"torch": 500.0, "onnx": 1500.0}}
    records.write("another-layer-set", other_layers)
    fake_engines.loads.clear()
    second, _ = fake_engines.choose(spec, job_tokens=job, graph_cached=False)
    assert fake_engines.loads == ["torch", "onnx"] and second.backend == "onnx"


def test_the_export_prior_counts_the_export_childs_start_up(fake_engines, tiny_model_dir, tmp_path):
    """Issue 27.4: the tiny model's 32 MB of weights alone priced its export at 1.4 s, so a job saving a few seconds
    exported a graph whose child (a python importing torch, transformers and onnxruntime, then tracing and checking)
    costs ~8 s. A job that would save 4 s now stays on PyTorch; one that saves more than the start-up still exports."""
    spec = _spec(tiny_model_dir, tmp_path)
    assert engine_choice.EXPORT_SECONDS_PER_GB * engine_choice._weight_bytes(spec) / 1e9 < 2.0  # the old prior
    assert engine_choice.export_prior(spec) > engine_choice.EXPORT_START_SECONDS
    small, _ = fake_engines.choose(spec, job_tokens=10_000, graph_cached=False)  # 20 s of PyTorch: saves 4 s
    decision = small.measured["export"]
    assert small.backend == "torch" and fake_engines.loads == ["torch"]
    assert decision["export_cost"] == "prior" and decision["export_seconds"] == pytest.approx(
        engine_choice.export_prior(spec), abs=1e-3)
    assert 2.0 < decision["expected_saving_seconds"] < decision["export_seconds"]
    fake_engines.loads.clear()
    big, _ = fake_engines.choose(spec, job_tokens=100_000, graph_cached=False)  # 200 s of PyTorch: saves 40 s
    assert big.backend == "onnx" and fake_engines.loads == ["torch", "onnx"]


def test_expected_saving_follows_the_speedup_within_the_bound():
    # 1,000 s of PyTorch: a 1.25x engine saves 200 s, a 2x one 500 s, a slower one nothing; never past the bound
    assert engine_choice.expected_saving(10**6, 1000.0, 1.25, 10**4) == pytest.approx(200.0)
    assert engine_choice.expected_saving(10**6, 1000.0, 2.0, 300.0) == pytest.approx(300.0)
    assert engine_choice.expected_saving(10**6, 1000.0, 0.9, 10**4) == 0.0


def test_most_saved_is_bounded_by_the_fp32_peak():
    # 1e6 tokens at 1,000 tokens/s = 1,000 s; their weight products at the peak take 1e6 * 0.05 / 100 = 500 s
    assert engine_choice.most_saved(10**6, 1000.0, 0.05, 100.0) == pytest.approx(500.0)
    assert engine_choice.most_saved(10**6, 1000.0, 0.05, 10.0) == 0.0  # a peak below the achieved rate: nothing


def test_auto_on_a_first_small_job_encodes_with_torch_and_records_why(tiny_model_dir, tmp_path, monkeypatch):
    """End to end, real timer: the tiny model's first encode exports no graph (the job cannot earn it back) and
    the store's provenance carries the choice and its measurement."""
    monkeypatch.setenv("EMBEDSTORE_CACHE", str(tmp_path / "cache"))
    spec = _spec(tiny_model_dir, tmp_path)
    options = EncodeOptions(model=str(spec.path))
    report = encode(["a short text", "another one"], store=tmp_path / "s.zarr", options=options,
                    compute=ComputeOptions(backend="auto", device="cpu"))
    engine = Store.open(tmp_path / "s.zarr").attrs(options.keys()[0])["provenance"]["engine"]
    assert report.provenance["backend"] == "torch" and "no graph cached" in engine["reason"]
    assert engine["measured"]["tokens_per_second"]["torch"] > 0
    assert not (tmp_path / "cache" / "onnx").exists()  # no export was paid


def test_cpu_facts_are_read():
    assert engine_choice.cpu_name()
    assert all(engine_choice.VECTOR_FLAGS.match(f) for f in engine_choice.vector_extensions())


def test_job_probe_batches_start_at_the_middle_token_after_a_warm_up():
    # longest first: 10 batches of 400, 300, ... tokens; the middle token (of 2,500) lies in the third batch
    tokens = [400, 300, 300, 300, 300, 300, 200, 200, 100, 100]
    picks = engine_choice.job_probe_batches(tokens, timed_tokens=700)
    assert picks == [3, 4, 5, 6]  # warm-up 3, then 300 + 300 + 200 >= 700
    assert engine_choice.job_probe_batches(tokens, timed_tokens=10**6)[1:] == [4, 5, 6, 7, 8, 9, 2, 1, 0]
    assert engine_choice.job_probe_batches([50]) == [0] and engine_choice.job_probe_batches([]) == []


def test_a_first_auto_encode_times_pytorch_on_its_own_batches_and_keeps_them(tiny_model_dir, tmp_path, monkeypatch):
    """No graph cached: PyTorch is timed on the job's batches, not on the sample apart; every text goes through the
    model once (the timed batches' vectors are stored, not encoded again), and the vectors equal --backend torch's."""
    from embedstore.encoding.encoder import Encoder

    monkeypatch.setenv("EMBEDSTORE_CACHE", str(tmp_path / "cache"))
    spec = _spec(tiny_model_dir, tmp_path)
    options = EncodeOptions(model=str(spec.path))
    texts = [f"text number {i} " + "word " * (i % 40) for i in range(300)]
    rows = []
    real_forward = Encoder.forward
    monkeypatch.setattr(Encoder, "forward", lambda self, batch, *a: rows.append(len(batch["input_ids"])) or
                        real_forward(self, batch, *a))
    report = encode(texts, store=tmp_path / "auto.zarr", options=options,
                    compute=ComputeOptions(backend="auto", device="cpu"))
    engine = Store.open(tmp_path / "auto.zarr").attrs(options.keys()[0])["provenance"]["engine"]
    assert report.provenance["backend"] == "torch" and engine["measured"]["probed_on"].startswith("the job's own")
    assert sum(rows) == len(texts) and engine["measured"]["probe_tokens"] > 0
    encode(texts, store=tmp_path / "torch.zarr", options=options, compute=ComputeOptions(backend="torch", device="cpu"))
    key = options.keys()[0]
    assert (Store.open(tmp_path / "auto.zarr").get(key, texts) == Store.open(tmp_path / "torch.zarr").get(key, texts)).all()


def test_a_tokens_weight_products_are_its_linear_layers_but_not_the_poolers():
    """One home for a token's GFLOP (the choice's bound, the benchmark's share of the peak): every fp32 linear
    layer it passes through, read from the model, and not the pooler, which runs once per text."""
    assert linear_gflop_per_token(fake_model()) == 2 * 2 * (4 * 32 * 32 + 2 * 32 * 64) / 1e9


def test_the_fp32_peak_is_the_fastest_of_every_engines_kernel_each_computing_the_product(monkeypatch):
    """The ceiling counts every kernel an engine here runs (on an AMD EPYC with AVX-512 ONNX Runtime's MatMul ran
    twice torch's mm), and each timed kernel computes x @ w, so no rate is of a different product."""
    import numpy as np
    import torch

    w, x = torch.randn(8, 16), torch.randn(5, 8)
    products = engine_choice._products(w, 1)
    assert {"torch-mm", "numpy", "onnxruntime"} <= set(products)
    assert ("onednn-packed" in products) == torch.backends.mkldnn.is_available()
    for name, product in products.items():
        assert np.allclose(np.asarray(product(x)), (x @ w).numpy(), atol=1e-5), name
    rates = engine_choice.fp32_rates([(8, 8), (8, 16)], 1, rows=16, repeats=1)
    assert set(rates) == set(products) and min(rates.values()) > 0
    monkeypatch.setattr(engine_choice, "fp32_rates", lambda *a, **k: {"slow": 1.0, "fast": 3.0})
    assert engine_choice.fp32_peak([(8, 8)], 1) == 3.0


def test_the_fp32_peak_keeps_numpys_blas_to_the_threads_asked(monkeypatch):
    """numpy's BLAS pool is not torch's: a one-thread peak measured with it unlimited used every core."""
    import torch
    from threadpoolctl import threadpool_info

    seen = []
    from_numpy = torch.from_numpy

    def record(array):
        seen.append({pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"})
        return from_numpy(array)

    monkeypatch.setattr(torch, "from_numpy", record)
    assert engine_choice.fp32_peak([(8, 8), (8, 16), (16, 8)], 1, rows=16, repeats=1) > 0
    assert seen and all(threads == {1} for threads in seen)  # a BLAS pool was there, held to one thread


def _model_of(width: int, layers: int = 3):
    """A stack of `layers` square linear layers: 2 x width^2 x layers FLOP a token (1024 x 3: 6.3 MFLOP, above the
    bar for timing the kernels; the tiny XLM-R's are ~0.03)."""
    from torch import nn

    return nn.Sequential(*(nn.Linear(width, width) for _ in range(layers)))


def test_pytorchs_linear_kernel_is_the_one_measured_faster_and_recorded_beside_the_model(tiny_model_dir, tmp_path,
                                                                                      monkeypatch):
    from embedstore.encoding import packed_linear

    spec = _spec(tiny_model_dir, tmp_path)
    model = _model_of(1024)  # worth timing
    rates = {"mkl": 91.0, "onednn-packed": 78.0}
    timed = []
    monkeypatch.setattr(packed_linear, "kernel_rates", lambda m: timed.append(m) or rates)
    first = engine_choice.linear_kernel(spec, SimpleNamespace(type="cpu"), model)
    assert first["kernel"] == "mkl" and first["gflops"] == rates and "mkl 91 GFLOP/s" in first["reason"]
    rates = {"mkl": 70.0, "onednn-packed": 99.0}  # would now pick oneDNN, if it measured again
    again = engine_choice.linear_kernel(spec, SimpleNamespace(type="cpu"), model)
    assert again["kernel"] == "mkl" and len(timed) == 1  # the record, so a resumed encode runs the same kernel
    real = engine_choice.machine_fingerprint
    monkeypatch.setattr(engine_choice, "machine_fingerprint", lambda d, t: {**real(d, t), "cpu": "another CPU"})
    assert engine_choice.linear_kernel(spec, SimpleNamespace(type="cpu"), model)["kernel"] == "onednn-packed"
    assert len(timed) == 2


def test_a_linear_kernel_not_worth_timing_or_not_to_be_timed_stays_onednns(tiny_model_dir, tmp_path, monkeypatch):
    from embedstore.encoding import packed_linear

    spec = _spec(tiny_model_dir, tmp_path)
    monkeypatch.setattr(packed_linear, "kernel_rates", lambda m: pytest.fail("timed"))
    cpu = SimpleNamespace(type="cpu")
    tiny = engine_choice.linear_kernel(spec, cpu, _model_of(32))
    ranks = engine_choice.linear_kernel(spec, cpu, _model_of(1024), measure=False)
    assert tiny["kernel"] == ranks["kernel"] == "onednn-packed"
    assert "too small" in tiny["reason"] and "not measured" in ranks["reason"]


def test_the_encode_records_pytorchs_linear_kernel(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDSTORE_CACHE", str(tmp_path / "cache"))
    spec = _spec(tiny_model_dir, tmp_path)
    options = EncodeOptions(model=str(spec.path))
    encode(["a short text"], store=tmp_path / "s.zarr", options=options,
           compute=ComputeOptions(backend="torch", device="cpu"))
    linear = Store.open(tmp_path / "s.zarr").attrs(options.keys()[0])["provenance"]["linear_kernel"]
    assert linear == {"kernel": "onednn-packed", "reason": "too small a model to time its products (not measured)"}
