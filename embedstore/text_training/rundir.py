"""A training run owns its output directory: marked before anything else is written, refused otherwise.

`tune` and `finetune` write results, weights and checkpoints into `out` and delete their checkpoints when they
finish. Writing into (and later cleaning up) a directory the user filled is how a user's files were once
deleted, so the rule is the one every other command follows, plus a way to recognise our own runs:

- a new or empty `out` becomes a run directory: the marker `.embedstore-run.json` (the run's identity) is
  written first, atomically, so a directory holding anything of ours also holds the marker;
- a directory with a marker of the same identity (options that only say where and how often to run may
  differ, as for a resume) is this run: it resumes or returns its result;
- a marker of another identity, or a non-empty directory without a marker, is refused with one line, before
  anything is written into it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from embedstore.base.atomic import write_json
from embedstore.base.errors import ConfigError
from embedstore.text_training.files import LOCK_FILE, read_json_object
from embedstore.text_training.loop import differences

MARKER = ".embedstore-run.json"


def check_run_dir(out: Path, ident: dict[str, Any]) -> None:
    """Refuse an `out` that is not this run's, without writing anything: call it before taking the run lock,
    which creates a file in `out`."""
    marker = out / MARKER
    if marker.is_file():
        saved = _read_marker(marker)
        differ = differences(saved, ident)
        if differ:
            raise ConfigError(f"out: {out} belongs to another {saved.get('command', 'training')} run (different "
                              f"{', '.join(differ)}); rerun it with the same options, or pass another out directory")
        return
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out: {out} is a file; expected a new or empty directory")
    if out.is_dir() and any(p.name != LOCK_FILE for p in out.iterdir()):
        raise ConfigError(f"out: {out} is not empty and is not an embedstore training run (no {MARKER}); "
                          "pass a new or empty directory")


def claim_run_dir(out: Path, ident: dict[str, Any]) -> None:
    """Under the run lock: check `out` again (another process may have claimed it meanwhile) and mark it."""
    check_run_dir(out, ident)
    if not (out / MARKER).is_file():
        write_json(out / MARKER, ident)


def _read_marker(marker: Path) -> dict[str, Any]:
    return read_json_object(marker, "a run identity")
