"""Option lists derived from the options' dataclasses, and the one check of a table's keys.

Why: a list of option names typed again beside its dataclass drifts from it (a field added to the dataclass
that the CLI, a TOML table or a checker does not know is silently unavailable there). The CLI flags, the sweep
config's tables and their checks read names, types, defaults and help from the fields instead: a field's help is
its `metadata["help"]`. A key that is not allowed is one `ConfigError` naming where it was, the nearest allowed
name (difflib's close match, as Python's own "did you mean" does) and every allowed name. A schema library
(pydantic, cattrs) would check types as well, but the dataclasses already validate their values in
`__post_init__` with one-line errors naming the field; what was missing is only the derivation and one key check,
which these few functions give without a new dependency.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from embedstore.base.errors import ConfigError, EmbedstoreError


@dataclasses.dataclass(frozen=True)
class Option:
    """One option as every surface shows it: its name, the type a flag or a TOML value takes (a tuple field: a
    list of its items), its default, its help, its flag (`metadata["flag"]`, else `--name-with-dashes`), and the
    default as a user reads it (`metadata["shown"]`, for a default decided later, e.g. "the model's own")."""

    name: str
    type: Any
    default: Any
    help: str
    flag: str
    shown: Any = None


def options_of(cls: type, exclude: Iterable[str] = ()) -> tuple[Option, ...]:
    """The fields of the dataclass `cls` (in declaration order) but `exclude`; a union type (`str | int`) is
    offered as its first member, which the dataclass then parses."""
    hints = typing.get_type_hints(cls)
    skip = set(exclude)
    out = []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        kind = hints[f.name]
        if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        default = f.default if f.default is not dataclasses.MISSING else None
        if typing.get_origin(kind) is tuple:  # tuple[str, ...]: a repeatable flag, a TOML list
            kind, default = list[typing.get_args(kind)[0]], list(default or ())
        out.append(Option(f.name, kind, default, f.metadata.get("help", ""),
                          f.metadata.get("flag", f"--{f.name.replace('_', '-')}"), f.metadata.get("shown", default)))
    return tuple(out)


def names_of(cls: type, exclude: Iterable[str] = ()) -> tuple[str, ...]:
    return tuple(o.name for o in options_of(cls, exclude))


def did_you_mean(value: str, allowed: Iterable[str]) -> str:
    """A ' (did you mean ...?)' hint for typos, or '' when nothing is close."""
    close = difflib.get_close_matches(value, list(allowed), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_keys(where: str, table: Mapping[str, Any], allowed: Iterable[str], *,
               error: type[EmbedstoreError] = ConfigError) -> None:
    """Unknown keys are errors, never ignored (a misspelt key would leave its default silently in force):
    `{where}{key}: unknown key (did you mean ...?); allowed: ...`. `where` ends with its own separator
    ("e2e.", "pipeline.json: "); `error`: `InputError` for files the package wrote and reads back."""
    allowed = tuple(allowed)
    for key in table:
        if key not in allowed:
            raise error(f"{where}{key}: unknown key{did_you_mean(str(key), allowed)}; allowed: {', '.join(allowed)}")
