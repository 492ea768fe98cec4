"""`--backend auto`: the faster lossless engine for this model, layer set, device and thread count, measured here.

Why measured, not a rule: the same two engines run e5-small's pass in the opposite order on two machines (AMD EPYC,
AVX2 kernels: ONNX Runtime 1.2x PyTorch; Intel Xeon, AVX-512: PyTorch 1.1x ONNX Runtime; issue 27), so "ONNX on CPU"
picks the slower engine on one of them. The probe runs both engines over the same real sentences (the bundled
sample, tokenized, sorted and cut by the token budget exactly as encode does), alternating them twice and keeping
each engine's best pass, so a drift of a shared machine touches both alike; it takes a few seconds, once.

Why cached beside the model and keyed by the machine: the answer depends on the CPU (its name and instruction
flags), the thread count and the library versions, and on nothing about the job; the record (`ENGINES_SIDECAR`,
beside the model, or in the cache when the model dir is read-only) holds one entry per model, layer set, device,
threads and machine fingerprint, so a changed machine or library measures again while an unchanged one reuses it.

Why PyTorch is timed on the job's own batches when it is the only engine to measure (no graph cached): those
batches are work the encode needs anyway, so their vectors are kept instead of thrown away with the sample's
(`job_probe_batches` says which batches; the fp32 peak is measured only when it can change the decision).

Why the first encode may not export: the ONNX engine needs a graph exported and checked first (~20 s for e5-small
on 2 cores), which a job of a few thousand texts would never earn back. No graph cached: PyTorch is measured first
(its model is loaded anyway), and the graph is exported only when the job's expected saving exceeds the export's
cost. The expected saving is the job's PyTorch time times (1 - 1/s), s being ONNX Runtime's speed over PyTorch's as
measured on this machine for this model (another layer set's probe), else `ONNX_SPEEDUP_PRIOR`; it is capped by the
most any fp32 engine could save (`most_saved`: the job's PyTorch time minus its weight products' time at this
machine's measured fp32 matrix-product peak). Why not that bound alone: it assumes everything but the weight products
takes no time, and it promised the demo's first encode (~150k tokens of e5-small) a 35 s saving where ONNX Runtime
then saved ~6 s, so the demo paid a ~30 s export and probe for it. The export's cost is the one last measured on
this machine for this model, else a prior (`export_prior`: the export child's start-up, then the model's size). A job that does not
earn the export runs on PyTorch, and the record keeps PyTorch's rate for the next job's decision; once a graph
exists (exported by a bigger job or by `--backend onnx`), both engines are probed and the faster kept.
"""
from __future__ import annotations

import functools
import hashlib
import os
import platform
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from embedstore.base.atomic import write_json
from embedstore.base.errors import EmbedstoreError
from embedstore.base.progress import note_step
from embedstore.base.provenance import utc_now
from embedstore.encoding.models import ModelSpec, sidecar_paths

