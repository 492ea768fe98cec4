"""Files and directories that appear complete or not at all.

A file or directory that exists is taken to be finished (a built model, a trained aligner, a checkpoint, a
fingerprint sidecar), so an interrupted command (exception, Ctrl-C, kill -9, power cut) must never leave a
partial one behind. Every writer in the package follows one policy, for the reason each step gives:

1. write into a hidden `.<name>.partial-*` sibling in the same directory (a rename is atomic only within one
   filesystem, and a hidden name is never mistaken for the artifact);
2. fsync the temporary file(s) (otherwise the rename can reach the disk before the data, and a power cut
   leaves a complete-looking file full of zeros);
3. rename it over the final name (readers see the old version or the new one, whole);
4. fsync the parent directory (the rename itself is a directory entry change, lost in a power cut unless the
   directory is synced).

Files are created with the usual permissions (0666 under the umask), not `mkstemp`'s 0600, so an artifact
written by one user is readable by the others, as if written in place.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from embedstore.base.errors import ConfigError

PARTIAL_MARK = ".partial-"
STALE_PARTIAL_SECONDS = 3600  # a build takes ~10 s; an older partial of unknown owner belongs to a killed process
SCRATCH_MARK = ".encoder-"  # a scratch directory beside an export's output (export.st)
OWNED_TEMP = re.compile(r"\..+\.partial-(\d+)-.*|\.encoder-(\d+)-.*|.+\.(?:h5|hdf5)\.partial-(\d+)"
                        r"|.+\.merging-(\d+)\.(?:zarr|h5|hdf5)(?:\.lock)?", re.IGNORECASE)
"""Temporary names that carry their owner's pid: `.<name>.partial-<pid>-*` (this module), `.encoder-<pid>-*`
(an export's scratch), `<store>.h5.partial-<pid>` (the HDF5 writer), `<store>.merging-<pid>.<suffix>` (a merge)."""


def owned_temp_prefix(mark: str) -> str:
    """The prefix of a temporary name that `remove_dead_temps` can trace to this process."""
    return f"{mark}{os.getpid()}-"


def _dead(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def remove_dead_temps(directory: Path) -> None:
    """Delete the temporary files and folders in `directory` that killed processes left (kill -9 skips every
    cleanup): those whose name carries a pid no process has now, and partials of unknown owner (named before
    names carried one) older than STALE_PARTIAL_SECONDS. Every writer calls this for the directory it writes in,
    so leftovers go with the next run of any command that writes there, not only a re-run of the same output.
    (A pid is this host's: temporaries on a filesystem shared with other hosts are kept unless they are old.)"""
    now = time.time()
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        match = OWNED_TEMP.fullmatch(entry.name)
        if match:
            stale = _dead(int(next(g for g in match.groups() if g)))
        elif entry.name.startswith(".") and PARTIAL_MARK in entry.name:
            with contextlib.suppress(OSError):
                stale = now - entry.stat(follow_symlinks=False).st_mtime > STALE_PARTIAL_SECONDS
        else:
            continue
        if stale:
            with contextlib.suppress(OSError):
                shutil.rmtree(entry.path) if entry.is_dir(follow_symlinks=False) else os.unlink(entry.path)


def _fsync(path: Path, flags: int = 0) -> None:
    fd = os.open(path, os.O_RDONLY | flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make the directory entries of `path` (created, renamed, removed names) durable."""
    _fsync(path, os.O_DIRECTORY)


def _fsync_tree(path: Path) -> None:
    """fsync a file, or every file and directory under a directory, so a rename never outruns the data."""
    if path.is_dir():
        for sub in sorted(path.rglob("*")):
            if sub.is_file() and not sub.is_symlink():
                _fsync(sub)
            elif sub.is_dir():
                fsync_dir(sub)
        fsync_dir(path)
    else:
        _fsync(path)



def _ordinary_modes(tmp: Path) -> None:
    """Give every file of `tmp` the mode an ordinary open() gives (0666 under the umask): some writers make
    their own temporary files (safetensors' save_file leaves 0600 ones), which others could not read."""
    mask = os.umask(0o022)  # reading the umask means setting it; it is put back at once
    os.umask(mask)
    for p in [tmp, *tmp.rglob("*")] if tmp.is_dir() else [tmp]:
        if p.is_file() and not p.is_symlink():
            p.chmod(0o666 & ~mask)


def publish(tmp: Path, out: Path) -> None:
    """Put the finished `tmp` (a file or a directory, written in `out`'s directory) at `out`, replacing what is
    there, under the policy above. A directory cannot be renamed over a non-empty one, so an existing `out`
    directory is moved aside first and removed only once the new one is in place."""
    _ordinary_modes(tmp)
    _fsync_tree(tmp)
    if out.is_dir() and not out.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}{owned_temp_prefix(PARTIAL_MARK)}old-", dir=out.parent))
        os.replace(out, old / out.name)
        os.rename(tmp, out)
        fsync_dir(out.parent)
        shutil.rmtree(old)
    else:
        os.replace(tmp, out)
        fsync_dir(out.parent)


def inside_partial(path: Path) -> bool:
    """Whether `path` lies in a directory that is itself being written under this policy (a hidden
    `.<name>.partial-*` one, from `atomic_dir`): nothing reads inside it, and its publication fsyncs every file in
    it before the rename, so a file written there needs no fsync of its own."""
    return any(parent.name.startswith(".") and PARTIAL_MARK in parent.name for parent in path.parents)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path` for any writer (open(), safetensors, h5py, numpy) to create; it is
    published at `path` when the block succeeds and removed when it fails.

    Inside a directory still being written (`inside_partial`) the file is only renamed into place: fsyncing it and
    its directory there, then again when the directory is published, cost a sweep's cached heads and aligners
    eight fsyncs a save instead of four (~2,900 fsyncs in the demo's 140 cells at ~5 ms each on this disk)."""
    out = Path(path).expanduser().absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_temps(out.parent)
    tmp = out.with_name(f".{out.name}{owned_temp_prefix(PARTIAL_MARK)}{secrets.token_hex(4)}")
    try:
        yield tmp
        if inside_partial(out):
            _ordinary_modes(tmp)
            os.replace(tmp, out)
        else:
            publish(tmp, out)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """UTF-8 text, whatever the locale: every file the package writes is read back as UTF-8."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], obj: Any, *, indent: int = 1) -> None:
    """`obj` as JSON plus a newline; non-ASCII text is kept readable rather than escaped."""
    write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def check_writable(out_dir: str | os.PathLike[str]) -> None:
    """Fail at once, not after the model loaded or the fit finished, when `atomic_dir(out_dir)` could not publish:
    create and remove a partial directory where it would. A real attempt, because permission bits mislead (root
    ignores them; a read-only mount does not)."""
    out = Path(out_dir).expanduser().absolute()
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    try:
        Path(tempfile.mkdtemp(prefix=f".{out.name}{owned_temp_prefix(PARTIAL_MARK)}probe-", dir=parent)).rmdir()
    except OSError as e:
        raise ConfigError(f"{out}: cannot write in {parent} ({e.strerror or e}); expected a writable directory") \
            from None


@contextlib.contextmanager
def atomic_dir(out_dir: str | os.PathLike[str], *, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary directory next to `out_dir` and publish it at `out_dir` only when the block succeeds.

    Why: a model directory that exists is taken to be complete (pull_model returns at once), so an interrupted
    build must never leave one behind. A non-empty existing `out_dir` is an error unless `replace` is true, in
    which case it is swapped out only after the new one is complete. If another process publishes `out_dir`
    first, ours is discarded and theirs kept.
    """
    out = Path(out_dir).expanduser().absolute()
    if out.exists() and not replace and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} already exists and is not empty; remove it or choose another directory")
    made = _missing_ancestors(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_temps(out.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}{owned_temp_prefix(PARTIAL_MARK)}", dir=out.parent))
    try:
        yield tmp
        tmp.chmod(0o755)  # mkdtemp makes it 0700
        if replace and out.exists():
            publish(tmp, out)
            return
        _ordinary_modes(tmp)
        _fsync_tree(tmp)
        try:
            os.rename(tmp, out)
        except OSError:  # a concurrent build won the race and published a complete directory
            if not out.is_dir() or not any(out.iterdir()):
                raise
            shutil.rmtree(tmp)
            return
        fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in made:  # deepest first; one another process has filled meanwhile stays
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def _missing_ancestors(out: Path) -> list[Path]:
    """The folders above `out` that do not exist yet, deepest first: a failed publication removes those it made
    (a failed `models pull org/name` must not leave an empty `models/org/` behind), and no folder it found."""
    missing = []
    parent = out.parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    return missing
