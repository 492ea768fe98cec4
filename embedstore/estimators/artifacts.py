"""The contract every estimator (aligner or head) shares: parameters, repr, input checks, and its on-disk form.

A saved estimator is a directory with exactly two files: `model.safetensors` (learned arrays and network
weights) and `config.json` (class name, parameters, learned non-tensor attributes, dim, and the caller's
provenance). Nothing is pickled, so loading a model from an untrusted directory cannot run code, and
`load_estimator` only instantiates classes from a registry the caller passes in. A saved estimator is data:
loading checks every field (known keys, types, parameter types, state names) and every array (names, dtype,
shape against `dim`, finite values) and refuses the rest with one `InputError` line naming the file and field,
because an estimator that loads with the wrong shapes or settings answers nonsense instead of failing.
"""
from __future__ import annotations

import inspect
import json
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file
from sklearn.base import BaseEstimator
from torch import nn

from embedstore.base.atomic import atomic_path
from embedstore.base.errors import ConfigError, EmbedstoreError, InputError
from embedstore.base.schema import check_keys
from embedstore.estimators.training import Recipe

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT = "embedstore.estimator"
FORMAT_VERSION = 1
#: Prefix of network weights inside model.safetensors; the rest are learned arrays named after their attribute.
_MODULE_PREFIX = "module_."
#: config.json's fields and the JSON types each must have.
_CONFIG_FIELDS: dict[str, type] = {"format": str, "format_version": int, "class": str, "params": dict, "dim": int,
                                   "state": dict, "provenance": dict}


