"""The one vocabulary of provenance: who wrote a record, when, with which software, from which files.

Every record the package writes (sweep lines, store attributes, saved estimators and pipelines, training runs,
analyses, exports) says these facts under the same names, built here, so a reader asks one question one way.
Records written before the names were settled still read: `read_provenance` maps the old names to these.
The field names and types are listed in `docs/contracts.md` ("Provenance").
"""
from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

from embedstore import __version__
from embedstore.base.files import input_mtime_ns, input_sha256

VERSION = "embedstore_version"
"""The one version field of every record (older records wrote `embedstore`, some both)."""

LEGACY_NAMES = {"embedstore": VERSION, "host": "hostname", "timestamp": "written_at"}
"""Names older records used for the stamp's facts → the names used now."""


def hostname() -> str:
    """The host a record names: the driver's in `stamp`, a worker's in a sweep cell's outcome."""
    return platform.node()


def utc_now() -> str:
    """A record's time: UTC, ISO 8601 to the second (`written_at`, and when a cached measurement was taken)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def stamp(*, libraries: bool = False) -> dict[str, Any]:
    """Which embedstore wrote the record, on which host, when (`utc_now`); with `libraries` the torch and
    transformers versions too (for records whose numbers came out of a forward pass)."""
    record: dict[str, Any] = {VERSION: __version__, "hostname": hostname(), "written_at": utc_now()}
    if libraries:
        import torch
        import transformers

        record.update(torch=torch.__version__, transformers=transformers.__version__)
    return record


def file_identity(path: str | os.PathLike[str], *, rows: int | None = None, **columns: Any) -> dict[str, Any]:
    """An input file (or `datasets` directory) as every record names one: `path` (absolute), `sha256` (64 hex of
    its bytes; for a directory, of its files), `rows` used when known, then which columns were read (and how the
    rows were filtered) under the caller's names."""
    identity: dict[str, Any] = {"path": str(Path(path).absolute()), "sha256": input_digest(path)}
    if rows is not None:
        identity["rows"] = rows
    return {**identity, **columns}


def input_digest(path: str | os.PathLike[str]) -> str:
    """`input_sha256`, cached per modification time: sweeps and training runs name the same files again and again."""
    return _digest(str(Path(path).absolute()), input_mtime_ns(path))


@lru_cache(maxsize=64)
def _digest(path: str, mtime_ns: int) -> str:
    return input_sha256(path)


def read_provenance(provenance: Mapping[str, Any]) -> dict[str, Any]:
    """A record's provenance under today's names: an old name is renamed unless the new one is there too (records
    that carried both keep the new one)."""
    out = {k: v for k, v in provenance.items() if k not in LEGACY_NAMES}
    for old, new in LEGACY_NAMES.items():
        if old in provenance and new not in out and isinstance(provenance[old], str):
            out[new] = provenance[old]
    return out
