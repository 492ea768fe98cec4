"""Optional extras: a package that only some code paths need is imported there, through `require`.

The fresh-start commands must run without Ray, s3fs and the like, so nothing imports them at module level;
when a path that needs one runs without it, the user gets one line naming the pip extra that brings it.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from embedstore.base.errors import ConfigError


def require(module: str, extra: str, needed_by: str) -> ModuleType:
    """Import `module`, or raise ConfigError saying which extra to install for `needed_by` (an option or
    command, as the user typed it)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"{needed_by} needs the {module.split('.')[0]} package: "
                          f"pip install 'embedstore[{extra}]'") from None
