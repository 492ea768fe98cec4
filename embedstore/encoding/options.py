"""The encoding options: everything that shapes a vector, as one validated value, and apart from it how to compute.

Why one value: when each command rebuilt the options from its own flags, the ones it did not take fell back to
defaults, and vectors under another key were silently re-encoded or, worse, an aligner of one layer was put
behind a head of another. The value is built once at the edge (CLI, sweep config, pipeline manifest), carried
as is, and turns into the store key of each requested layer. Compute settings (batch size, device, chunk rows)
never change a vector, so they travel separately and never reach a key.

The backend (PyTorch or ONNX Runtime fp32) is a compute setting: every ONNX graph is checked against PyTorch when
it is exported and refused beyond 1e-5 on its hidden states (encoding.onnx_backend), the tolerance `store merge`
already accepts between two encodes of one text, so the two backends' vectors may share a key as vectors of two
batch sizes do. Quantization is not: int8 weights move vectors by a cosine of up to ~0.03, so `quantize` is an
encoding option and its vectors get a key of their own (`quantized_fingerprint`).
"""
from __future__ import annotations

import hashlib
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Iterator, Mapping

from embedstore.base.errors import ConfigError
from embedstore.base.schema import check_keys, names_of
from embedstore.encoding.models import DEFAULT_MODEL, ModelSpec, resolve_model
from embedstore.encoding.smoothing import ALPHA as SMOOTHING_ALPHA, FP32_PRODUCTS
from embedstore.store import StoreKey
from embedstore.store.key import DTYPES, POOLINGS

QUANTIZATION_RECIPES = {"int8": f"onnxruntime quantize_dynamic: MatMul weights QInt8 per channel; inputs smoothed "
                                f"(alpha {SMOOTHING_ALPHA}, powers of two, the bundled sample's calibration texts); "
                                f"the {FP32_PRODUCTS} products of the largest simulated int8 error on those texts "
                                "kept fp32; v3"}
"""What each quantization does to the weights. It is part of the quantized key's fingerprint: vectors of another
recipe are other vectors."""
QUANTIZATIONS = tuple(QUANTIZATION_RECIPES)
NO_QUANTIZATION, FULL_PRECISION = "none", "fp32"
"""`quantize` and `precision` as a flag or a setting spell their defaults (None: fp32 weights and compute)."""
HALF_GRAPH_RECIPE = ("onnxruntime.transformers.float16.convert_float_to_float16 of the checked fp32 graph, "
                     "keep_io_types, default op block list; v1")
"""How ONNX Runtime's fp16 graph is made from the fp32 one. Part of its key's fingerprint: another recipe makes other
vectors."""
PRECISION_ENGINES = {"fp16": "torch", "bf16": "torch", "onnx-fp16": "onnx"}
"""Reduced compute precisions and the engine each runs on (`encoding.precision`): fp16 and bf16 are PyTorch under
autocast; onnx-fp16 is ONNX Runtime running the graph converted to fp16 (`HALF_GRAPH_RECIPE`; its CUDA provider on
a GPU). Their vectors differ from fp32 beyond noise, and from each other (autocast keeps layer norms, softmax and
sums in fp32, the fp16 graph does not), so each gets a key of its own and is fidelity-checked against fp32 on first
use. Why the engine is in the value rather than taken from `--backend`: the key must follow from these options
alone, so a command that only reads vectors names the same key without knowing how they were computed. bf16 has no
ONNX Runtime path: onnxruntime ships no bf16 converter and its CPU provider no bf16 kernels, so nothing here could
check one."""
PRECISIONS = tuple(PRECISION_ENGINES)
BACKENDS = ("auto", "torch", "onnx")
"""auto: the faster of the two lossless engines for this model, layers, device and threads, measured on this machine
on first use and cached (`encoding.engine_choice`); a first graph export only when the job can earn it back; on a
CUDA device ONNX Runtime is a candidate only when its CUDA provider is installed (onnxruntime-gpu)."""