ENGINES_SIDECAR = ".embedstore-engines.json"
PROBE_VERSION = 5
"""Bump when the probe or an engine's pass changes, so cached measurements are taken again. 2: the ONNX engine pools
in numpy (its rate measured with torch's pooling, ~20 ms a batch of contention on 2 cores, was too low). 3: the
PyTorch engine runs its linear layers on weights packed for oneDNN (`packed_linear`), faster than the rate cached.
4: both engines run batches side by side on the CPU (`batch_threads`), and the probe times them so. 5: PyTorch's
linear kernel is measured too (`linear_kernel`), so its rate cached with the packed kernel may not be its rate now."""
LINEAR_PROBE_GFLOP_PER_TOKEN = 0.005
"""Below this many GFLOP of weight products a token (e5-small: 0.042; the tests' tiny XLM-R: ~0.00003) the linear
kernel is not measured and stays oneDNN's: a 2,048-row product of such weights takes well under a millisecond,
where timer noise outweighs any kernel's difference and the rest of the pass dominates, so a measurement would
pick at random, and two processes of one job (a run and its resume) could pick differently and disagree in the
last bits."""
PROBE_TEXTS = 128
"""Per language: 256 real sentences, ~6,400 tokens of e5-small, a few batches of the default token budget (with
one batch, the probe would time neither engine side by side as the encode runs them); ~2 s a pass on 2 cores."""
PROBE_ROUNDS = 2  # each engine runs once per round after one untimed warm-up pass
EXPORT_START_SECONDS = 8.5
"""Prior of what the export costs before the model's size counts: the child is a fresh python that imports torch,
transformers and onnxruntime (3.4 CPU-s of imports alone), loads the tokenizer, traces, opens a session and checks.
The export child of a 32-d XLM-R, whose 32 MB of weights are nearly all its embedding table, took 8.1-8.8 CPU-s
(2 and 12 layers; docs/performance.md). Without it a tiny model's prior was its 32 MB at 45 s/GB, 1.4 s, and the
README tour's tiny models exported graphs for jobs that saved a second or two."""
EXPORT_SECONDS_PER_GB = 19.0
"""Prior of the export's cost per GB of weights beyond `EXPORT_START_SECONDS`: e5-small's export child (471 MB) took
16.7 CPU-s where the 32 MB model's took 8.1-8.8, measured side by side (docs/performance.md)."""
ONNX_SPEEDUP_PRIOR = 1.25
"""ONNX Runtime's fp32 speed over PyTorch's assumed for the export decision before a probe of both on this machine:
above the largest ratio measured on our machines for e5-small (AMD EPYC 1.14-1.2x, Intel Xeon 0.97x; issue 27), so
that the estimate errs towards exporting; a measured ratio replaces it as soon as there is one. Those ratios were
measured against PyTorch's plain MKL pass; the PyTorch engine's packed linear layers (`packed_linear`) narrow them,
so the prior now errs further that way."""
VECTOR_FLAGS = re.compile(r"^(sse4_2|avx|avx2|fma|f16c|avx512\w*|amx\w*|asimd\w*|sve\w*|neon)$")


