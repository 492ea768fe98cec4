"""Directories that appear complete or not at all.

A directory that exists is taken to be a finished artifact (a built model, a trained aligner, a pipeline), so
an interrupted command (exception, Ctrl-C, kill -9) must never leave one behind: work happens in a hidden
`.<name>.partial-*` sibling that is renamed into place only when complete.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from embedstore.base.errors import ConfigError

PARTIAL_MARK = ".partial-"
STALE_PARTIAL_SECONDS = 3600  # a build takes ~10 s; an older partial dir belongs to a killed process


def _remove_stale_partials(out_dir: Path) -> None:
    """Delete partial build directories next to `out_dir` left by killed processes (a kill -9 skips cleanup)."""
    now = time.time()
    for p in out_dir.parent.glob(f".{out_dir.name}{PARTIAL_MARK}*"):
        with contextlib.suppress(OSError):
            if now - p.stat().st_mtime > STALE_PARTIAL_SECONDS:
                shutil.rmtree(p)


@contextlib.contextmanager
def atomic_dir(out_dir: str | os.PathLike[str], *, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary directory next to `out_dir` and rename it to `out_dir` only when the block succeeds.

    Why: a model directory that exists is taken to be complete (pull_model returns at once), so an interrupted
    build (exception, Ctrl-C) must never leave one behind; the partial directory is hidden, named
    `.<name>.partial-*`, and removed. A non-empty existing `out_dir` is an error unless `replace` is true, in
    which case it is swapped out only after the new one is complete. If another process publishes `out_dir`
    first, ours is discarded and theirs kept.
    """
    out = Path(out_dir).expanduser().absolute()
    if out.exists() and not replace and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} already exists and is not empty; remove it or choose another directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}{PARTIAL_MARK}", dir=out.parent))
    try:
        yield tmp
        tmp.chmod(0o755)  # mkdtemp makes it 0700
        if replace and out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}{PARTIAL_MARK}old-", dir=out.parent))
            os.replace(out, old / out.name)
            os.rename(tmp, out)
            shutil.rmtree(old)
        else:
            try:
                os.rename(tmp, out)
            except OSError:  # a concurrent build won the race and published a complete directory
                if not out.is_dir() or not any(out.iterdir()):
                    raise
                shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
