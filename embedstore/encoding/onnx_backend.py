"""The ONNX Runtime backend: the project's own export of the model, checked against PyTorch, cached, and run.

Why ONNX Runtime: on CPU its kernels run e5-small's forward pass faster than PyTorch's over the same batches
(1.2-1.3x on 2 cores of an AMD EPYC, against an fp32 ceiling of 1.7x there; docs/performance.md; not on every
machine, hence `engine_choice`), with vectors equal to fp32 noise; `optimum`, the usual exporter, pins transformers
below 5, so the project exports with torch's own exporter (`onnx_export`, the one call of it).

Why the export runs in a child process: in one measured process the PyTorch model ran 1.5x slower and gave
different vectors after torch's ONNX exporter had traced it (see ../shared/research/pitfalls.md). A fresh spawned
process loads the model (once, by the project's one loader, `models.load_once`), computes the PyTorch reference on
real, padded batches *before* exporting, exports, runs the graph under ONNX Runtime on the same batches and
compares; the parent never traces anything.

Why every export is checked: a graph that silently computes something else would put wrong vectors under a key
the store trusts. The largest absolute difference of the hidden states over real (unpadded) tokens is recorded
beside the graph; beyond `FP32_TOLERANCE` the graph is refused and nothing is cached. The int8 graph
(`onnxruntime.quantization.quantize_dynamic`, MatMul weights to int8 per output channel, after the activation
smoothing of `smoothing.py`, its few most sensitive products kept fp32) is lossy by design: it
is checked by the cosine of its pooled vectors to PyTorch's (recorded; refused below `INT8_MIN_COSINE`, which
only catches a broken graph) and its vectors live under their own store key (see `options.EncodeOptions.keys`).
The fp16 graph (`--precision onnx-fp16`: onnxruntime's own `convert_float_to_float16` of the fp32 graph, fp32 inputs
and outputs kept) is checked the same way here, and as a precision on the device it runs on at first use
(`precision.checked`); its vectors have a key of their own too.

Graphs are cached under cache_dir()/onnx/, one directory per (model fingerprint, output layers, quantization,
export recipe), published whole (base.atomic.atomic_dir), so a killed export leaves nothing that looks finished.

Why a cached graph is not simply trusted: the check above vouches for the bytes it ran, under the runtime it ran
on. `check.json` therefore records the graph's sha256 and the onnxruntime version; `load_graph` hashes the bytes
it hands to the session (`onnx_runtime.verified_bytes`) and a graph whose bytes differ is rebuilt (once; still
different, it is refused). A new onnxruntime runs the same bytes with other kernels, so it triggers the fidelity
check again (in a child, against PyTorch, as at export), not a new export. A digest mismatch is not answered with
a re-check alone: the 48 probe texts touch a few hundred of the 250,002 rows of the embedding table, so damage
elsewhere would pass it.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from embedstore.base.atomic import atomic_dir, write_json
from embedstore.base.errors import ConfigError, EmbedstoreError
from embedstore.base.progress import note_step
from embedstore.encoding.models import ModelSpec, cache_dir, load_once, resolve_device, resolve_model
from embedstore.encoding.onnx_export import OPSET, HiddenStates, drop_nan_guards, export_graph, \
    largest_difference
from embedstore.encoding.onnx_runtime import GraphDamaged, open_session, runtime_version, sha256_bytes, \
    verified_bytes
from embedstore.encoding.options import HALF_GRAPH_RECIPE, QUANTIZATION_RECIPES

EXPORT_RECIPE = 3  # bump when the export or its check changes, so cached graphs are rebuilt; 3: no NaN guards
FP32_TOLERANCE = 1e-5
"""Largest accepted absolute difference of a hidden state between the graph and PyTorch. fp32 reordering noise
of e5-small's 12 layers measures ~1.3e-6 on its hidden states; a wrong graph (a dropped mask,
a mistraced branch) differs by 0.1 or more."""
REDUCED_MIN_COSINE = 0.9
"""An int8 or fp16 graph whose pooled vectors fall below this cosine to PyTorch's is broken, not merely reduced
(the int8 recipe measures 0.998 at worst on e5-small's probe texts). The fp16 graph's bound as a precision (0.99
cosine and P@1, on the device it runs on) is `precision.checked`'s, on first use."""
REDUCED_RECIPES = {**QUANTIZATION_RECIPES, "fp16": HALF_GRAPH_RECIPE}
"""The graphs made from the fp32 one: int8 weights (`--quantize int8`) and fp16 throughout (`--precision
onnx-fp16`)."""
GRAPH_FILE = "model.onnx"
CHECK_FILE = "check.json"
PROBE_TEXTS = 48  # real sentences (English and Korean) of the bundled sample, in padded batches
PROBE_BATCH = 8
PROBE_MAX_LENGTH = 128
CALIBRATION_TEXTS = 256
"""Real sentences (half English, half Korean, none of them a probe text) whose activations set the int8 graph's
smoothing factors (`smoothing.smooth_graph`)."""


@dataclass(frozen=True)
class Graph:
    """A checked graph on disk and what its check found."""

    path: Path
    layers: tuple[int, ...]
    inputs: tuple[str, ...]
    check: dict[str, Any]


def _recipe_digest(spec: ModelSpec, layers: tuple[int, ...], quantize: str | None) -> str:
    """What makes the graph's bytes: the fp32 graph is torch's export, whatever runtime runs it (a new onnxruntime
    re-checks it, `ensure_graph`); the int8 and fp16 graphs are written by onnxruntime's quantizer and converter,
    so its version is part of them."""
    recipe = {"fingerprint": spec.fingerprint, "layers": list(layers), "quantize": quantize, "opset": OPSET,
              "recipe": EXPORT_RECIPE, "torch": torch.__version__}
    if quantize is not None:
        recipe["quantization"] = REDUCED_RECIPES[quantize]
        recipe["onnxruntime"] = runtime_version()
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def graph_dir(spec: ModelSpec, layers: tuple[int, ...], quantize: str | None) -> Path:
    """Where the graph of these outputs lives: readable by model and precision, unique through the digest."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", spec.name.rstrip("/").split("/")[-1]).strip("-")[:40] or "model"
    return cache_dir() / "onnx" / f"{slug}.{quantize or 'fp32'}.{_recipe_digest(spec, layers, quantize)}"


def ensure_graph(spec: ModelSpec, layers: Sequence[int], quantize: str | None = None) -> Graph:
    """The checked graph computing hidden states `layers` (absolute indices) of `spec`, exported on first use and
    checked again under a new onnxruntime. Its bytes are verified where they are loaded (`load_graph`).

    `quantize`: None (fp32) or a graph made from the fp32 one (`REDUCED_RECIPES`: int8, fp16), so the fp32 graph
    is exported (and checked) first."""
    if quantize is not None and quantize not in REDUCED_RECIPES:
        raise ConfigError(f"quantize: {quantize!r}; expected one of {', '.join(REDUCED_RECIPES)} or none")
    layers = tuple(sorted(set(layers)))
    out = graph_dir(spec, layers, quantize)
    check = _read_check(out)
    if check is None:
        _build(spec, layers, quantize, out)
    elif check.get("onnxruntime") != runtime_version():  # only fp32: a reduced graph's directory is per runtime
        try:
            verified_bytes(out / GRAPH_FILE, check["sha256"])
        except GraphDamaged:
            _build(spec, layers, quantize, out, replace=True)
        else:
            note_step(f"checking the cached ONNX graph of {spec.name} again under onnxruntime "
                      f"{runtime_version()} (once per runtime)")
            _run_in_child("recheck", str(spec.path), spec.prefix, list(layers), str(out), None, None)
    check = _read_check(out)
    if check is None:
        raise EmbedstoreError(f"{out / CHECK_FILE}: missing or unreadable right after the export wrote it")
    return Graph(out / GRAPH_FILE, layers, tuple(check["inputs"]), check)


def graph_cached(spec: ModelSpec, layers: Sequence[int]) -> bool:
    """Whether the fp32 graph of these layers is exported and checked under this onnxruntime (it may still prove
    damaged when loaded): `--backend auto` then has nothing to export before it can measure ONNX Runtime."""
    check = _read_check(graph_dir(spec, tuple(sorted(set(layers))), None))
    return check is not None and check.get("onnxruntime") == runtime_version()


def load_graph(spec: ModelSpec, layers: Sequence[int], quantize: str | None = None) -> tuple[Graph, bytes]:
    """The checked graph and its bytes, verified against the sha256 its check recorded. A damaged graph is
    rebuilt once (the record says why: `check["rebuilt"]`); if the rebuilt one fails too, it is refused."""
    graph = ensure_graph(spec, layers, quantize)
    try:
        return graph, verified_bytes(graph.path, graph.check.get("sha256"))
    except GraphDamaged as damage:
        _build(spec, graph.layers, quantize, graph.path.parent, replace=True)
        graph = ensure_graph(spec, layers, quantize)
        try:
            data = verified_bytes(graph.path, graph.check.get("sha256"))
        except GraphDamaged as again:
            raise EmbedstoreError(f"{again} (also after rebuilding it); use --backend torch") from None
        return Graph(graph.path, graph.layers, graph.inputs, {**graph.check, "rebuilt": str(damage)}), data


def _read_check(out: Path) -> dict[str, Any] | None:
    """The check record of a published graph directory; None when there is none, or one that is unreadable or
    lacks the graph's digest (it vouches for nothing, so the graph is built again)."""
    try:
        check = json.loads((out / CHECK_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(check, dict) or not isinstance(check.get("sha256"), str) \
            or not isinstance(check.get("inputs"), list):
        return None
    return check


def _build(spec: ModelSpec, layers: tuple[int, ...], quantize: str | None, out: Path, replace: bool = False) -> None:
    """Export (or quantize) and check in a child, then publish `out` whole (replacing a damaged one)."""
    fp32 = load_graph(spec, layers)[0] if quantize else None  # quantize verified fp32 bytes only
    note_step(f"{'quantizing' if quantize else 'exporting'} the ONNX graph of {spec.name} ({quantize or 'fp32'}, "
              f"layers {', '.join(map(str, layers))}) and checking it against PyTorch: once per model, about a "
              "minute on a CPU")
    with atomic_dir(out, replace=replace or out.exists()) as tmp:  # a concurrent export that publishes first wins
        _run_in_child("export", str(spec.path), spec.prefix, list(layers), str(tmp),
                      quantize, str(fp32.path) if fp32 else None)


def _run_in_child(*args: Any) -> None:
    """`_export_and_check(*args)` in a fresh interpreter (`python -m`, not multiprocessing's spawn, which would
    re-run a user's script that lacks a `__main__` guard); its one-line error becomes ours. `-P`: the working
    directory is not put first on the child's path, so a folder named `embedstore` there (a copy of the sample's
    layout, say) cannot shadow an editable install's package (which its finder serves after the path)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-P", "-m", __name__, json.dumps([os.getpid(), *args])],
                          capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit {done.returncode}"
        raise EmbedstoreError(f"ONNX {args[0]} of {args[1]} failed: {reason}")


def probe_batches(tokenizer, prefix: str) -> list[dict[str, np.ndarray]]:
    """Real sentences in padded batches of mixed lengths: the check sees padding, as encoding does."""
    return sample_batches(tokenizer, prefix, 0, PROBE_TEXTS // 2)


def sample_texts(start: int, per_language: int) -> list[str]:
    """Sentences start..start+per_language of each language (English, then Korean) of the bundled sample: the
    real texts every check and probe runs on. 0-23: the graph checks' probe texts; 24-151: int8 calibration;
    152-183: the engine probe (`engine_choice`)."""
    from embedstore.data.texts import read_texts

    sample = Path(str(files("embedstore") / "data" / "libreoffice_help.en-ko.sample.tsv"))
    stop = start + per_language
    return read_texts(sample, "en")[start:stop] + read_texts(sample, "ko")[start:stop]


def sample_batches(tokenizer, prefix: str, start: int, per_language: int) -> list[dict[str, np.ndarray]]:
    """`sample_texts` in padded batches."""
    texts = sample_texts(start, per_language)
    batches = []
    for i in range(0, len(texts), PROBE_BATCH):
        enc = tokenizer([prefix + t for t in texts[i:i + PROBE_BATCH]], truncation=True,
                        max_length=PROBE_MAX_LENGTH, padding=True, return_tensors="np")
        batches.append({k: np.asarray(v, dtype=np.int64) for k, v in enc.items()
                        if k in ("input_ids", "attention_mask", "token_type_ids")})
    return batches


def _mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None].astype(np.float64)
    return (hidden * m).sum(1) / np.maximum(m.sum(1), 1.0)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _export_and_check(mode: str, model_path: str, prefix: str, layers: tuple[int, ...], out_dir: str,
                      quantize: str | None, fp32_graph: str | None) -> None:
    """In the child: PyTorch reference first, then export (or quantize), then compare; writes the check record
    with the graph's sha256. `mode` "recheck": the published fp32 graph in `out_dir` is not exported again, only
    compared under this onnxruntime (its bytes verified first), and its record rewritten."""
    torch.set_num_threads(1)
    # the project's one loader (fp32, eval, the one device rule, its tokenizer cache): the child holds one copy
    model, tokenizer = load_once(resolve_model(model_path), resolve_device("cpu"))
    batches = probe_batches(tokenizer, prefix)
    inputs = tuple(batches[0])
    wrapper = HiddenStates(model, layers, inputs).eval()
    with torch.inference_mode():
        reference = [[h.numpy() for h in wrapper(*(torch.from_numpy(b[k]) for k in inputs))] for b in batches]
    graph = Path(out_dir) / GRAPH_FILE
    made: dict[str, Any] = {}  # what the making decided, recorded with the check
    if mode == "recheck":
        recorded = _read_check(Path(out_dir))
        data = verified_bytes(graph, recorded["sha256"] if recorded else None)
    elif quantize == "fp16":
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        # fp32 inputs and outputs kept (the pooling reads fp32 hidden states); constants beyond fp16's range
        # (the attention mask's large negatives) are clipped by the converter to +-1e4, still far below softmax's
        # reach
        half = convert_float_to_float16(onnx.load(fp32_graph), keep_io_types=True)
        onnx.save(half, graph)
    elif quantize is None:
        outputs = [f"hidden_{layer}" for layer in layers]
        export_graph(wrapper, [torch.from_numpy(batches[0][k]) for k in inputs], inputs, outputs, graph,
                     token_outputs=outputs)
        drop_nan_guards(graph)  # the check below runs on the graph without them
    else:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        from embedstore.encoding.smoothing import most_sensitive, smooth_graph

        # MatMul weights per output channel, inputs smoothed first: on e5-small's probe texts min cosine 0.998
        # to PyTorch against 0.991 unsmoothed and 0.985 per tensor (0.955 with reduce_range); the embedding
        # table stays fp32 (a bigger file, no slower: a Gather); the few products int8 still hurts most stay fp32
        # (`smoothing.most_sensitive`: why and what it bought, there)
        smoothed = Path(out_dir) / "smoothed.onnx"
        calibration = sample_batches(tokenizer, prefix, PROBE_TEXTS // 2, CALIBRATION_TEXTS // 2)
        smooth_graph(Path(fp32_graph), smoothed, calibration)
        made["fp32_products"] = most_sensitive(smoothed, calibration)
        quantize_dynamic(smoothed, graph, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                         per_channel=True, nodes_to_exclude=made["fp32_products"])
        smoothed.unlink()
    if mode != "recheck":
        data = graph.read_bytes()
    session = open_session(data, threads=1)
    max_diff, cosines = 0.0, []
    for batch, ref in zip(batches, reference):
        got = session.run(None, {k: batch[k] for k in inputs})
        for g, r in zip(got, ref):
            max_diff = max(max_diff, largest_difference(g, r, batch["attention_mask"]))
            cosines.append(_cosines(_mean_pool(g, batch["attention_mask"]), _mean_pool(r, batch["attention_mask"])))
    cos = np.concatenate(cosines)
    check = {"model_path": model_path, "layers": list(layers), "inputs": list(inputs), "quantize": quantize,
             "max_abs_diff": max_diff, "min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()),
             "probe_texts": PROBE_TEXTS, "tolerance": FP32_TOLERANCE if quantize is None else None,
             "min_cosine_floor": REDUCED_MIN_COSINE if quantize else None, "opset": OPSET, "recipe": EXPORT_RECIPE,
             "torch": torch.__version__, "onnxruntime": runtime_version(), "sha256": sha256_bytes(data), **made}
    if quantize is None and not max_diff <= FP32_TOLERANCE:
        raise EmbedstoreError(f"{model_path}: the exported ONNX graph differs from the PyTorch model by up to "
                              f"{max_diff:.2e} (hidden states of {PROBE_TEXTS} probe texts); expected at most "
                              f"{FP32_TOLERANCE:.0e} (fp32 noise); use --backend torch")
    if quantize is not None and not cos.min() >= REDUCED_MIN_COSINE:
        raise EmbedstoreError(f"{model_path}: the {quantize} graph's vectors reach a cosine of only {cos.min():.3f} "
                              f"to PyTorch's on {PROBE_TEXTS} probe texts; expected at least {REDUCED_MIN_COSINE}")
    write_json(Path(out_dir) / CHECK_FILE, check)


class OnnxEncoder:
    """The ONNX Runtime twin of `encoder.Encoder`: same batches in, same pooled vectors out (`forward`).

    Made from the verified bytes of `load_graph`, never from the path: what runs is what was hashed."""

    def __init__(self, graph: Graph, data: bytes, tokenizer, device, threads: int) -> None:
        on_cpu = device is None or device.type == "cpu"
        #: batches run side by side on the CPU, each on one thread of a one-thread session (`batch_threads`):
        #: ONNX Runtime's own threads on one batch of this size leave the cores waiting on each other
        self.side_by_side = threads if on_cpu and threads >= 2 else 1
        self.session = open_session(data, device=device, threads=1 if self.side_by_side > 1 else threads)
        self.graph, self.tokenizer, self.device = graph, tokenizer, device

    def forward(self, batch: dict, layers: Sequence[int], pooling: str) -> dict[int, np.ndarray]:
        """Pooled in numpy (`encoder.pool_array`): no torch op runs between two session runs."""
        from embedstore.encoding.encoder import pool_array

        feeds = {name: batch[name].cpu().numpy() for name in self.graph.inputs}
        wanted = [f"hidden_{layer}" for layer in layers]
        hidden = self.session.run(wanted, feeds)
        mask = batch["attention_mask"].cpu().numpy()
        return {layer: pool_array(h, mask, pooling) for layer, h in zip(layers, hidden)}


if __name__ == "__main__":  # the child of `_run_in_child`
    import sys

    from embedstore.base.parent import exit_with_parent

    parent, child_mode, model_path, prefix, child_layers, out_dir, child_quantize, fp32_path = json.loads(sys.argv[1])
    exit_with_parent(parent)  # a killed encode leaves no export running on
    try:
        _export_and_check(child_mode, model_path, prefix, tuple(child_layers), out_dir, child_quantize, fp32_path)
    except EmbedstoreError as e:
        sys.exit(f"{e}")
