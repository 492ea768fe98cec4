"""Where keyword options become the library's values: row filters, the store, the encoding options, and the
record of where each setting came from. The CLI's option parsing ends here too, so a command and its API
function read their options one way."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from embedstore.base.errors import ConfigError
from embedstore.base.schema import check_keys
from embedstore.data.tasks import Source, Where, parse_where, where_from_table
from embedstore.encoding.options import ENCODING_FIELDS, EncodeOptions
from embedstore.encoding.settings import default_store, mark_explicit, model_with_settings, \
    options_with_settings, project_settings
from embedstore.store.object_backend import is_url

__all__ = ["PathLike", "WhereLike", "as_where", "encoding_options", "mark_explicit", "model_with_settings",
           "options_with_settings", "project_settings", "rows", "settings_record", "store_path"]

PathLike = str | os.PathLike[str]
#: A row filter as the API takes it: {"fold": [0, 1, 2]} (a value or a list) or CLI-style ["fold=0,1,2"].
WhereLike = Mapping[str, Any] | Sequence[str] | None


def as_where(where: WhereLike) -> Where:
    if where is None:
        return ()
    if isinstance(where, Mapping):
        return where_from_table(dict(where), "where")
    if isinstance(where, str):
        return parse_where([where])
    return parse_where(list(where))


def rows(file: PathLike, text: str = "text", *, pair: str | None = None, label: str | None = None,
         target: str | None = None, where: WhereLike = None) -> Source:
    """The rows of `file` a call names by its keywords, as the one rows-of-a-file value (`data.tasks.Source`)."""
    return Source(file=Path(file), text=text, pair=pair, label=label, target=target, where=as_where(where))


def store_path(store: PathLike | None) -> Path | str:
    """The store to use: the one named (a path, or a URL such as s3://bucket/prefix/store.zarr), else
    `default_store()`."""
    if store is None:
        return default_store()
    return str(store) if is_url(store) else Path(store)


def encoding_options(encoding: EncodeOptions | None = None, *, layer: int | Sequence[int] | None = None,
                     **options: Any) -> EncodeOptions:
    """One `EncodeOptions` from either a built value or keywords (model, layer, pooling, max_length, prefix, dtype,
    quantize, precision); what neither sets comes from the project settings, then the defaults."""
    check_keys("encoding option ", options, ENCODING_FIELDS)  # `layer` is a keyword of its own
    if encoding is not None:
        if options or layer is not None:
            raise ConfigError("give the encoding options either as encoding=EncodeOptions(...) or as keywords, "
                              "not both")
        return encoding
    given = {k: v for k, v in options.items() if v is not None}
    if layer is not None:
        given["layer"] = layer
    return options_with_settings(given)


def settings_record(store: PathLike | None = None, options: Mapping[str, Any] = {},
                    names: Iterable[str] | None = None) -> dict[str, str]:
    """Where this call's settings came from (its own arguments count as flags), as its record carries them."""
    given = {k for k, v in options.items() if v is not None} | ({"store"} if store is not None else set())
    record = project_settings().record(given)
    return record if names is None else {name: record[name] for name in names}