@dataclass
class EngineChoice:
    """Which engine runs and why; `measured` holds the probe's figures when there was one (tokens/s per engine)."""

    backend: str
    reason: str
    measured: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cpu_name() -> str:
    for line in _cpuinfo().splitlines():
        if line.startswith(("model name", "Model", "Hardware")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    for line in _cpuinfo().splitlines():
        if line.startswith(("flags", "Features")):
            return sorted(set(line.split(":", 1)[1].split()))
    return []


def vector_extensions() -> list[str]:
    """The CPU's SIMD extensions that matrix kernels dispatch on (AVX2, AVX-512 and its VNNI/BF16, AMX, NEON...)."""
    return [f for f in cpu_flags() if VECTOR_FLAGS.match(f)]


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def machine_fingerprint(device: Any, threads: int) -> dict[str, Any]:
    """What the engines' speeds depend on besides the model: CPU (name and flags), threads, device and versions."""
    import torch

    fingerprint = {**_process_facts(), "threads": threads, "device": str(device)}
    if getattr(device, "type", "cpu") == "cuda":
        fingerprint["gpu"] = torch.cuda.get_device_name(device)
    return fingerprint


@functools.cache
def _process_facts() -> dict[str, Any]:
    """The fingerprint's parts that cannot change while a process runs (the CPU, the libraries it imported), read
    once per process: a library caller encodes many small sets, and each `--backend auto` encode looks its engine
    up by the fingerprint."""
    import onnxruntime
    import torch
    import transformers

    return {"cpu": cpu_name(), "cpu_flags": hashlib.sha256(" ".join(cpu_flags()).encode()).hexdigest()[:16],
            "cpus": os.cpu_count(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "transformers": transformers.__version__}


def fp32_peak(shapes: Iterable[tuple[int, int]], threads: int, rows: int = 1024, repeats: int = 3) -> float:
    """The best fp32 GFLOP/s of any matrix-product kernel an engine here can run (`fp32_rates`) on the model's own
    weight `shapes`, here and now: the rate no fp32 engine's weight products can beat on this machine (the
    benchmark's ceiling uses it too)."""
    return max(fp32_rates(shapes, threads, rows, repeats).values())


def fp32_rates(shapes: Iterable[tuple[int, int]], threads: int, rows: int = 1024, repeats: int = 3) -> \
        dict[str, float]:
    """GFLOP/s of each fp32 matrix-product kernel the engines can run, on `threads` threads and the weight
    `shapes` (in, out: `packed_linear.linear_shapes`), each kernel's best shape: torch's `mm` (MKL), numpy's BLAS,
    oneDNN on packed weights (PyTorch's linear layers, `packed_linear`) and ONNX Runtime's MatMul (MLAS). Why all
    four: which one is fastest depends on the CPU. With torch and numpy alone, on an AMD EPYC with AVX-512 (where
    torch's MKL ran at 104 GFLOP/s on one thread, oneDNN at 250) the "peak" read 208-241 GFLOP/s while the bare
    ONNX Runtime pass ran its weight products at 312-350 (benchmarks/encode.py, 2026-12-07): a ceiling below what
    an engine achieved."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    best: dict[str, float] = {}
    # numpy's BLAS keeps its own thread pool, which torch.set_num_threads does not reach: unlimited, a one-thread
    # peak was measured on every core (the sweep benchmark's per-worker floor came out at half its true value)
    with threadpool_limits(limits=threads, user_api="blas"), torch.inference_mode():
        for k, n in sorted(set(shapes)):
            a, b = torch.randn(rows, k), torch.randn(k, n)
            for name, mul in _products(b, threads).items():
                mul(a)
                t0 = time.perf_counter()
                for _ in range(repeats):
                    mul(a)
                rate = repeats * 2 * rows * k * n / (time.perf_counter() - t0) / 1e9
                best[name] = max(best.get(name, 0.0), rate)
    return best


def _products(b: Any, threads: int) -> dict[str, Callable[[Any], Any]]:
    """`x -> x @ b` under each kernel available here (see `fp32_rates`)."""
    import torch

    b_numpy = b.numpy()
    products: dict[str, Callable[[Any], Any]] = {"torch-mm": lambda x: torch.mm(x, b),
                                                 "numpy": lambda x: torch.from_numpy(x.numpy() @ b_numpy)}
    if torch.backends.mkldnn.is_available():
        packed = torch.ops.mkldnn._reorder_linear_weight(b.t().contiguous(), None)
        products["onednn-packed"] = lambda x: torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from embedstore.encoding.onnx_runtime import open_session

    k, n = b.shape
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "matmul",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, n])],
                              [numpy_helper.from_array(b_numpy, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    session = open_session(model.SerializeToString(), threads=threads)
    products["onnxruntime"] = lambda x: session.run(None, {"x": x.numpy()})
    return products


def probe_batches(tokenizer, prefix: str, max_length: int, batch_tokens: int, batch_size: int, device) -> \
        tuple[list[dict], int]:
    """The probe's batches, made as encode makes them (`encoder.tokenize`, token budget, `collate`), and their
    token count."""
    from embedstore.data.hashing import text_ids
    from embedstore.encoding.batching import length_sorted_batches, tokenize
    from embedstore.encoding.encoder import collate
    from embedstore.encoding.onnx_backend import CALIBRATION_TEXTS
    from embedstore.encoding.onnx_backend import PROBE_TEXTS as CHECK_TEXTS
    from embedstore.encoding.onnx_backend import sample_texts

    texts = sample_texts((CHECK_TEXTS + CALIBRATION_TEXTS) // 2, PROBE_TEXTS)  # none of the check's texts
    tok = tokenize(tokenizer, texts, prefix, max_length)
    lengths = tok.lengths
    rows = length_sorted_batches(lengths, text_ids(texts), batch_tokens, batch_size)
    return [collate(tok, r, tokenizer.pad_token_id, device) for r in rows], int(lengths.sum())


JOB_PROBE_TOKENS = 8192
"""Tokens of the job's own batches PyTorch is timed on when it is the only engine to measure (`job_probe_batches`),
after one warm-up batch: four of the default 2,048-token batches, two for each of two threads side by side, as
the encode runs them. With 2,048 (one or two batches, and the first of a pass run alone) the rate was one core's:
the demo's first encode measured PyTorch at about half its speed, and exported a graph it never earned back (a
30.8 s export in a 143.9 s demo, AMD EPYC AVX2, 2026-12-07)."""


def job_probe_batches(batch_tokens: Sequence[int], timed_tokens: int = JOB_PROBE_TOKENS) -> list[int]:
    """Which of a job's length-sorted batches (longest first; `batch_tokens` their real tokens) to time PyTorch on:
    a warm-up batch and then consecutive batches from the one holding the job's middle token, until `timed_tokens`
    (earlier batches added when the later ones run out). Why the middle: the longest texts run at fewer tokens/s
    (attention grows with length), so the first batches would understate the job's rate and overstate what an
    export could save. The first index is the warm-up, its time not counted (unless it is the only batch)."""
    if not batch_tokens:
        return []
    cumulative = np.cumsum(batch_tokens)
    start = int(np.searchsorted(cumulative, cumulative[-1] / 2))
    picks = [start]  # the warm-up
    timed, after, before = 0, start + 1, start - 1
    while timed < timed_tokens and (after < len(batch_tokens) or before >= 0):
        if after < len(batch_tokens):
            picks.append(after)
            after += 1
        else:
            picks.append(before)
            before -= 1
        timed += batch_tokens[picks[-1]]
    return picks


def measure_pass(encoder: Any, batches: list[dict], layers: Sequence[int], pooling: str) -> float:
    """Seconds of one pass of `encoder` over `batches` as encode runs them (side by side where it does:
    `batch_threads`), without the store."""
    from embedstore.encoding.batch_threads import batch_workers, in_order

    t0 = time.perf_counter()
    with batch_workers(encoder) as workers:  # after `probe`'s warm-up: every batch side by side
        for _ in in_order(lambda batch: encoder.forward(batch, layers, pooling), batches, workers, first_alone=False):
            pass
    return time.perf_counter() - t0


def probe(encoders: dict[str, Any], batches: list[dict], tokens: int, layers: Sequence[int],
          pooling: str) -> dict[str, float]:
    """Tokens per second of each engine: one warm-up pass each, then `PROBE_ROUNDS` rounds alternating the engines,
    each engine's best pass kept (the least disturbed by whatever else the machine ran)."""
    best = {}
    for name, encoder in encoders.items():
        measure_pass(encoder, batches[-1:], layers, pooling)
    for _ in range(PROBE_ROUNDS):
        for name, encoder in encoders.items():
            seconds = measure_pass(encoder, batches, layers, pooling)
            best[name] = min(best.get(name, float("inf")), seconds)
    return {name: tokens / max(seconds, 1e-9) for name, seconds in best.items()}


def expected_saving(job_tokens: int, torch_rate: float, speedup: float, bound: float) -> float:
    """Seconds the job would save on an engine `speedup` times PyTorch's speed, never more than `bound`."""
    return min(bound, max(0.0, job_tokens / torch_rate * (1.0 - 1.0 / speedup)))


def most_saved(job_tokens: int, torch_rate: float, gflop_per_token: float, peak: float) -> float:
    """Seconds any fp32 engine could save over PyTorch on `job_tokens`: PyTorch's time minus the time of the
    weight products alone at the fp32 peak (never negative)."""
    return max(0.0, job_tokens / torch_rate - job_tokens * gflop_per_token / peak)


class EngineRecords:
    """The measurements beside a model: one entry per (model, layers, device, threads, machine)."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.paths = sidecar_paths(spec.path, ENGINES_SIDECAR)

    def read(self) -> dict[str, Any]:
        import json

        for path in self.paths:
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and data.get("version") == PROBE_VERSION \
                    and isinstance(data.get("entries"), dict):
                return data["entries"]
        return {}

    def write(self, key: str, entry: dict[str, Any]) -> None:
        """Merge `entry` in (a concurrent writer's other entries may be lost: they are measured again)."""
        entries = {**self.read(), key: entry}
        for path in self.paths:
            try:
                write_json(path, {"version": PROBE_VERSION, "entries": entries})
                return
            except OSError:
                continue

    def onnx_speedup(self, machine: dict[str, Any]) -> float | None:
        """ONNX Runtime's speed over PyTorch's last probed for this model on this machine (any layer set)."""
        for entry in self.read().values():
            rates = entry.get("tokens_per_second") or {}
            if entry.get("machine") == machine and {"torch", "onnx"} <= set(rates) and rates["torch"] > 0:
                return float(rates["onnx"]) / float(rates["torch"])
        return None

    def export_seconds(self, machine: dict[str, Any]) -> float | None:
        """The export's cost last measured for this model on this machine (any layer set)."""
        for entry in self.read().values():
            if entry.get("machine") == machine and isinstance(entry.get("export_seconds"), (int, float)):
                return float(entry["export_seconds"])
        return None


def entry_key(spec: ModelSpec, machine: dict[str, Any], **measured: Any) -> str:
    """The sidecar's key for one measurement of `spec` on `machine`; `measured` names what was measured (the
    engines' probe: `layers`; the linear kernels: `linear_kernel=True`)."""
    import json

    what = {"fingerprint": spec.fingerprint, "machine": machine, **measured}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def export_prior(spec: ModelSpec) -> float:
    """Seconds an export of `spec` is expected to take before one was measured on this machine: the child's start-up
    and check (`EXPORT_START_SECONDS`) plus its weights at `EXPORT_SECONDS_PER_GB`."""
    return EXPORT_START_SECONDS + EXPORT_SECONDS_PER_GB * _weight_bytes(spec) / 1e9


def _weight_bytes(spec: ModelSpec) -> int:
    return sum(p.stat().st_size for p in spec.path.iterdir() if p.suffix in (".safetensors", ".bin") and p.is_file())


def _recorded(spec: ModelSpec, layers: Sequence[int], device: Any, threads: int) -> \
        tuple[EngineRecords, dict[str, Any], str, dict[str, Any]]:
    records = EngineRecords(spec)
    machine = machine_fingerprint(device, threads)
    key = entry_key(spec, machine, layers=sorted(set(layers)))
    return records, machine, key, records.read().get(key) or {}


def linear_kernel(spec: ModelSpec, device: Any, model: Any, measure: bool = True) -> dict[str, Any]:
    """Which kernel runs PyTorch's fp32 linear layers for `spec` on this machine (`packed_linear.KERNELS`), and why:
    the record beside the model when this machine has one, else measured now (`packed_linear.kernel_rates`, about
    a second, once) and recorded. Why measured: oneDNN on packed weights ran 20-35 % faster than MKL on one VM of
    an AMD EPYC and ~10 % slower on another VM of the same CPU model (`packed_linear`). Why recorded: every later
    process of the machine (a resumed encode above all) then runs the same kernel, and so writes the same bits.
    Without `measure` (a distributed job's ranks, which would time each other) or for a model too small to time
    (`LINEAR_PROBE_GFLOP_PER_TOKEN`), an unrecorded machine keeps oneDNN's packed kernel."""
    from embedstore.encoding.packed_linear import DEFAULT_KERNEL, KERNELS, kernel_rates, linear_gflop_per_token

    if getattr(device, "type", str(device)) != "cpu":
        return {"kernel": DEFAULT_KERNEL, "reason": "not on CPU: the packing does not apply"}
    records = EngineRecords(spec)
    machine = machine_fingerprint(device, 1)
    key = entry_key(spec, machine, linear_kernel=True)
    entry = records.read().get(key) or {}
    if entry.get("kernel") in KERNELS:
        return entry
    if linear_gflop_per_token(model) < LINEAR_PROBE_GFLOP_PER_TOKEN:
        return {"kernel": DEFAULT_KERNEL, "reason": "too small a model to time its products (not measured)"}
    if not measure:
        return {"kernel": DEFAULT_KERNEL, "reason": "not measured on this machine, and not measured now"}
    note_step(f"measuring PyTorch's linear kernels on {spec.name} (once per model and machine)")
    rates = kernel_rates(model)
    kernel = max(rates, key=rates.get)
    entry = {"kernel": kernel, "reason": "measured here: " + ", ".join(
        f"{name} {rate:.0f} GFLOP/s" for name, rate in sorted(rates.items(), key=lambda x: -x[1])) + " (one thread)",
             "gflops": {name: round(rate, 1) for name, rate in rates.items()}, "machine": machine,
             "measured_at": utc_now()}
    records.write(key, entry)
    return entry


def planned(spec: ModelSpec, layers: Sequence[int], device: Any, threads: int) -> EngineChoice:
    """The choice without measuring: this machine's recorded probe of both engines, else PyTorch (which needs no
    graph export). Ranks of a distributed job take it: probing side by side, they would time each other."""
    return _planned(_recorded(spec, layers, device, threads)[3])


def _planned(entry: dict[str, Any]) -> EngineChoice:
    """`planned` from the record's entry already read (`choose` reads it once per encode)."""
    rates = entry.get("tokens_per_second", {})
    if entry.get("onnx_refused"):
        return EngineChoice("torch", f"ONNX Runtime cannot run this model (found on {entry.get('measured_at')}): "
                                     f"{entry['onnx_refused']}", entry)
    if {"torch", "onnx"} <= set(rates):
        return EngineChoice(max(rates, key=rates.get),
                            f"measured here on {entry.get('measured_at')}: " + _rates_text(rates), entry)
    return EngineChoice("torch", "not measured on this machine, and not measured now (a distributed job's ranks "
                                 "would time each other): PyTorch, which needs no graph export", entry)


def choose(spec: ModelSpec, layers: Sequence[int], pooling: str, device: Any, threads: int, job_tokens: int | None,
           load_torch: Callable[[], Any], load_onnx: Callable[[], Any], graph_cached: bool, probe_texts: Callable,
           measure: bool = True, job_rate: Callable[[Any], tuple[float, int]] | None = None) -> \
        tuple[EngineChoice, Any]:
    """(the choice, the chosen engine's encoder). `load_torch`/`load_onnx` load an engine (the latter exports the
    graph when `graph_cached` is false); `probe_texts(tokenizer)` gives the probe's batches and tokens. Without
    `measure`, `planned` decides. `job_rate(torch_encoder)`, when given, measures PyTorch on the job's own batches
    and keeps their vectors, returning (tokens/s, tokens timed): with no graph cached PyTorch is the only engine
    to measure, and timing it on sample sentences apart threw that work away (~3 s of the demo's first encode)."""
    from embedstore.encoding.packed_linear import linear_gflop_per_token, linear_shapes

    records, machine, key, entry = _recorded(spec, layers, device, threads)
    rates = entry.get("tokens_per_second", {})
    if not measure or {"torch", "onnx"} <= set(rates) or entry.get("onnx_refused"):
        plan = _planned(entry)
        return plan, load_onnx() if plan.backend == "onnx" else load_torch()
    note_step(f"measuring the engines for --backend auto on {spec.name} (once per model and machine)")
    torch_encoder = load_torch()
    layers = list(layers)
    entry = {"machine": machine, "layers": sorted(set(layers)), **{
        k: entry[k] for k in ("peak_gflops", "export_seconds") if k in entry}}
    if not graph_cached:
        if rates.get("torch"):
            rates = {"torch": rates["torch"]}
        elif job_rate is not None:
            rate, tokens = job_rate(torch_encoder)
            rates = {"torch": rate}
            entry.update(probe_tokens=tokens, probed_on="the job's own batches (their vectors kept)")
        else:
            batches, tokens = probe_texts(torch_encoder.tokenizer)
            rates = {"torch": probe({"torch": torch_encoder}, batches, tokens, layers, pooling)["torch"]}
            entry.update(probe_tokens=tokens, probed_on="the bundled sample")
        model = torch_encoder.model
        export = records.export_seconds(machine)
        export_cost = export if export is not None else export_prior(spec)
        measured_speedup = records.onnx_speedup(machine)
        speedup = measured_speedup if measured_speedup is not None else ONNX_SPEEDUP_PRIOR
        unbounded = expected_saving(job_tokens or 0, rates["torch"], speedup, float("inf"))
        # the fp32 peak only caps the saving: measured only when the saving without the cap would pay the export
        peak = entry.get("peak_gflops") or (fp32_peak(linear_shapes(model), threads) if unbounded > export_cost
                                           else None)
        bound = None if peak is None else most_saved(job_tokens or 0, rates["torch"],
                                                     linear_gflop_per_token(model), peak)
        saving = unbounded if bound is None else min(unbounded, bound)
        entry.update(tokens_per_second=rates, measured_at=utc_now(), **({"peak_gflops": peak} if peak else {}))
        decision = {"job_tokens": job_tokens, "expected_saving_seconds": round(saving, 3),
                    "most_saved_seconds": None if bound is None else round(bound, 3),
                    "onnx_speedup": round(speedup, 3),
                    "onnx_speedup_from": "measured" if measured_speedup is not None else "prior",
                    "export_seconds": round(export_cost, 3), "export_cost": "measured" if export else "prior"}
        if not saving > export_cost:
            records.write(key, entry)
            return EngineChoice("torch", f"PyTorch {rates['torch']:,.0f} tokens/s; no graph cached and this job "
                                         f"would save ~{saving:.1f} s on ONNX Runtime (at {speedup:.2f}x, "
                                         f"{decision['onnx_speedup_from']}) against ~{export_cost:.0f} s to "
                                         "export its graph",
                                {**entry, "export": decision}), torch_encoder
    t0 = time.perf_counter()
    try:
        onnx_encoder = load_onnx()
    except EmbedstoreError as e:  # a model the exporter cannot trace (the check refused its graph)
        entry.update(onnx_refused=str(e), measured_at=utc_now())
        records.write(key, entry)
        return EngineChoice("torch", f"ONNX Runtime cannot run this model: {e}", entry), torch_encoder
    if not graph_cached:
        entry["export_seconds"] = time.perf_counter() - t0
    batches, tokens = probe_texts(torch_encoder.tokenizer)
    rates = probe({"torch": torch_encoder, "onnx": onnx_encoder}, batches, tokens, layers, pooling)
    entry.update(tokens_per_second=rates, measured_at=utc_now(), probe_tokens=tokens, probed_on="the bundled sample")
    records.write(key, entry)
    backend = max(rates, key=rates.get)
    return (EngineChoice(backend, "measured now: " + _rates_text(rates), entry),
            onnx_encoder if backend == "onnx" else torch_encoder)


def _rates_text(rates: dict[str, float]) -> str:
    return ", ".join(f"{name} {rate:,.0f} tokens/s" for name, rate in sorted(rates.items(), key=lambda x: -x[1]))