def absolute_layer(layer: int, num_layers: int) -> int:
    """Hidden-state index: 0 is the embedding output, num_layers the last layer; negatives count from the end."""
    if not -(num_layers + 1) <= layer <= num_layers:
        raise ConfigError(f"layer: {layer} is out of range for a {num_layers}-layer model; "
                          f"expected {-(num_layers + 1)}..{num_layers}")
    return layer if layer >= 0 else num_layers + 1 + layer


def _option(default: Any, help: str, *, shown: Any = None) -> Any:
    """A field whose help (and, where the default is "decided later", the default as a user reads it) every
    surface takes from here: the CLI's flags (`cli.common`), as `base.schema.options_of` lists them."""
    return field(default=default, metadata={"help": help, **({"shown": shown} if shown is not None else {})})


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class EncodeOptions:
    """What shapes a vector. `fingerprint` None trusts whatever weights `model` resolves to now; a fingerprint
    (as a saved pipeline records it) pins them, so different weights under the same name are refused."""

    model: str = _option(DEFAULT_MODEL, "Hub name or local model directory")
    pooling: str | None = _option(None, "mean (attention-mask weighted), cls or max",
                                  shown="the model's own (a sentence-transformers folder's), else mean")
    layers: tuple[int, ...] = _option((-1,), "Hidden layer the vectors come from (negative counts from the end)",
                                      shown=-1)
    max_length: int = _option(512, "Tokens per text (longer texts are truncated)")
    prefix: str | None = _option(None, "Text prefix", shown="the model's own, 'query: ' for e5")
    dtype: str = _option("float32", "Storage precision: float32 or float16 (compute: fp32 unless --precision)")
    fingerprint: str | None = None  # pinned by a saved pipeline, never a flag or a setting
    quantize: str | None = _option(None, "int8: ONNX Runtime with int8 weights (faster on CPU, cosine ~0.97-0.99 to "
                                   "fp32 vectors, stored under a key of its own); default: none (fp32)")
    precision: str | None = _option(None, "fp16 or bf16: PyTorch under autocast (for GPUs); onnx-fp16: ONNX Runtime "
                                    "on the graph converted to fp16 (its CUDA provider on a GPU); each stored under a "
                                    "key of its own and checked against fp32 on first use (min cosine and P@1; "
                                    "refused below the bound in embedstore.encoding.precision)", shown="fp32")

    def __post_init__(self) -> None:
        if isinstance(self.layers, list):  # JSON and TOML give lists; the value stays hashable
            object.__setattr__(self, "layers", tuple(self.layers))
        # the defaults spelled out (a flag, a setting): given, they win over a setting of another value
        if self.quantize == NO_QUANTIZATION:
            object.__setattr__(self, "quantize", None)
        if self.precision == FULL_PRECISION:
            object.__setattr__(self, "precision", None)
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigError(f"model: {self.model!r}; expected a model name or a model directory")
        if self.pooling is not None and self.pooling not in POOLINGS:
            raise ConfigError(f"pooling: {self.pooling!r} is not supported; expected one of {', '.join(POOLINGS)}")
        if not isinstance(self.layers, tuple) or not self.layers or not all(map(_is_int, self.layers)):
            raise ConfigError(f"layers: {self.layers!r}; expected at least one whole layer index")
        if not _is_int(self.max_length) or self.max_length < 2:
            raise ConfigError(f"max_length: {self.max_length!r}; expected a whole number of tokens, at least 2")
        if self.prefix is not None and not isinstance(self.prefix, str):
            raise ConfigError(f"prefix: {self.prefix!r}; expected a string or None (the model's own)")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype: {self.dtype!r} is not supported; expected one of {', '.join(DTYPES)}")
        if self.fingerprint is not None and (not isinstance(self.fingerprint, str) or not self.fingerprint):
            raise ConfigError(f"fingerprint: {self.fingerprint!r}; expected a model fingerprint string or None")
        if self.quantize is not None and self.quantize not in QUANTIZATIONS:
            raise ConfigError(f"quantize: {self.quantize!r} is not supported; expected one of "
                              f"{', '.join(QUANTIZATIONS)} or none")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ConfigError(f"precision: {self.precision!r} is not supported; expected one of "
                              f"{', '.join(PRECISIONS)} or none (fp32)")
        if self.precision is not None and self.quantize is not None:
            raise ConfigError(f"precision: {self.precision} and quantize: {self.quantize} are two engines' "
                              "reductions (PyTorch autocast, ONNX Runtime int8); expected one of them")

    def resolve(self) -> ModelSpec:
        """The model as it resolves now, refused when a pinned fingerprint names other weights."""
        return self._checked(resolve_model(self.model))

    def _checked(self, spec: ModelSpec) -> ModelSpec:
        if self.fingerprint is not None and spec.fingerprint != self.fingerprint:
            raise ConfigError(f"model: {self.model} now resolves to weights with fingerprint {spec.fingerprint}; "
                              f"expected {self.fingerprint} (the weights these options were saved with)")
        return spec

    def keys(self, spec: ModelSpec | None = None) -> list[StoreKey]:
        """The store key of each requested layer (a layer named twice, e.g. -1 and 12, is one key)."""
        spec = self.resolve() if spec is None else self._checked(spec)
        if spec.max_positions is not None and self.max_length > spec.max_positions:
            raise ConfigError(f"max_length: {self.max_length} tokens; {spec.path} has position embeddings for "
                              f"{spec.max_positions}; expected at most {spec.max_positions}")
        prefix = spec.prefix if self.prefix is None else self.prefix
        layers = dict.fromkeys(absolute_layer(layer, spec.num_layers) for layer in self.layers)
        if spec.folder.transforms and set(layers) != {spec.num_layers}:
            raise ConfigError(f"layers: {list(self.layers)}; {spec.path}'s Dense/Normalize modules were made for its "
                              f"last layer's vectors; expected -1 (or another model directory without them)")
        model, fingerprint = spec.name, spec.fingerprint
        if self.quantize is not None:
            model, fingerprint = f"{spec.name}+{self.quantize}", quantized_fingerprint(spec.fingerprint, self.quantize)
        if self.precision is not None:
            model, fingerprint = f"{spec.name}+{self.precision}", precision_fingerprint(spec.fingerprint, self.precision)
        return [StoreKey(model=model, fingerprint=fingerprint, pooling=self.pooling or spec.pooling, layer=layer,
                         max_length=self.max_length, prefix=prefix, dtype=self.dtype) for layer in layers]

    def key(self, spec: ModelSpec | None = None) -> StoreKey:
        """The one store key of single-layer options (steps, pipelines and sweeps use one layer)."""
        keys = self.keys(spec)
        if len(keys) != 1:
            raise ConfigError(f"layers: {list(self.layers)} name {len(keys)} layers; expected one")
        return keys[0]

    def pinned(self, spec: ModelSpec | None = None, keys: list[StoreKey] | None = None) -> "EncodeOptions":
        """The same options with everything the model decided written out (fingerprint, prefix, absolute
        layers), as a saved pipeline keeps them: loaded later, they mean the same vectors or are refused.
        `keys`: `self.keys(spec)` when the caller has them already."""
        spec = spec or self.resolve()
        keys = self.keys(spec) if keys is None else keys
        return replace(self, fingerprint=spec.fingerprint, prefix=keys[0].prefix, pooling=keys[0].pooling,
                       layers=tuple(k.layer for k in keys))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "layers": list(self.layers)}

    @classmethod
    def from_dict(cls, data: object, where: str) -> "EncodeOptions":
        """Strict: unknown keys and wrong types are refused with one line naming `where` and the field."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: {data!r}; expected a table of encoding options")
        check_keys(f"{where}.", data, names_of(cls))
        try:
            return cls(**data)
        except ConfigError as e:
            raise ConfigError(f"{where}.{e}") from None


def quantized_fingerprint(fingerprint: str, quantize: str) -> str:
    """The identity of a model's quantized weights: derived from the model's, so a key of int8 vectors never
    equals (or collides with) the fp32 key of the same model, whatever else the options say."""
    return hashlib.sha256(f"{fingerprint}+{QUANTIZATION_RECIPES[quantize]}".encode()).hexdigest()[:16]


def precision_fingerprint(fingerprint: str, precision: str) -> str:
    """The identity of a model run at a reduced precision: its vectors never share the fp32 key, nor another
    precision's or engine's."""
    recipe = HALF_GRAPH_RECIPE if PRECISION_ENGINES[precision] == "onnx" else f"autocast-{precision}"
    return hashlib.sha256(f"{fingerprint}+{recipe}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ComputeOptions:
    """How to compute vectors: none of it changes a vector beyond fp32 noise, so none of it is in a store key.

    Batches are cut from the length-sorted texts by a token budget: each holds as many texts as fit in
    `batch_tokens` padded tokens, and at most `batch_size`. Short texts then go many at a time (a fixed count
    of 32 left the kernels half idle on them) and long ones few at a time (bounded memory). 2,048 tokens and 64
    texts measured fastest on 2,000 help sentences with both ONNX Runtime paths (fp32 16.5-17.4 s against 19.1-19.6 s
    at 4,096 and 128; int8 7.2-7.6 s against 7.7-8.5 s; 2 threads, 2026-12-03)."""

    batch_size: int = 64
    batch_tokens: int = 2048
    device: str = "auto"
    chunk_rows: int = 1024  # rows per stored chunk and per commit, for keys created by this encode
    backend: str = "auto"

    def __post_init__(self) -> None:
        for name in ("batch_size", "batch_tokens", "chunk_rows"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ConfigError(f"{name}: {value!r}; expected a positive integer")
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend: {self.backend!r} is not supported; expected one of {', '.join(BACKENDS)}")


_COMPUTE: ContextVar[ComputeOptions | None] = ContextVar("embedstore_compute", default=None)


@contextmanager
def computing(compute: ComputeOptions) -> Iterator[None]:
    """Every encode inside that is not given its own `ComputeOptions` computes with `compute`.

    Why: a command's `--device` and `--batch-size` must reach every encode its steps run (an aligner's pairs, a
    head's rows, a pipeline's test texts, a sweep's texts), and none of them changes a vector, so they travel
    beside the encoding options rather than through every step's signature."""
    token = _COMPUTE.set(compute)
    try:
        yield
    finally:
        _COMPUTE.reset(token)


