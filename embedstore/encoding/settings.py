"""Project settings: the store, model and encoding options a project sets once instead of on every command.

Sources, strongest first: a command-line flag (or a keyword of the Python API), an environment variable
(`EMBEDSTORE_STORE`, `EMBEDSTORE_MODEL`, and `EMBEDSTORE_<OPTION>` for each encoding option: `_POOLING`,
`_LAYER`, `_MAX_LENGTH`, `_PREFIX`, `_DTYPE`, `_QUANTIZE`, `_PRECISION`), the nearest `embedstore.toml` in the
working directory or above it, and the built-in defaults. The file:

    store = "vectors/store.zarr"        # relative paths are relative to the file
    model = "multilingual-e5-small"     # a name, or a directory ("./models/tuned" is relative to the file)
    [encoding]
    pooling = "mean"
    layer = -1
    max_length = 256
    prefix = "query: "
    dtype = "float16"

The names and types are `EncodeOptions`' fields (one `layer`; the fingerprint is the weights', never a
setting), so an encoding option added there is a setting, an environment variable and a key of the file at once.

Why sources are kept: a vector's store key depends on these values, so a run whose model came from a file the
user forgot about must say so; `record(explicit)` is what results carry. Read on every call (a few stats and a
small file), because a cached value would outlive a changed directory or environment in a long process.
"""
from __future__ import annotations

import os
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from embedstore.base.errors import ConfigError
from embedstore.base.schema import check_keys, options_of
from embedstore.encoding.models import cache_dir, is_model_path
from embedstore.encoding.options import ENCODING_FIELDS, EncodeOptions

DEFAULT_STORE_NAME = "store.zarr"
CONFIG_NAME = "embedstore.toml"
#: Each encoding option as a setting names it, with the type of its value: `EncodeOptions`' fields but the model
#: (a top-level setting) and the fingerprint, `layers` as one whole `layer`.
_ENCODING_TYPES: dict[str, type] = {
    ("layer" if o.name == "layers" else o.name): (typing.get_args(o.type)[0] if o.name == "layers" else o.type)
    for o in options_of(EncodeOptions, exclude=("model", "fingerprint"))}
TOP_KEYS = ("store", "model")
ENCODING_KEYS = tuple(_ENCODING_TYPES)
NAMES = TOP_KEYS + ENCODING_KEYS
ENV = {name: f"EMBEDSTORE_{name.upper()}" for name in NAMES}
_INTS = tuple(name for name, kind in _ENCODING_TYPES.items() if kind is int)

#: Names a command line set with flags in this process (`mark_explicit`), so records say "flag" for them.
_explicit: set[str] = set()


@dataclass(frozen=True)
class Setting:
    value: Any
    source: str  # "env EMBEDSTORE_X" or "file /path/embedstore.toml"


def find_config(start: Path | None = None) -> Path | None:
    """The nearest `embedstore.toml` in `start` (default: the working directory) or a parent directory."""
    here = (start or Path.cwd()).absolute()
    for directory in (here, *here.parents):
        candidate = directory / CONFIG_NAME
        if candidate.is_file():
            return candidate
    return None


def _checked(name: str, value: Any, where: str) -> Any:
    if name in _INTS:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{where}: {value!r}; expected a whole number")
    elif not isinstance(value, str) or (name != "prefix" and not value.strip()):
        raise ConfigError(f"{where}: {value!r}; expected a {'string' if name == 'prefix' else 'non-empty string'}")
    return value


def _relative(value: str, base: Path, name: str) -> str:
    """Store paths, and model paths (`is_model_path`), are relative to the file that names them."""
    if name == "store" or (name == "model" and is_model_path(value)):
        path = Path(value).expanduser()
        return str(path if path.is_absolute() else (base / path).resolve())
    return value