def as_matrix(value: Any, name: str) -> np.ndarray:
    """Validate once at the boundary so the numeric code below can assume a finite C-contiguous float32 matrix."""
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a 2-D array of numbers (rows, dim); got ragged or non-numeric input") from None
    if arr.ndim != 2:
        hint = "; use x.reshape(1, -1) for a single vector" if arr.ndim == 1 else ""
        raise InputError(f"{name} must be a 2-D array (rows, dim), got {arr.ndim}-D with shape {arr.shape}{hint}")
    if arr.dtype.kind not in "fiub":
        raise InputError(f"{name} must hold numbers, got dtype {arr.dtype}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"{name} must have at least one row and one column, got shape {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise InputError(f"{name} row {int(np.argmax(bad))} holds NaN or inf ({int(bad.sum())} such rows); "
                         "vectors must be finite")
    return arr


def _encode(value: Any) -> Any:
    """JSON form of parameters and learned attributes; tagged so `_decode` restores the original types."""
    if isinstance(value, Recipe):
        return {"__recipe__": asdict(value)}
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist()}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__recipe__"}:
            return Recipe(**value["__recipe__"])
        if set(value) == {"__ndarray__"}:
            return np.asarray(value["__ndarray__"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


class Estimator(BaseEstimator):
    """scikit-learn's estimator for real (`get_params`, `set_params`, `clone`): parameters only in `__init__`,
    stored unchanged, learned attributes end in `_`.

    Subclasses list their learned attributes so that saving needs no per-class code: `_array_attrs` go to
    safetensors, `_state_attrs` to JSON, and a `module_` network (if any) goes to safetensors by its state dict.
    A concrete class declares its short `name`, which puts it in its family's registry (`registry`).
    """

    _array_attrs: ClassVar[tuple[str, ...]] = ()
    #: Shapes of learned arrays that are not (dim,) or (dim, dim), "dim" standing for the fitted dim; loading
    #: refuses any other shape, so a config whose dim disagrees with its arrays is an error, not a broadcast.
    _array_shapes: ClassVar[Mapping[str, tuple[int | str, ...]]] = {}
    _state_attrs: ClassVar[tuple[str, ...]] = ()
    _fit_call: ClassVar[str] = "fit(...)"
    #: Short name users type (CLI, sweep configs); only classes that set it are registered.
    name: ClassVar[str | None] = None
    #: Position in listings (CLI help, tables): the paper's order, not the alphabet's.
    order: ClassVar[int] = 0

    def set_params(self, **params: Any) -> Self:
        """scikit-learn's `set_params`, but an unknown name is a one-line ConfigError naming the valid ones."""
        _check_params(type(self), params, f"{type(self).__name__} has no parameter")
        return super().set_params(**params)

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "dim_")

    def __repr__(self, N_CHAR_MAX: int = 700) -> str:
        """Only the parameters that differ from the defaults, on one line (scikit-learn's wraps long reprs)."""
        defaults = {name: p.default for name, p in inspect.signature(type(self).__init__).parameters.items()}
        changed = [f"{k}={v!r}" for k, v in self.get_params(deep=False).items() if not _same(v, defaults.get(k))]
        return f"{type(self).__name__}({', '.join(changed)})"

    def _check_fitted(self) -> None:
        if not hasattr(self, "dim_"):
            raise EmbedstoreError(f"{type(self).__name__} is not fitted; call {self._fit_call} first")

    def _check_dim(self, arr: np.ndarray, name: str) -> None:
        if arr.shape[1] != self.dim_:
            raise InputError(f"{name} has {arr.shape[1]} columns but {type(self).__name__} was fitted on dim {self.dim_}")

    def _check_refit_dim(self, dim: int, name: str) -> None:
        """Refitting on another space is almost always a mixed-up store key, so it is refused rather than silent."""
        if hasattr(self, "dim_") and dim != self.dim_:
            raise InputError(f"{name} has {dim} columns but this {type(self).__name__} was already fitted on dim "
                             f"{self.dim_}; create a new estimator for another embedding space")

    def _empty_module(self) -> nn.Module:
        """A network with the fitted shapes, ready to receive saved weights (torch estimators override this)."""
        raise InputError(f"{type(self).__name__} has no network, but its saved weights contain one")

    def save(self, directory: str | os.PathLike, provenance: Mapping[str, Any] | None = None) -> Path:
        """Write `model.safetensors` + `config.json` into `directory`; `provenance` (JSON-serialisable) is kept as is."""
        self._check_fitted()
        if provenance is not None and not isinstance(provenance, Mapping):
            raise ConfigError(f"provenance must be a dict, got {type(provenance).__name__}")
        path = Path(directory)
        arrays = {name: np.ascontiguousarray(getattr(self, name)) for name in self._array_attrs}
        module = getattr(self, "module_", None)
        if module is not None:
            for key, tensor in module.state_dict().items():
                arrays[_MODULE_PREFIX + key] = tensor.detach().cpu().contiguous().numpy()
        config = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "class": type(self).__name__,
            "params": _encode(self.get_params(deep=False)),
            "dim": int(self.dim_),
            "state": _encode({name: getattr(self, name) for name in self._state_attrs}),
            "provenance": dict(provenance or {}),
        }
        try:
            text = json.dumps(config, indent=2, allow_nan=True)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"cannot save {type(self).__name__}: provenance and parameters must be "
                              f"JSON-serialisable ({exc})") from None
        # each file is replaced whole, so a crash cannot leave a truncated one behind; both are written before
        # either is published, weights first
        with atomic_path(path / CONFIG_FILE) as config_tmp, atomic_path(path / WEIGHTS_FILE) as weights_tmp:
            save_file(arrays, str(weights_tmp), metadata={"format": FORMAT})
            config_tmp.write_text(text + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Self:
        config = read_config(directory)
        if config["class"] != cls.__name__:
            raise InputError(f"{Path(directory) / CONFIG_FILE} holds a {config['class']}, not a {cls.__name__}")
        return _restore(cls, config, Path(directory))


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def read_config(directory: str | os.PathLike) -> dict[str, Any]:
    """Read and check config.json; also the way to get at a saved model's provenance without loading weights."""
    path = Path(directory)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (path / name).is_file():
            raise InputError(f"{path} is not a saved estimator: {name} is missing")
    where = path / CONFIG_FILE
    try:
        config = json.loads(where.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise InputError(f"{where} is not valid JSON ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise InputError(f"{where} is not an embedstore estimator config (format != {FORMAT!r})")
    missing = [key for key in _CONFIG_FIELDS if key not in config]
    if missing:
        raise InputError(f"{where} lacks {', '.join(missing)}")
    check_keys(f"{where}: ", config, _CONFIG_FIELDS, error=InputError)
    version = config["format_version"]
    if type(version) is not int or version != FORMAT_VERSION:
        raise InputError(f"{where} has format_version {version!r}; this embedstore reads {FORMAT_VERSION}")
    for key, kind in _CONFIG_FIELDS.items():
        if not isinstance(config[key], kind) or isinstance(config[key], bool):
            raise InputError(f"{where}: {key}: {_short(config[key])}; expected a JSON {_JSON_NAMES[kind]}")
    if config["dim"] < 1:
        raise InputError(f"{where}: dim: {config['dim']}; expected a positive integer")
    return config


_JSON_NAMES = {str: "string", int: "integer", dict: "object"}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


E = TypeVar("E", bound=Estimator)


def named_subclasses(base: type[E]) -> dict[str, type[E]]:
    """Every loaded subclass of `base` that declares a `name`, by name, in `order`: the one list that CLI choices,
    config validation, reports and loading read, so a new class is registered by being defined."""
    found: dict[str, type[E]] = {}
    stack = list(base.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        name = cls.__dict__.get("name")
        if name is None:
            continue
        if name in found and found[name] is not cls:
            raise ConfigError(f"{cls.__name__} and {found[name].__name__} both declare name {name!r}; "
                              "registered names must be unique")
        found[name] = cls
    return dict(sorted(found.items(), key=lambda item: (item[1].order, item[0])))


def lookup(registry: Mapping[str, type[E]], name: str, what: str) -> type[E]:
    """The registered class called `name`; a typo is a ConfigError listing the names there are."""
    cls = registry.get(name)
    if cls is None:
        raise ConfigError(f"{what} {name!r} is unknown; use one of {', '.join(registry)}")
    return cls


def make_estimator(registry: Mapping[str, type[Estimator]], name: str, params: Mapping[str, Any],
                   what: str) -> Estimator:
    """Build a registered estimator by short name, turning a typo in a name or parameter into a ConfigError."""
    cls = lookup(registry, name, what)
    _check_params(cls, params, f"{what} {name!r} does not take")
    return cls(**params)


def _check_params(cls: type[Estimator], params: Mapping[str, Any], refusal: str) -> None:
    """A typo in a parameter name is an error naming the valid ones, not a silently ignored setting."""
    unknown = sorted(set(params) - set(cls._get_param_names()))
    if unknown:
        raise ConfigError(f"{refusal} {', '.join(unknown)}; its parameters are {', '.join(cls._get_param_names())}")


def load_estimator(directory: str | os.PathLike, registry: Mapping[str, type[Estimator]]) -> Estimator:
    """Load whichever registered class config.json names; names outside `registry` are refused, never imported."""
    config = read_config(directory)
    cls = registry.get(config["class"])
    if cls is None:
        raise InputError(f"{Path(directory) / CONFIG_FILE} holds a {config['class']!r}; expected one of "
                         f"{', '.join(sorted(registry))}")
    return _restore(cls, config, Path(directory))


def _restore(cls: type[Estimator], config: dict[str, Any], path: Path) -> Estimator:
    where = path / CONFIG_FILE
    params = _decoded(config["params"], where, "params")
    unknown = set(params) - set(cls._get_param_names())
    if unknown:
        raise InputError(f"{where} has parameters {sorted(unknown)} that {cls.__name__} does not take")
    _check_param_types(cls, params, where)
    state = _decoded(config["state"], where, "state")
    if set(state) != set(cls._state_attrs):
        extra, lacking = sorted(set(state) - set(cls._state_attrs)), sorted(set(cls._state_attrs) - set(state))
        raise InputError(f"{where}: state: " + (f"unknown key {extra[0]!r}" if extra else f"lacks {lacking[0]!r}")
                         + f"; a {cls.__name__} keeps exactly {', '.join(cls._state_attrs) or 'no state'}")
    estimator = cls(**params)
    dim = estimator.dim_ = config["dim"]
    for name, value in state.items():
        setattr(estimator, name, value)
    weights_path = path / WEIGHTS_FILE
    arrays = read_arrays(weights_path)
    for name in cls._array_attrs:
        if name not in arrays:
            raise InputError(f"{weights_path} lacks the array {name!r} that {cls.__name__} needs")
        _check_learned_array(arrays[name], name, cls._array_shapes.get(name), dim, weights_path)
        setattr(estimator, name, arrays[name])
    extra = sorted(k for k in arrays if k not in cls._array_attrs and not k.startswith(_MODULE_PREFIX))
    if extra:
        raise InputError(f"{weights_path}: unknown array {extra[0]!r}; a {cls.__name__} keeps "
                         f"{', '.join(cls._array_attrs) or 'no arrays'} and its network's weights")
    weights = {k[len(_MODULE_PREFIX):]: v for k, v in arrays.items() if k.startswith(_MODULE_PREFIX)}
    for name, value in weights.items():
        if value.dtype != np.float32 or not np.isfinite(value).all():
            raise InputError(f"{weights_path}: {_MODULE_PREFIX}{name}: expected finite float32 weights, got "
                             f"{value.dtype}{' with NaN or inf' if value.dtype.kind == 'f' else ''}")
    if weights:
        try:
            module = estimator._empty_module()
            module.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
            estimator.module_ = module.to(estimator.device).eval()
        except (RuntimeError, TypeError, ValueError) as exc:  # shapes that do not fit `dim`, a bad state value
            raise InputError(f"{weights_path}: the network weights do not fit a {cls.__name__} of dim {dim} "
                             f"({' '.join(str(exc).split())[:300]})") from None
    return estimator


def _decoded(value: Any, where: Path, field: str) -> Any:
    try:
        return _decode(value)
    except (TypeError, ValueError) as exc:  # a tagged recipe or array that does not decode
        raise InputError(f"{where}: {field}: {' '.join(str(exc).split())[:200]}") from None


def _check_param_types(cls: type[Estimator], params: Mapping[str, Any], where: Path) -> None:
    """Each saved parameter must have a type its annotation allows (an int where a float is expected is fine;
    a bool is not a number): a parameter that is the wrong type changes behaviour silently, e.g. `reverse="no"`
    is true."""
    hints = typing.get_type_hints(cls.__init__)
    for name, value in params.items():
        allowed = _types_of(hints.get(name, Any))
        if allowed is None:
            continue
        numeric = (int, float) if float in allowed else (int,) if int in allowed else ()
        ok = (isinstance(value, bool) and bool in allowed) or (not isinstance(value, bool) and (
            isinstance(value, numeric) or isinstance(value, tuple(t for t in allowed if t not in (int, float)))))
        if not ok:
            expected = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
            raise InputError(f"{where}: params.{name}: {_short(value)}; expected {expected}")


def _types_of(hint: Any) -> tuple[type, ...] | None:
    """The classes a parameter annotation admits (None: anything, e.g. an unannotated parameter)."""
    if hint is Any:
        return None
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return tuple(t for t in typing.get_args(hint) if isinstance(t, type))
    return (hint,) if isinstance(hint, type) else None


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a safetensors file; any damage (truncated, garbled header, unknown dtype) is one InputError."""
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"{path} is not a readable safetensors file ({' '.join(str(exc).split())[:200]})") from None


def _check_learned_array(value: np.ndarray, name: str, shape: tuple[int | str, ...] | None, dim: int,
                         path: Path) -> None:
    """Learned arrays live in the embedding space: float32, finite, (dim,) or (dim, dim) unless the class
    declares another shape in `_array_shapes`."""
    if value.dtype != np.float32:
        raise InputError(f"{path}: {name}: dtype {value.dtype}; expected float32")
    allowed = [(dim,), (dim, dim)] if shape is None else [tuple(dim if n == "dim" else n for n in shape)]
    if value.shape not in allowed:
        raise InputError(f"{path}: {name}: shape {value.shape}; expected {' or '.join(map(str, allowed))} "
                         f"(config.json says dim {dim})")
    if not np.isfinite(value).all():
        raise InputError(f"{path}: {name}: holds NaN or inf; expected finite values")