def compute_in_force(compute: ComputeOptions | None = None) -> ComputeOptions:
    """`compute` when given, else the one `computing` set, else the defaults."""
    return compute if compute is not None else (_COMPUTE.get() or ComputeOptions())


def check_combination(options: EncodeOptions, compute: ComputeOptions) -> None:
    """Refuse at once (before the store is read or a model loads) what cannot run together."""
    engine = PRECISION_ENGINES.get(options.precision or "")
    if engine == "torch" and compute.backend == "onnx":
        hint = " or --precision onnx-fp16 (ONNX Runtime's fp16 graph, a key of its own)" \
            if options.precision == "fp16" else " (ONNX Runtime has no bf16 path: no converter, no CPU kernels)"
        raise ConfigError(f"precision: {options.precision} runs on PyTorch (autocast); expected --backend torch "
                          f"(or auto){hint}, not onnx")
    if engine == "onnx" and compute.backend == "torch":
        raise ConfigError(f"precision: {options.precision} runs on ONNX Runtime; expected --backend onnx (or auto), "
                          "not torch, or --precision fp16 (PyTorch autocast)")
    if options.quantize is not None and compute.backend == "torch":
        raise ConfigError(f"quantize: {options.quantize} runs on ONNX Runtime; expected --backend onnx (or auto), "
                          "not torch")


ENCODING_FIELDS = names_of(EncodeOptions, exclude=("layers", "fingerprint"))
"""The encoding options a call names by keyword (`layer` apart: one layer or several)."""