def _from_file(path: Path) -> dict[str, Setting]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: not readable TOML ({' '.join(str(e).split())})") from None
    out: dict[str, Setting] = {}
    source = f"file {path}"
    encoding = data.pop("encoding", {})
    if not isinstance(encoding, dict):
        raise ConfigError(f"{path}: encoding: expected a table of {', '.join(ENCODING_KEYS)}")
    check_keys(f"{path}: ", data, (*TOP_KEYS, "encoding"))
    check_keys(f"{path}: encoding.", encoding, ENCODING_KEYS)
    for key, value in data.items():
        out[key] = Setting(_relative(_checked(key, value, f"{path}: {key}"), path.parent, key), source)
    for key, value in encoding.items():
        out[key] = Setting(_checked(key, value, f"{path}: encoding.{key}"), source)
    return out


def _from_env(environ: Mapping[str, str]) -> dict[str, Setting]:
    out = {}
    for name, variable in ENV.items():
        raw = environ.get(variable, "")
        if raw == "" and name != "prefix" or variable not in environ:
            continue
        value: Any = raw
        if name in _INTS:
            try:
                value = int(raw)
            except ValueError:
                raise ConfigError(f"{variable}={raw!r}: expected a whole number") from None
        elif name == "store":
            value = str(Path(raw).expanduser())
        out[name] = Setting(_checked(name, value, variable), f"env {variable}")
    return out


@dataclass(frozen=True)
class ProjectSettings:
    values: dict[str, Setting]
    file: Path | None

    def get(self, name: str) -> Any | None:
        setting = self.values.get(name)
        return None if setting is None else setting.value

    def source(self, name: str, explicit: Iterable[str] = ()) -> str:
        if name in explicit or name in _explicit:
            return "flag"
        setting = self.values.get(name)
        return "default" if setting is None else setting.source

    def record(self, explicit: Iterable[str] = ()) -> dict[str, str]:
        """Where each setting came from in this run: "flag", "env EMBEDSTORE_X", "file PATH" or "default"."""
        explicit = set(explicit)
        return {name: self.source(name, explicit) for name in NAMES}


def project_settings(cwd: Path | None = None, environ: Mapping[str, str] | None = None) -> ProjectSettings:
    """The settings in force: the environment over the nearest `embedstore.toml` (flags are the caller's)."""
    file = find_config(cwd)
    values = _from_file(file) if file else {}
    values.update(_from_env(os.environ if environ is None else environ))
    return ProjectSettings(values, file)


def mark_explicit(names: Iterable[str]) -> None:
    """The command line set these with flags (so `record` says "flag"); replaces what an earlier command in the
    same process (tests, a notebook running the CLI) marked."""
    _explicit.clear()
    _explicit.update(names)


def default_store() -> Path:
    """The project's store (EMBEDSTORE_STORE, embedstore.toml), else the cache's."""
    configured = project_settings().get("store")
    return Path(configured) if configured is not None else cache_dir() / DEFAULT_STORE_NAME


def options_with_settings(given: Mapping[str, Any]) -> EncodeOptions:
    """`EncodeOptions` from the values given (flags or keywords; `layer` an int or a list), the project settings
    filling in the rest: the one place the CLI and the API resolve encoding options."""
    settings = project_settings()
    values = {name: given[name] if given.get(name) is not None else settings.get(name)
              for name in (*ENCODING_FIELDS, "layer")}
    layer = values.pop("layer")
    chosen = {} if layer is None else {"layers": (layer,) if isinstance(layer, int) else tuple(layer)}
    return EncodeOptions(**{k: v for k, v in values.items() if v is not None}, **chosen)


def model_with_settings(model: str | os.PathLike[str] | None) -> str:
    """The model a call names, else the project's (EMBEDSTORE_MODEL, embedstore.toml), else the default: what
    the commands that take only a model (tune, finetune, adapt, encoder gradients, demo, models pull) use."""
    return options_with_settings({"model": None if model is None else os.fspath(model)}).model
